//! [`Settings`]: the checked configuration a cache runs with, made by
//! [`TokenCacheBuilder`](super::TokenCacheBuilder)'s checks.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::credentials::ClientCredentials;
use super::environment::Environment;
use super::login_client::LoginClient;
use crate::budget::RateLimit;
use crate::failure::FailurePolicy;
use crate::store::TokenStore;

/// The checked settings a cache runs with.
pub(crate) struct Settings {
    pub(crate) credentials: ClientCredentials,
    pub(crate) environment: Option<Environment>,
    pub(crate) token_url: Url,
    pub(crate) scope: Option<String>,
    pub(crate) refresh_before: Duration,
    pub(crate) refresh_retry_after: Duration,
    pub(crate) login_timeout: Option<Duration>,
    /// The caller's client behind its login middlewares (see `login_client`).
    pub(crate) http_client: LoginClient,
    pub(crate) login_rate_limit: Option<RateLimit>,
    pub(crate) max_login_wait: Duration,
    pub(crate) idle_after: Duration,
    pub(crate) max_entries: usize,
    pub(crate) token_store: Arc<dyn TokenStore>,
    pub(crate) failure_policy: FailurePolicy,
    pub(crate) rejection_memory: Duration,
    /// `None`: not set (a single process, or a fleet that forgot it).
    pub(crate) fleet_size: Option<u32>,
    /// Whether a token's taxpayer claim is checked against its login's.
    pub(crate) check_token_taxpayer: bool,
    /// The TIN the plain login's tokens must name, when given.
    pub(crate) taxpayer_tin: Option<String>,
}

/// What names the settings; nothing that could hold a credential (the
/// HTTP client's proxies may).
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("client_id", &self.credentials.client_id())
            .field("token_url", &self.token_url.as_str())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}
