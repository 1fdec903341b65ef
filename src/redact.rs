//! Making text that may carry a secret safe to show: server-supplied text
//! scrubbed of the client secret and tokens, and URLs reduced to the parts
//! that never hold credentials.

use std::ops::Range;

use url::Url;

/// What replaces a secret found in text.
pub(crate) const REDACTED: &str = "<redacted>";

/// Text from outside (the identity service's, a token store's) is cut to
/// this many characters when it is shown.
pub(crate) const MAX_TEXT: usize = 300;

/// Markers tried in turn: the first that contains none of the values to hide
/// is used (a one-character token such as `e` would otherwise make the
/// marker itself a leak). The empty marker always qualifies.
const MARKERS: [&str; 4] = [REDACTED, "***", "#", ""];

/// `text` with every occurrence of each `sensitive` value replaced, control
/// characters (CR, LF, …) made spaces so that no log line can be forged, then
/// cut to `max_chars` characters.
///
/// Occurrences are all found in the original text first (overlapping ones
/// included) and replaced in one pass, so the work is bounded whatever the
/// values are; scrubbing comes before the cut, so a secret that straddles
/// the cut cannot leave its first characters behind. If the result still
/// shows a value (one made of the marker and the text around it, or of a
/// control character made a space), the text is withheld whole.
pub(crate) fn scrub(text: &str, sensitive: &[&str], max_chars: usize) -> String {
    let hidden: Vec<&str> = sensitive
        .iter()
        .copied()
        .filter(|s| !s.is_empty())
        .collect();
    let shows = |out: &str| hidden.iter().any(|s| out.contains(s));
    let marker = MARKERS.into_iter().find(|m| !shows(m)).unwrap_or_default();
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    let mut copied = 0;
    for range in merged(occurrences(text, &hidden)) {
        push_visible(&mut out, &text[copied..range.start]);
        out.push_str(marker);
        copied = range.end;
    }
    push_visible(&mut out, &text[copied..]);
    if let Some((cut, _)) = out.char_indices().nth(max_chars) {
        out.truncate(cut);
        out.push('…');
    }
    if shows(&out) {
        return marker.to_owned();
    }
    out
}

/// Byte ranges of every occurrence of every value in `text`, overlapping
/// ones included, in time linear in the lengths (Knuth-Morris-Pratt: the
/// identity service chooses both the text and, through the token it sends,
/// a value to hide, so restarting a search after each match would let it
/// make the work quadratic). Matching bytes is matching characters: a valid
/// UTF-8 value cannot match from inside a character of valid UTF-8 text.
fn occurrences(text: &str, hidden: &[&str]) -> Vec<Range<usize>> {
    let text = text.as_bytes();
    let mut found = Vec::new();
    for value in hidden {
        let value = value.as_bytes();
        let fallback = prefix_function(value);
        let mut matched = 0;
        for (i, &byte) in text.iter().enumerate() {
            while matched > 0 && value[matched] != byte {
                matched = fallback[matched - 1];
            }
            if value[matched] == byte {
                matched += 1;
            }
            if matched == value.len() {
                found.push(i + 1 - value.len()..i + 1);
                // Go on as if the match had been shorter: overlapping ones too.
                matched = fallback[matched - 1];
            }
        }
    }
    found
}

/// For each prefix of `value`, the length of its longest proper prefix that
/// is also its suffix. `value` is not empty.
fn prefix_function(value: &[u8]) -> Vec<usize> {
    let mut fallback = vec![0; value.len()];
    let mut k = 0;
    for i in 1..value.len() {
        while k > 0 && value[i] != value[k] {
            k = fallback[k - 1];
        }
        if value[i] == value[k] {
            k += 1;
        }
        fallback[i] = k;
    }
    fallback
}

/// `ranges` sorted, with overlapping and touching ones joined.
fn merged(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_by_key(|r| r.start);
    let mut joined: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match joined.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => joined.push(range),
        }
    }
    joined
}

/// Appends `text` with control characters made spaces.
fn push_visible(out: &mut String, text: &str) {
    out.extend(text.chars().map(|c| if c.is_control() { ' ' } else { c }));
}

/// `scheme://host[:port]`: the part of a URL that names where it goes and
/// never carries credentials (no user-info, path, query or fragment).
pub(crate) fn origin(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
        (Some(host), None) => format!("{}://{host}", url.scheme()),
        (None, _) => format!("{}:", url.scheme()),
    }
}

/// The URL without user-info, query and fragment (the path is kept).
pub(crate) fn without_secrets(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

#[cfg(test)]
mod tests {
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
}
