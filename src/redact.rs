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

/// `text` with every control character escaped (`\n`, `\u{1b}`, …), for
/// a label that reaches a log: a line break would forge a log line.
pub(crate) fn escaped(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        std::borrow::Cow::Owned(text.chars().flat_map(char::escape_default).collect())
    } else {
        std::borrow::Cow::Borrowed(text)
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
mod tests;
