//! Tests of `redact`.

use super::*;

#[test]
fn scrubbing_comes_before_the_cut() {
    let secret = "ABCDEFGHIJ";
    let text = format!("{}{secret}", "x".repeat(295));
    let out = scrub(&text, &[secret], 300);
    assert!(!out.contains("ABCDE"), "{out}");
    assert!(out.starts_with(&"x".repeat(295)));
    assert_eq!(scrub("a SECRET b", &["SECRET"], 300), "a <redacted> b");
    assert_eq!(scrub("abc", &[""], 300), "abc");
    assert_eq!(scrub("ééé", &[], 2), "éé…");
}

#[test]
fn scrubbing_leaves_no_occurrence_even_when_replacements_join() {
    // "aab" with secret "ab": one pass leaves "a<redacted>", no new "ab".
    for (text, secret) in [("aabb", "ab"), ("abab", "ab"), ("aaaa", "aa")] {
        assert!(!scrub(text, &[secret], 300).contains(secret), "{text}");
    }
}

#[test]
fn values_inside_the_marker_neither_hang_nor_show() {
    // Each of these made the old replace-until-gone loop grow the text
    // for ever ("e" is in "<redacted>"): the process ran out of memory.
    for value in ["e", "d", "red", "<redacted>", "<", "*", "#"] {
        let out = scrub("the token e was denied <redacted> ***#", &[value], 300);
        assert!(!out.contains(value), "{value:?}: {out:?}");
    }
    // Every marker holds one of the values: the text is withheld, and
    // the empty marker shows nothing.
    let out = scrub("a e * # b", &["e", "*", "#"], 300);
    assert!(
        !out.contains('e') && !out.contains('*') && !out.contains('#'),
        "{out:?}"
    );
}

#[test]
fn overlapping_and_nested_values_leave_no_fragment() {
    // "ababab" holds "abab" at 0 and at 2: both are covered.
    assert_eq!(scrub("xababab", &["abab"], 300), "x<redacted>");
    // One value inside another: the longer range wins.
    assert_eq!(
        scrub("1 SECRETX 2", &["SECRET", "CRETX"], 300),
        "1 <redacted> 2"
    );
    // A value made of the marker and the text beside it: withheld whole.
    let out = scrub("SECRET>z", &["SECRET", "d>z"], 300);
    assert!(!out.contains("d>z") && !out.contains("SECRET"), "{out:?}");
}

#[test]
fn control_characters_cannot_forge_log_lines() {
    assert_eq!(
        scrub("denied\r\nINFO forged line\u{1b}[0m", &["x"], 300),
        "denied  INFO forged line [0m"
    );
}

#[test]
fn the_work_is_linear_when_the_server_chooses_text_and_value() {
    // A 64 KiB answer of "a"s hiding a 21 KiB token of "a"s: restarting
    // a search after each match took 2.5 s in an optimised build.
    // (Linear work takes milliseconds even in a debug build.)
    let text = "a".repeat(64 * 1024);
    let token = "a".repeat(21 * 1024);
    let out = scrub(&text, &[&token, "abab"], 300);
    assert_eq!(out, REDACTED);
    let periodic = "ab".repeat(32 * 1024);
    let out = scrub(&periodic, &[&"ab".repeat(10 * 1024)], 300);
    assert_eq!(out, REDACTED);
}

#[test]
fn overlapping_occurrences_are_all_found() {
    assert_eq!(occurrences("aaaa", &["aa"]), [0..2, 1..3, 2..4]);
    assert_eq!(occurrences("abababa", &["aba"]), [0..3, 2..5, 4..7]);
    assert_eq!(occurrences("xéyé", &["é"]), [1..3, 4..6]);
    assert_eq!(occurrences("abc", &["abcd"]), Vec::<Range<usize>>::new());
}

#[test]
fn work_is_bounded_for_a_large_text_full_of_a_short_value() {
    let text = "e".repeat(64 * 1024);
    let out = scrub(&text, &["e", "ee"], 300);
    assert_eq!(out, "***", "one marker for the one run of values");
}

#[test]
fn urls_lose_credentials_query_and_fragment() {
    let url = Url::parse("https://user:pw@id.example.com:8443/a/b?secret=1#frag").unwrap();
    assert_eq!(origin(&url), "https://id.example.com:8443");
    assert_eq!(without_secrets(&url), "https://id.example.com:8443/a/b");
    let url = Url::parse("https://id.example.com/x").unwrap();
    assert_eq!(origin(&url), "https://id.example.com");
}

#[test]
fn labels_are_escaped_so_no_text_breaks_a_log_line() {
    assert_eq!(escaped("erp-client-1"), "erp-client-1");
    assert!(matches!(escaped("plain"), std::borrow::Cow::Borrowed(_)));
    assert_eq!(escaped("erp\nFORGED"), "erp\\nFORGED");
    assert_eq!(escaped("a\r\nb\u{1b}[31m"), "a\\r\\nb\\u{1b}[31m");
}
