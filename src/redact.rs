//! Making text that may carry a secret safe to show: server-supplied text
//! scrubbed of the client secret and tokens, and URLs reduced to the parts
//! that never hold credentials.

use url::Url;

/// What replaces a secret found in text.
pub(crate) const REDACTED: &str = "<redacted>";

/// `text` with every occurrence of each `sensitive` value replaced, then cut
/// to `max_chars` characters. Scrubbing comes first, so a secret that
/// straddles the cut cannot leave its first characters behind.
pub(crate) fn scrub(text: &str, sensitive: &[&str], max_chars: usize) -> String {
    let mut text = text.to_owned();
    for secret in sensitive.iter().filter(|s| !s.is_empty()) {
        // Replacing can join the text around a secret into a new occurrence
        // only if the replacement contained it; REDACTED contains no secret
        // of ours, but loop until none is left to be sure.
        while text.contains(secret) {
            text = text.replace(secret, REDACTED);
        }
    }
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => {
            text.truncate(cut);
            text.push('…');
            text
        }
        None => text,
    }
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
    fn urls_lose_credentials_query_and_fragment() {
        let url = Url::parse("https://user:pw@id.example.com:8443/a/b?secret=1#frag").unwrap();
        assert_eq!(origin(&url), "https://id.example.com:8443");
        assert_eq!(without_secrets(&url), "https://id.example.com:8443/a/b");
        let url = Url::parse("https://id.example.com/x").unwrap();
        assert_eq!(origin(&url), "https://id.example.com");
    }
}
