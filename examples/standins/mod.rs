//! Loopback stand-ins for the MyInvois identity service and API, shared by
//! the examples so that they run with no credentials and no network.
//!
//! The identity service checks the client ID and secret, issues JWT-shaped
//! tokens whose `TaxpayerTIN` claim names the taxpayer logged in for
//! (`onbehalfof`), refuses taxpayers that have not authorised the
//! intermediary (`invalid_grant`), can fail chosen logins, and enforces a
//! login rate limit with 429 + `Retry-After`, as the real one does. The API
//! accepts only tokens the identity service issued, and only for the
//! taxpayer they were issued for.

#![allow(dead_code)] // each example uses part of it

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The ERP system's own TIN (the plain login, without `onbehalfof`).
pub const OWN_TIN: &str = "C20000000000";
pub const CLIENT_ID: &str = "example-erp";
pub const CLIENT_SECRET: &str = "example-secret";

pub type DemoResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Fails the example with `message` unless `ok`.
pub fn ensure(ok: bool, message: impl FnOnce() -> String) -> DemoResult {
    if ok {
        Ok(())
    } else {
        Err(message().into())
    }
}

#[derive(Default)]
struct State {
    /// When each login request arrived, and for whom.
    logins: Vec<(Instant, Option<String>)>,
    /// Token → the TIN it was issued for.
    issued: HashMap<String, String>,
    /// Answers for the next logins, before anything else.
    scripted: VecDeque<ResponseTemplate>,
    /// Taxpayers that have not authorised the intermediary.
    unauthorised: HashSet<String>,
    /// At most this many logins in any window of this length.
    rate_limit: Option<(usize, Duration)>,
    rate_limited: usize,
    api_calls: usize,
}

/// The identity service and the API, on loopback.
#[derive(Clone)]
pub struct StandIns {
    state: Arc<Mutex<State>>,
    pub identity: Arc<MockServer>,
    pub api: Arc<MockServer>,
}

impl StandIns {
    pub async fn start() -> Self {
        let stand_ins = StandIns {
            state: Arc::default(),
            identity: Arc::new(MockServer::start().await),
            api: Arc::new(MockServer::start().await),
        };
        Mock::given(method("POST"))
            .and(path("/connect/token"))
            .respond_with(Login(stand_ins.clone_state()))
            .mount(&stand_ins.identity)
            .await;
        Mock::given(method("GET"))
            .respond_with(ApiCall(stand_ins.clone_state()))
            .mount(&stand_ins.api)
            .await;
        stand_ins
    }

    fn clone_state(&self) -> Arc<Mutex<State>> {
        Arc::clone(&self.state)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Like MyInvois: at most `count` logins in any `period`, then 429.
    pub fn limit_logins(&self, count: usize, period: Duration) {
        self.state().rate_limit = Some((count, period));
    }

    /// The next login is answered with `answer`.
    pub fn answer_next_login(&self, answer: ResponseTemplate) {
        self.state().scripted.push_back(answer);
    }

    /// `tin` has not authorised the intermediary: its logins get `invalid_grant`.
    pub fn unauthorised(&self, tin: &str) {
        self.state().unauthorised.insert(tin.to_owned());
    }

    pub fn identity_url(&self) -> String {
        self.identity.uri()
    }

    pub fn api_url(&self) -> String {
        self.api.uri()
    }

    /// Login requests received.
    pub fn logins(&self) -> usize {
        self.state().logins.len()
    }

    /// Login requests received for `tin` (`None`: the plain login).
    pub fn logins_for(&self, tin: Option<&str>) -> usize {
        self.state()
            .logins
            .iter()
            .filter(|(_, t)| t.as_deref() == tin)
            .count()
    }

    /// When the logins arrived, in order.
    pub fn login_times(&self) -> Vec<Instant> {
        self.state().logins.iter().map(|(at, _)| *at).collect()
    }

    /// Logins answered with 429.
    pub fn rate_limited(&self) -> usize {
        self.state().rate_limited
    }

    /// API calls answered 200.
    pub fn api_calls(&self) -> usize {
        self.state().api_calls
    }
}

fn oauth_error(code: &str) -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(json!({ "error": code }))
}

fn header(request: &Request, name: &str) -> Option<String> {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

struct Login(Arc<Mutex<State>>);

impl Respond for Login {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let on_behalf_of = header(request, "onbehalfof");
        state.logins.push((now, on_behalf_of.clone()));
        if let Some((count, period)) = state.rate_limit {
            let recent = state
                .logins
                .iter()
                .filter(|(at, _)| now.duration_since(*at) < period)
                .count();
            if recent > count {
                state.rate_limited += 1;
                return ResponseTemplate::new(429).insert_header("Retry-After", "1");
            }
        }
        if let Some(answer) = state.scripted.pop_front() {
            return answer;
        }
        let form: HashMap<String, String> = url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect();
        if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
            || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
        {
            return oauth_error("invalid_client");
        }
        let tin = on_behalf_of
            .as_deref()
            .map(|v| v.split(':').next().unwrap_or(v).to_owned())
            .unwrap_or_else(|| OWN_TIN.to_owned());
        if state.unauthorised.contains(&tin) {
            return oauth_error("invalid_grant");
        }
        let number = state.issued.len() + 1;
        let claims = json!({
            "TaxpayerTIN": tin,
            "IsIntermediary": if on_behalf_of.is_some() { "1" } else { "0" },
            "client_id": CLIENT_ID,
            "jti": number,
        });
        let token = format!(
            "{}.{}.stand-in-signature-{number}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
        );
        state.issued.insert(token.clone(), tin);
        ResponseTemplate::new(200).set_body_json(json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": "InvoicingAPI",
        }))
    }
}

struct ApiCall(Arc<Mutex<State>>);

impl Respond for ApiCall {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let bearer = header(request, "authorization");
        let Some(tin) = bearer
            .as_deref()
            .and_then(|b| b.strip_prefix("Bearer "))
            .and_then(|token| state.issued.get(token))
        else {
            return ResponseTemplate::new(401);
        };
        let wanted = header(request, "onbehalfof")
            .map(|v| v.split(':').next().unwrap_or(&v).to_owned())
            .unwrap_or_else(|| OWN_TIN.to_owned());
        if *tin != wanted {
            return ResponseTemplate::new(403);
        }
        state.api_calls += 1;
        ResponseTemplate::new(200).set_body_json(json!({ "result": [] }))
    }
}
