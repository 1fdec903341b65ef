//! The login's HTTP client: the caller's `reqwest::Client` (built with
//! redirects off by the builder's checks) behind the middlewares the caller
//! gave [`login_middleware`](crate::TokenCacheBuilder::login_middleware)
//! (a tracing layer, say), and, inside them, a guard that holds the rules
//! of a login whatever those layers do: one request per login (each login
//! takes a slot from the client ID's budget; a layer that retries would
//! spend the budget unseen), to the token URL only (the client secret goes
//! to the identity service and nowhere else).

use std::sync::Arc;

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use url::Url;

/// The login client: `client` behind `middlewares` (outermost first), with
/// the guard inside them when there are any.
pub(crate) fn login_client(
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
