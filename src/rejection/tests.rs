//! Tests of `rejection`.

use super::*;

const MEMORY: Duration = Duration::from_secs(600);
const S: fn(u64) -> Duration = Duration::from_secs;

impl Rejections {
    /// With a cache that has learned nothing else.
    fn alone(&self, endpoint: &str, token: u64, now: Instant) -> Verdict {
        self.rejected(endpoint, token, now, MEMORY, &Learned::default())
    }
}

#[test]
fn endpoints_are_method_and_path_with_ids_made_alike() {
    let get = http::Method::GET;
    assert_eq!(
        endpoint(&get, "/api/v1.0/documents/F9D425P6DS7D8IU/raw"),
        "GET /api/*/documents/*/raw"
    );
    assert_eq!(
        endpoint(&get, "/api/v1.0/documents/ABCDE1/raw"),
        endpoint(&get, "/api/v1.0/documents/XYZ9/raw")
    );
    assert_ne!(
        endpoint(&get, "/api/v1.0/documenttypes"),
        endpoint(&http::Method::POST, "/api/v1.0/documenttypes")
    );
    assert_eq!(endpoint(&get, "/"), "GET /");
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
async fn a_second_token_rejected_at_one_endpoint_teaches_it_is_not_the_token() {
    let r = Rejections::default();
    let now = Instant::now();
    assert_eq!(r.alone("GET /x", 1, now), Verdict::Renew);
    // The same token again (a burst with one revoked token): still about it.
    assert_eq!(r.alone("GET /x", 1, now), Verdict::Renew);
    // A new token rejected too: learned.
    assert_eq!(r.alone("GET /x", 2, now), Verdict::NotTheToken);
    assert_eq!(r.alone("GET /x", 3, now), Verdict::NotTheToken);
    // Other endpoints are not affected.
    assert_eq!(r.alone("GET /y", 3, now), Verdict::Renew);
    // For a while only.
    tokio::time::advance(MEMORY).await;
    assert_eq!(r.alone("GET /x", 3, Instant::now()), Verdict::Renew);
}

#[tokio::test(start_paused = true)]
async fn an_accepted_call_clears_the_record_so_a_revocation_is_about_the_token_again() {
    let r = Rejections::default();
    let now = Instant::now();
    r.accepted("GET /x", now); // nothing recorded: nothing happens
    assert_eq!(r.alone("GET /x", 1, now), Verdict::Renew);
    r.accepted("GET /x", now);
    assert!(!r.any());
    // Token 2 revoked later: about the token, not learned.
    assert_eq!(r.alone("GET /x", 2, now), Verdict::Renew);
}

#[tokio::test(start_paused = true)]
async fn records_that_ended_are_dropped_so_answers_cost_nothing_again() {
    let (r, cache) = (Rejections::default(), Learned::default());
    let t0 = Instant::now();
    r.rejected("GET /x", 1, t0, MEMORY, &cache);
    r.rejected("GET /x", 2, t0, MEMORY, &cache);
    assert!(r.any() && cache.any());
    // Another endpoint answers, after the records ended: they go.
    let later = t0 + MEMORY;
    r.accepted("GET /other", later);
    cache.accepted("GET /other", later);
    assert!(!r.any() && !cache.any());
}

#[tokio::test(start_paused = true)]
async fn records_are_bounded() {
    let r = Rejections::default();
    let now = Instant::now();
    for i in 0..200 {
        r.alone(&format!("GET /e{i}"), 1, now);
    }
    assert!(r.0.snapshot.load().len() <= MAX_ENDPOINTS);
    let cache = Learned::default();
    for i in 0..200 {
        cache.learn(&format!("GET /e{i}"), now, now + MEMORY);
    }
    assert!(cache.0.snapshot.load().len() <= MAX_ENDPOINTS);
}

#[tokio::test(start_paused = true)]
async fn what_was_learned_lasts_while_the_rejections_go_on() {
    let r = Rejections::default();
    let cache = Learned::default();
    let t0 = Instant::now();
    assert_eq!(r.rejected("GET /x", 1, t0, MEMORY, &cache), Verdict::Renew);
    assert_eq!(
        r.rejected("GET /x", 2, t0, MEMORY, &cache),
        Verdict::NotTheToken
    );
    // A 401 every 5 minutes for an hour: learned all along.
    for i in 1..=12 {
        let now = t0 + S(300 * i);
        assert_eq!(
            r.rejected("GET /x", 2, now, MEMORY, &cache),
            Verdict::NotTheToken,
            "{i}"
        );
    }
    // Quiet for the whole memory: a 401 is about the token again.
    let later = t0 + S(3600) + MEMORY;
    assert_eq!(
        r.rejected("GET /x", 2, later, MEMORY, &cache),
        Verdict::Renew
    );
}

#[tokio::test(start_paused = true)]
async fn what_one_entry_learned_every_entry_of_the_cache_takes_until_a_token_is_accepted() {
    let (a, b, c) = (
        Rejections::default(),
        Rejections::default(),
        Rejections::default(),
    );
    let cache = Learned::default();
    let now = Instant::now();
    assert_eq!(a.rejected("GET /x", 1, now, MEMORY, &cache), Verdict::Renew);
    assert_eq!(b.rejected("GET /x", 7, now, MEMORY, &cache), Verdict::Renew);
    assert_eq!(
        a.rejected("GET /x", 2, now, MEMORY, &cache),
        Verdict::NotTheToken
    );
    // b's next token, and c's first: no login spent.
    assert_eq!(
        b.rejected("GET /x", 8, now, MEMORY, &cache),
        Verdict::NotTheToken
    );
    assert_eq!(
        c.rejected("GET /x", 9, now, MEMORY, &cache),
        Verdict::NotTheToken
    );
    // Other endpoints are not affected.
    assert_eq!(c.rejected("GET /y", 9, now, MEMORY, &cache), Verdict::Renew);
    // The endpoint accepts a token: a 401 there is about the token again
    // for entries that learned nothing themselves.
    cache.accepted("GET /x", now);
    assert_eq!(c.rejected("GET /x", 9, now, MEMORY, &cache), Verdict::Renew);
    assert_eq!(
        a.rejected("GET /x", 2, now, MEMORY, &cache),
        Verdict::NotTheToken
    );
}

#[tokio::test(start_paused = true)]
async fn following_the_cache_never_keeps_a_token_past_a_whole_memory() {
    // x learned that /e rejects every token of x; a's token is really
    // revoked, and a only calls /e. x goes on being rejected there.
    let (x, a, cache) = (
        Rejections::default(),
        Rejections::default(),
        Learned::default(),
    );
    let t0 = Instant::now();
    assert_eq!(x.rejected("GET /e", 1, t0, MEMORY, &cache), Verdict::Renew);
    assert_eq!(
        x.rejected("GET /e", 2, t0, MEMORY, &cache),
        Verdict::NotTheToken
    );
    let mut renewed = None;
    for minute in 1..=30 {
        let now = t0 + S(60 * minute);
        x.rejected("GET /e", 2, now, MEMORY, &cache);
        if a.rejected("GET /e", 5, now, MEMORY, &cache) == Verdict::Renew {
            renewed = Some(minute);
            break;
        }
    }
    // Its first 401 was at minute 1; renewed once it had been rejected
    // for a whole memory (x's 401s do not keep the cache's record alive).
    assert!(
        renewed.is_some_and(|m| m <= 11),
        "renewed at minute {renewed:?}"
    );
}
