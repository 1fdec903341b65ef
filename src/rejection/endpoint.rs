//! Naming the endpoint a 401 came from: a template that IDs cannot
//! multiply (MyInvois's documented path words kept, every other segment
//! made alike) and the exact path (for 401s that depend on the ID).

/// The words of MyInvois's documented API paths (`/api/v1.0/documents/{uuid}/raw`,
/// `/documentsubmissions/{uid}`, `/taxpayer/validate/{tin}`, …). Any
/// other segment is taken for an ID: IDs are chosen by users and by the
/// API, so a path must not be able to make one endpoint many.
const PATH_WORDS: &[&str] = &[
    "api",
    "connect",
    "details",
    "documents",
    "documentsubmissions",
    "documenttypes",
    "notifications",
    "qrcodeinfo",
    "raw",
    "recent",
    "search",
    "state",
    "taxpayer",
    "taxpayers",
    "tin",
    "token",
    "validate",
    "versions",
];

/// Segments after this many are made one: a path's depth cannot make one
/// endpoint many either.
const MAX_SEGMENTS: usize = 8;

/// Exact paths longer than this are cut (they only ever name a path that
/// rejected tokens; two long paths alike at the start count as one).
const MAX_PATH: usize = 256;

/// The endpoint a request went to, as the 401 records name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// Method and path with every segment that is not a documented path
    /// word made alike (`GET /api/v1.0/documents/*/raw`): what the
    /// records of rejections that a new token does not cure are kept by,
    /// and what logs show.
    pub(crate) template: String,
    /// Method and the exact path (without the query).
    pub(crate) path: String,
}

/// The endpoint of a request with `method` to `path` (its query left out).
pub(crate) fn endpoint(method: &http::Method, path: &str) -> Endpoint {
    let method = match *method {
        http::Method::GET
        | http::Method::POST
        | http::Method::PUT
        | http::Method::DELETE
        | http::Method::PATCH
        | http::Method::HEAD
        | http::Method::OPTIONS => method.as_str(),
        // Extension methods are chosen by the caller: one name for all.
        _ => "OTHER",
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut template = String::with_capacity(method.len() + path.len() + 1);
    template.push_str(method);
    template.push(' ');
    for (i, segment) in path.split('/').enumerate() {
        if i > MAX_SEGMENTS {
            template.push_str("/…");
            break;
        }
        if i > 0 {
            template.push('/');
        }
        if segment.is_empty() || is_path_word(segment) {
            template.push_str(&segment.to_ascii_lowercase());
        } else {
            template.push('*');
        }
    }
    let mut exact = format!("{method} ");
    let cut = (0..=MAX_PATH.min(path.len()))
        .rev()
        .find(|&i| path.is_char_boundary(i))
        .unwrap_or(0);
    exact.push_str(&path[..cut]);
    Endpoint {
        template,
        path: exact,
    }
}

/// A documented path word, or an API version (`v1.0`, `v2`).
fn is_path_word(segment: &str) -> bool {
    let version = segment.strip_prefix(['v', 'V']).is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'.') && rest.len() <= 8
    });
    version
        || PATH_WORDS
            .iter()
            .any(|word| word.eq_ignore_ascii_case(segment))
}
