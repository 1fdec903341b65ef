//! The login runs in its own span, which follows from the span of the
//! request that started it and records entry, reason, outcome and duration,
//! and the OpenTelemetry fields reqwest-tracing's spans carry.
//!
//! A test binary of its own: it installs the process-wide subscriber, which
//! must see every callsite from the start.

#[path = "all/support.rs"]
#[allow(dead_code)]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Instrument, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;
use wiremock::ResponseTemplate;

use support::{client, Api, Identity};

/// What the layer saw of one span.
#[derive(Debug, Clone, Default)]
struct Seen {
    name: &'static str,
    /// The `request` field of spans the test names itself.
    request: Option<String>,
    has_parent: bool,
    fields: HashMap<String, String>,
    /// Names (and `request` fields) of the spans this one follows from.
    follows: Vec<(String, Option<String>)>,
}

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<HashMap<u64, Seen>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut seen = Seen {
            name: attrs.metadata().name(),
            has_parent: ctx
                .span_scope(id)
                .is_some_and(|mut scope| scope.nth(1).is_some()),
            ..Seen::default()
        };
        attrs.record(&mut Fields(&mut seen.fields));
        seen.request = seen.fields.get("request").cloned();
        self.0.lock().unwrap().insert(id.into_u64(), seen);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(seen) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        let other = spans
            .get(&follows.into_u64())
            .map(|s| (s.name.to_owned(), s.request.clone()))
            .unwrap_or_default();
        if let Some(seen) = spans.get_mut(&id.into_u64()) {
            seen.follows.push(other);
        }
    }
}

impl Spans {
    /// Login spans seen so far, closed or not.
    fn logins(&self) -> Vec<Seen> {
        self.0
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.name == "myinvois_auth.login")
            .cloned()
            .collect()
    }
}

fn spans() -> Spans {
    static SPANS: OnceLock<Spans> = OnceLock::new();
    SPANS
        .get_or_init(|| {
            let spans = Spans::default();
            let subscriber = tracing_subscriber::registry().with(spans.clone());
            tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
            spans
        })
        .clone()
}

#[tokio::test]
async fn the_login_span_follows_from_the_request_span_and_records_its_outcome() {
    let spans = spans();
    let identity = Identity::empty().await;
    // The first login fails (503), the second succeeds.
    identity
        .server
        .register(
            wiremock::Mock::given(wiremock::matchers::method("POST"))
                .respond_with(ResponseTemplate::new(503))
                .up_to_n_times(1)
                .with_priority(1),
        )
        .await;
    identity.issue(3600, std::time::Duration::ZERO).await;
    let (api, _) = Api::start().await;
    let cache = identity
        .builder()
        .transient_error_backoff(std::time::Duration::ZERO, std::time::Duration::ZERO)
        .build()
        .unwrap();
    let http = client(&cache, &api);
    let url = format!("{}/api/v1.0/documenttypes", api.uri());

    let failed = http
        .get(&url)
        .send()
        .instrument(tracing::info_span!("api call", request = "first"))
        .await;
    assert!(failed.is_err(), "the 503 fails the first call");
    http.get(&url)
        .send()
        .instrument(tracing::info_span!("api call", request = "second"))
        .await
        .expect("the second login succeeds");

    let mut logins = spans.logins();
    logins.sort_by_key(|s| s.fields.get("outcome").cloned());
    assert_eq!(logins.len(), 2, "one span per login: {logins:#?}");
    let (error, ok) = (&logins[0], &logins[1]);
    for (login, request, outcome) in [(error, "first", "error"), (ok, "second", "ok")] {
        assert_eq!(
            login.follows,
            vec![("api call".to_owned(), Some(request.to_owned()))],
            "follows from the call that started it"
        );
        assert!(
            !login.has_parent,
            "its own root: it serves every waiting caller"
        );
        assert_eq!(login.fields["reason"], "no valid token");
        assert!(
            login.fields["entry"].contains("client_id="),
            "{:?}",
            login.fields
        );
        assert_eq!(login.fields["outcome"], outcome);
        assert!(login.fields["duration_ms"].parse::<u64>().is_ok());
    }
    // The fields reqwest-tracing puts on its client spans, so that one
    // OpenTelemetry pipeline reads both.
    for login in [error, ok] {
        assert_eq!(login.fields["otel.kind"], "client", "{:?}", login.fields);
    }
    assert_eq!(error.fields["otel.status_code"], "ERROR");
    assert_eq!(error.fields["error.type"], "identity_service");
    assert!(
        error.fields["error.message"].contains("identity service answered HTTP 503"),
        "{:?}",
        error.fields
    );
    for field in ["otel.status_code", "error.type", "error.message"] {
        assert!(!ok.fields.contains_key(field), "{field}: {:?}", ok.fields);
    }
}
