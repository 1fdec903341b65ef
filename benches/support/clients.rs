//! The clients the request benchmarks compare: one `reqwest::Client` (one
//! connection pool) seen through `AuthMiddleware`, through a pass-through
//! middleware, through `reqwest_middleware` with no middleware, and bare.

use http::header::AUTHORIZATION;
use http::{Extensions, HeaderValue};
use myinvois_auth::{AuthMiddleware, TokenCache};
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next};

use super::Server;

/// How a request is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `AuthMiddleware` with a cached token.
    Auth,
    /// `reqwest_middleware` without middleware, static header.
    Bare,
    /// Plain `reqwest`, static header.
    Plain,
    /// `reqwest_middleware` with a do-nothing middleware, static header.
    PassThrough,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::Auth,
        Variant::Bare,
        Variant::Plain,
        Variant::PassThrough,
    ];
}

/// A middleware that only calls the next one: the floor for any middleware.
pub struct PassThrough;

#[async_trait::async_trait]
impl Middleware for PassThrough {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        next.run(request, extensions).await
    }
}

/// One client per [`Variant`], all sharing one connection pool, sending
/// `GET`s to one URL of an API stand-in.
pub struct Clients {
    url: String,
    header: HeaderValue,
    plain: reqwest::Client,
    bare: ClientWithMiddleware,
    auth: ClientWithMiddleware,
    pass_through: ClientWithMiddleware,
}

impl Clients {
    /// Clients for `api`, the middleware taking its tokens from `cache`.
    /// The static header is made once here, from the token the middleware
    /// sends (so this logs in, unless `cache` holds a token already).
    pub async fn new(api: &Server, cache: TokenCache) -> Clients {
        let header = cache
            .token()
            .await
            .expect("first login")
            .authorization_header();
        let plain = reqwest::Client::new();
        let bare = reqwest_middleware::ClientBuilder::new(plain.clone()).build();
        let auth_middleware = AuthMiddleware::new(cache)
            .api_url(api.url())
            .expect("api url");
        let auth = reqwest_middleware::ClientBuilder::new(plain.clone())
            .with(auth_middleware)
            .build();
        let pass_through = reqwest_middleware::ClientBuilder::new(plain.clone())
            .with(PassThrough)
            .build();
        let clients = Clients {
            url: format!("{}/api/v1.0/documenttypes", api.url()),
            header,
            plain,
            bare,
            auth,
            pass_through,
        };
        // Open the connection, and check that every variant sends the token.
        for variant in Variant::ALL {
            let before = api.authorized();
            clients.send(variant).await;
            assert_eq!(api.authorized(), before + 1, "{variant:?} sent no token");
        }
        clients
    }

    /// Sends one request with `variant` and reads the whole answer (so the
    /// connection goes back to the pool).
    pub async fn send(&self, variant: Variant) {
        let response = match variant {
            Variant::Auth => self.auth.get(&self.url).send().await,
            Variant::Bare => {
                self.bare
                    .get(&self.url)
                    .header(AUTHORIZATION, self.header.clone())
                    .send()
                    .await
            }
            Variant::PassThrough => {
                self.pass_through
                    .get(&self.url)
                    .header(AUTHORIZATION, self.header.clone())
                    .send()
                    .await
            }
            Variant::Plain => self
                .plain
                .get(&self.url)
                .header(AUTHORIZATION, self.header.clone())
                .send()
                .await
                .map_err(reqwest_middleware::Error::from),
        }
        .expect("request");
        assert!(response.status().is_success());
        std::hint::black_box(response.bytes().await.expect("body"));
    }
}
