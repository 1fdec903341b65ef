//! Tests of `rejection`: endpoint names and the verdict on each 401.

use std::time::Duration;

use tokio::time::Instant;

use super::records::MAX_ENDPOINTS;
use super::*;

const MEMORY: Duration = Duration::from_secs(600);
const DECIDE: Duration = Duration::from_secs(100);
const S: fn(u64) -> Duration = Duration::from_secs;

fn get(path: &str) -> Endpoint {
    endpoint(&http::Method::GET, path)
}

/// The verdict, with `Await` told apart only by its name.
#[derive(Debug, PartialEq, Eq)]
enum Says {
    Renew,
    NotTheToken,
    Await,
}

impl Rejections {
    fn says(&self, path: &str, token: u64, now: Instant, cache: &Learned) -> Says {
        match self.rejected(&get(path), token, now, MEMORY, DECIDE, cache) {
            Verdict::Renew => Says::Renew,
            Verdict::NotTheToken => Says::NotTheToken,
            Verdict::Await(..) => Says::Await,
        }
    }
}

#[test]
fn endpoints_keep_the_documented_path_words_and_make_every_other_segment_alike() {
    assert_eq!(
        get("/api/v1.0/documents/F9D425P6DS7D8IU/raw").template,
        "GET /api/v1.0/documents/*/raw"
    );
    for id in [
        "ABCDEF",
        "GHIJKL",
        "0123",
        "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
    ] {
        assert_eq!(
            get(&format!("/api/v1.0/documents/{id}/raw")).template,
            "GET /api/v1.0/documents/*/raw",
            "{id}"
        );
    }
    assert_eq!(
        get("/api/v1.0/taxpayer/validate/C25845632020?idType=BRN&idValue=1").template,
        "GET /api/v1.0/taxpayer/validate/*"
    );
    assert_eq!(
        get("/api/v1.0/documentsubmissions/HJSD135P2S7D8IU").template,
        "GET /api/v1.0/documentsubmissions/*"
    );
    assert_ne!(
        get("/api/v1.0/documenttypes").template,
        endpoint(&http::Method::POST, "/api/v1.0/documenttypes").template
    );
    // Unknown words are IDs too; depth and extension methods cannot make
    // one endpoint many either.
    assert_eq!(get("/x/y").template, get("/p/q").template);
    assert_eq!(
        get(&"/a".repeat(50)).template,
        get(&"/b".repeat(60)).template
    );
    let custom = |m: &str| endpoint(&http::Method::from_bytes(m.as_bytes()).unwrap(), "/x");
    assert_eq!(custom("FOO").template, custom("BAR").template);
    assert_eq!(get("/").template, "GET /");
    // The exact path keeps the ID, not the query.
    assert_eq!(
        get("/api/v1.0/documents/AB/raw?x=1").path,
        "GET /api/v1.0/documents/AB/raw"
    );
    assert!(get(&format!("/{}", "é".repeat(500))).path.len() <= 4 + 256);
}

