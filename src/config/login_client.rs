//! The login's HTTP client: the caller's `reqwest::Client` (built with
//! redirects off by the builder's checks) behind the middlewares the caller
//! gave [`login_middleware`](crate::TokenCacheBuilder::login_middleware)
//! (a tracing layer, say), and, inside them, a guard that holds the rules
//! of a login whatever those layers do: one request per login (each login
//! takes a slot from the client ID's budget; a layer that retries would
//! spend the budget unseen), to the token URL only (the client secret goes
//! to the identity service and nowhere else).

use std::sync::{Arc, OnceLock};

use http::Extensions;
use parking_lot::Mutex;
use reqwest::{Request, Response};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use url::Url;

use crate::error::Error;

/// The login client of a cache: built by `build()`, or, with
/// `lazy_login_client()`, by the first login that needs it: building it
/// loads the system's root certificates, milliseconds that a process
/// serving only stored tokens (`myinvois-auth token` with a token in the
/// host's store) never needs to spend.
pub(crate) struct LoginClient {
    built: OnceLock<Result<ClientWithMiddleware, Error>>,
    pending: Mutex<Option<Pending>>,
}

/// What the default client is built from.
struct Pending {
    builder: reqwest::ClientBuilder,
    middlewares: Vec<Arc<dyn Middleware>>,
    token_url: Url,
}

impl LoginClient {
    /// Built now, from the caller's `builder`.
    pub(crate) fn now(
        builder: reqwest::ClientBuilder,
        middlewares: Vec<Arc<dyn Middleware>>,
        token_url: &Url,
    ) -> Result<Self, Error> {
        let client = build(builder, middlewares, token_url)?;
        Ok(LoginClient {
            built: OnceLock::from(Ok(client)),
            pending: Mutex::new(None),
        })
    }

    /// Built by the first login that needs it.
    pub(crate) fn later(
        builder: reqwest::ClientBuilder,
        middlewares: Vec<Arc<dyn Middleware>>,
        token_url: &Url,
    ) -> Self {
        LoginClient {
            built: OnceLock::new(),
            pending: Mutex::new(Some(Pending {
                builder,
                middlewares,
                token_url: token_url.clone(),
            })),
        }
    }

    /// The client, built now if it was not yet (once: a failure is
    /// answered again, it would not build next time either).
    pub(crate) fn get(&self) -> Result<&ClientWithMiddleware, Error> {
        self.built
            .get_or_init(|| match self.pending.lock().take() {
                Some(p) => build(p.builder, p.middlewares, &p.token_url),
                None => Err(Error::InvalidConfig(
                    "the login's HTTP client was not built".into(),
                )),
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// The login's rules on the caller's `builder`, built, behind `middlewares`.
fn build(
    builder: reqwest::ClientBuilder,
    middlewares: Vec<Arc<dyn Middleware>>,
    token_url: &Url,
) -> Result<ClientWithMiddleware, Error> {
    let client = builder
        // A login never follows a redirect, and never leaves https.
        .redirect(reqwest::redirect::Policy::none())
        .https_only(token_url.scheme() == "https")
        // Verbose connections log what they carry: the form with the
        // secret, the answer with the token.
        .connection_verbose(false)
        .build()
        .map_err(|e| Error::InvalidConfig(format!("cannot build the HTTP client: {e}")))?;
    Ok(login_client(client, middlewares, token_url))
}

/// The login client: `client` behind `middlewares` (outermost first), with
/// the guard inside them when there are any.
fn login_client(
    client: reqwest::Client,
    middlewares: Vec<Arc<dyn Middleware>>,
    token_url: &Url,
) -> ClientWithMiddleware {
    if middlewares.is_empty() {
        return ClientWithMiddleware::from(client);
    }
    middlewares
        .into_iter()
        .fold(ClientBuilder::new(client), ClientBuilder::with_arc)
        .with(Guard {
            token_url: token_url.clone(),
        })
        .build()
}

/// Lets a login's request out once, to the token URL only.
struct Guard {
    token_url: Url,
}

/// Left in a login's extensions when its request went out.
#[derive(Clone)]
struct Sent;

/// What the guard refused.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(
        "a login middleware sent the login a second time; a login is never retried by a \
         middleware (each takes a slot of the login budget): the cache retries when it may"
    )]
    SentTwice,
    #[error(
        "a login middleware sent the login to another URL than the identity service's; \
         the client secret goes nowhere else"
    )]
    Elsewhere,
}

#[async_trait::async_trait]
impl Middleware for Guard {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        if request.url() != &self.token_url {
            return Err(reqwest_middleware::Error::middleware(Refused::Elsewhere));
        }
        if extensions.insert(Sent).is_some() {
            return Err(reqwest_middleware::Error::middleware(Refused::SentTwice));
        }
        next.run(request, extensions).await
    }
}