#[test]
fn only_answers_past_the_token_check_clear_what_was_learned() {
    use http::StatusCode;
    for status in [200, 201, 204, 302, 400, 403, 404, 409, 422] {
        assert!(
            shows_token_got_through(StatusCode::from_u16(status).unwrap()),
            "{status}"
        );
    }
    for status in [401, 407, 408, 429, 500, 502, 503, 504] {
        assert!(
            !shows_token_got_through(StatusCode::from_u16(status).unwrap()),
            "{status}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_new_token_rejected_where_a_renewal_was_deciding_teaches_it_is_not_the_token() {
    let (r, cache, now) = (Rejections::default(), Learned::default(), Instant::now());
    assert_eq!(r.says("/x", 1, now, &cache), Says::Renew);
    // The same token again (a burst with one revoked token): still about it.
    assert_eq!(r.says("/x", 1, now, &cache), Says::Renew);
    // The new token rejected too: learned.
    assert_eq!(r.says("/x", 2, now, &cache), Says::NotTheToken);
    assert_eq!(r.says("/x", 3, now, &cache), Says::NotTheToken);
    // Other endpoints are not affected.
    assert_eq!(
        r.says("/api/v1.0/documenttypes", 3, now, &cache),
        Says::Renew
    );
}

#[tokio::test(start_paused = true)]
async fn other_entries_wait_for_the_verdict_of_a_renewal_deciding() {
    let (a, b, cache, now) = (
        Rejections::default(),
        Rejections::default(),
        Learned::default(),
        Instant::now(),
    );
    assert_eq!(a.says("/x", 1, now, &cache), Says::Renew);
    assert_eq!(b.says("/x", 7, now, &cache), Says::Await);
    // a's new token is rejected too: b's 401 is not about its token.
    assert_eq!(a.says("/x", 2, now, &cache), Says::NotTheToken);
    assert_eq!(b.says("/x", 7, now, &cache), Says::NotTheToken);
    // Had a's new token got through, b's would be about its token.
    let (c, d) = (Rejections::default(), Rejections::default());
    assert_eq!(
        c.says("/api/v1.0/documenttypes", 1, now, &cache),
        Says::Renew
    );
    assert_eq!(
        d.says("/api/v1.0/documenttypes", 5, now, &cache),
        Says::Await
    );
    c.accepted(&get("/api/v1.0/documenttypes"), now, &cache);
    assert_eq!(
        d.says("/api/v1.0/documenttypes", 5, now, &cache),
        Says::Renew
    );
    // A renewal that never reports is given up on.
    let (e, f) = (Rejections::default(), Rejections::default());
    assert_eq!(
        e.says("/api/v1.0/notifications/taxpayer", 1, now, &cache),
        Says::Renew
    );
    let later = now + DECIDE;
    assert_eq!(
        f.says("/api/v1.0/notifications/taxpayer", 9, later, &cache),
        Says::Renew
    );
}

#[tokio::test(start_paused = true)]
async fn what_one_entry_learned_holds_for_every_entry_for_the_memory() {
    let (x, a, cache, t0) = (
        Rejections::default(),
        Rejections::default(),
        Learned::default(),
        Instant::now(),
    );
    assert_eq!(x.says("/e", 1, t0, &cache), Says::Renew);
    assert_eq!(x.says("/e", 2, t0, &cache), Says::NotTheToken);
    // x goes on being rejected at its path: it stays learned for x. a
    // follows the cache until the memory ends since it was learned.
    let mut renewed = None;
    for minute in 1..=30 {
        let now = t0 + S(60 * minute);
        assert_eq!(x.says("/e", 2, now, &cache), Says::NotTheToken, "{minute}");
        if a.says("/e", 5, now, &cache) == Says::Renew {
            renewed = Some(minute);
            break;
        }
    }
    assert_eq!(renewed, Some(10));
}

#[tokio::test(start_paused = true)]
async fn a_path_that_rejected_a_new_token_stays_learned_while_its_401s_go_on() {
    let (r, cache, t0) = (Rejections::default(), Learned::default(), Instant::now());
    assert_eq!(r.says("/x", 1, t0, &cache), Says::Renew);
    assert_eq!(r.says("/x", 2, t0, &cache), Says::NotTheToken);
    // A 401 every 5 minutes for an hour: learned all along.
    for i in 1..=12 {
        assert_eq!(
            r.says("/x", 2, t0 + S(300 * i), &cache),
            Says::NotTheToken,
            "{i}"
        );
    }
    // Quiet for the whole memory: a 401 is about the token again.
    assert_eq!(r.says("/x", 2, t0 + S(3600) + MEMORY, &cache), Says::Renew);
}

#[tokio::test(start_paused = true)]
async fn a_token_through_at_the_path_that_taught_it_ends_the_record() {
    let (r, cache, now) = (Rejections::default(), Learned::default(), Instant::now());
    assert_eq!(r.says("/x", 1, now, &cache), Says::Renew);
    assert_eq!(r.says("/x", 2, now, &cache), Says::NotTheToken);
    r.accepted(&get("/x"), now, &cache);
    assert!(!cache.any() && !r.any(), "records left");
    assert_eq!(r.says("/x", 2, now, &cache), Says::Renew);
}

#[tokio::test(start_paused = true)]
async fn successes_elsewhere_at_the_endpoint_allow_one_renewal_per_memory() {
    let (r, cache, now) = (Rejections::default(), Learned::default(), Instant::now());
    let docs = |id: &str| format!("/api/v1.0/documents/{id}/details");
    assert_eq!(r.says(&docs("BAD1"), 1, now, &cache), Says::Renew);
    assert_eq!(r.says(&docs("BAD1"), 2, now, &cache), Says::NotTheToken);
    // Other IDs: not about the token, while no token got through there.
    assert_eq!(r.says(&docs("BAD2"), 2, now, &cache), Says::NotTheToken);
    r.accepted(&get(&docs("OK1")), now, &cache);
    // The path that taught it still rejects; another may be a revocation:
    // one renewal tells.
    assert_eq!(r.says(&docs("BAD1"), 2, now, &cache), Says::NotTheToken);
    assert_eq!(r.says(&docs("OK1"), 2, now, &cache), Says::Renew);
    assert_eq!(r.says(&docs("OK1"), 3, now, &cache), Says::NotTheToken);
    r.accepted(&get(&docs("OK2")), now, &cache);
    // Spent for this memory.
    assert_eq!(r.says(&docs("BAD3"), 3, now, &cache), Says::NotTheToken);
    assert_eq!(r.says(&docs("BAD3"), 3, now + MEMORY, &cache), Says::Renew);
}

#[tokio::test(start_paused = true)]
async fn records_that_ended_are_dropped_so_answers_cost_nothing_again() {
    let (r, cache, now) = (Rejections::default(), Learned::default(), Instant::now());
    assert_eq!(r.says("/x", 1, now, &cache), Says::Renew);
    assert_eq!(r.says("/x", 2, now, &cache), Says::NotTheToken);
    assert!(r.any() && cache.any());
    let later = now + MEMORY;
    r.accepted(&get("/y"), later, &cache);
    assert!(!r.any(), "ended records kept");
}

#[tokio::test(start_paused = true)]
async fn records_are_bounded() {
    let (r, cache, now) = (Rejections::default(), Learned::default(), Instant::now());
    for i in 0..200 {
        let path = format!("/a{i}");
        r.says(&path, 1, now, &cache);
        r.says(&path, 2, now, &cache);
    }
    assert!(r.paths_len() <= MAX_ENDPOINTS);
}
