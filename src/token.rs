//! [`AccessToken`]: one issued token, cheap to clone, never printed, and
//! every rule a token obeys, fresh from the identity service or taken from a
//! token store ([`checked_token`], [`MAX_TOKEN_LIFETIME`], the expiry margin).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::HeaderValue;
use tokio::time::Instant;

use crate::claims::TokenClaims;
use crate::clock::Clock;
use crate::error::Error;
use crate::freshness::refresh_at;
use crate::redact;
use crate::rejection::Rejections;
use crate::store::StoredToken;
use crate::taxpayer::OnBehalfOf;

/// The largest `expires_in` accepted from the identity service: 7 days.
/// MyInvois issues 1-hour tokens; anything far beyond that is a broken answer.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// A token is treated as expired this long before `sent_at + expires_in`
/// (a quarter of its lifetime, for tokens shorter than 8 s): identity
/// servers count expiry from an issue time cut to the second, so a token the
/// cache still held as valid could reach the API up to a second after the
/// server's expiry.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(2);

/// The margin for a token living `lifetime`.
pub(crate) fn expiry_margin(lifetime: Duration) -> Duration {
    EXPIRY_MARGIN.min(lifetime / 4)
}

/// How far in the future a stored token's issue time may lie, by this
/// host's clock, before the token is refused: hosts' clocks disagree a little.
const STORED_CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// Process-wide token identities, so that an invalidation naming an old
/// token (or one from another cache) can never remove a newer one.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// An access token issued by the MyInvois identity service.
///
/// Cloning is one reference-count increment. `Debug` shows everything but the
/// token itself; read that with [`secret`](Self::secret) when you must send it
/// yourself (the middleware does it for you).
///
/// ```no_run
/// # async fn run(cache: myinvois_auth::TokenCache) -> Result<(), myinvois_auth::Error> {
/// let token = cache.token().await?;
/// let header = format!("Bearer {}", token.secret());
/// println!("valid until {}, scope {:?}", token.expires_at(), token.scope());
/// # let _ = header; Ok(()) }
/// ```
#[derive(Clone)]
pub struct AccessToken(pub(crate) Arc<TokenInner>);

pub(crate) struct TokenInner {
    pub(crate) id: u64,
    secret: String,
    header: HeaderValue,
    scope: Option<String>,
    on_behalf_of: Option<OnBehalfOf>,
    issued_at: DateTime<Utc>,
    /// When the cache stops serving it: [`expiry_margin`] before `lifetime_end`.
    expires_at: DateTime<Utc>,
    /// `issued_at + expires_in`, as the identity service counts it.
    lifetime_end: DateTime<Utc>,
    /// Monotonic (tokio, so pausable in tests): the cache decides on these.
    /// `valid_until` is `sent_at + expires_in`; `expires`, when the cache
    /// stops serving it, is the margin before.
    pub(crate) valid_until: Instant,
    pub(crate) expires: Instant,
    pub(crate) refresh_at: Instant,
    /// The 401 records of the entry the token was issued for.
    pub(crate) rejections: Arc<Rejections>,
}

/// What a token takes from the entry it is issued for.
pub(crate) struct Owner<'a> {
    pub(crate) on_behalf_of: Option<&'a OnBehalfOf>,
    pub(crate) refresh_before: Duration,
    pub(crate) rejections: &'a Arc<Rejections>,
    /// The TIN the token's claims must name, when they name one (`None`:
    /// not checked).
    pub(crate) taxpayer: Option<&'a str>,
}

/// A successful login's result, before it becomes a token.
pub(crate) struct Issued {
    pub(crate) secret: String,
    pub(crate) header: HeaderValue,
    pub(crate) lifetime: Duration,
    pub(crate) scope: Option<String>,
    /// Local time the login request was sent: expiry counts from here,
    /// never from the server's clock.
    pub(crate) sent_at: Instant,
}

impl AccessToken {
    /// `sent_at_utc` is the wall-clock time of `issued.sent_at`.
    pub(crate) fn new(issued: Issued, sent_at_utc: DateTime<Utc>, owner: &Owner<'_>) -> Self {
        let chrono = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let margin = expiry_margin(issued.lifetime);
        let valid_until = issued.sent_at + issued.lifetime;
        let lifetime_end = sent_at_utc + chrono(issued.lifetime);
        AccessToken(Arc::new(TokenInner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            secret: issued.secret,
            header: issued.header,
            scope: issued.scope,
            on_behalf_of: owner.on_behalf_of.cloned(),
            issued_at: sent_at_utc,
            expires_at: lifetime_end - chrono(margin),
            lifetime_end,
            valid_until,
            expires: valid_until - margin,
            refresh_at: refresh_at(
                valid_until - margin,
                issued.lifetime - margin,
                owner.refresh_before,
            ),
            rejections: Arc::clone(owner.rejections),
        }))
    }

    /// A token issued elsewhere: `access_token`, valid for `expires_in` from
    /// now, acting for `on_behalf_of` (`None`: the plain login). For a
    /// [`TokenSource`](crate::TokenSource) of your own, such as a test's
    /// fake. It obeys the rules of every token: not empty, sendable in a
    /// header, `expires_in` between 1 second and [`MAX_TOKEN_LIFETIME`];
    /// otherwise [`Error::InvalidConfig`] (never quoting the token).
    ///
    /// ```
    /// use std::time::Duration;
    /// use myinvois_auth::{AccessToken, OnBehalfOf};
    ///
    /// let token = AccessToken::from_secret("abc", Duration::from_secs(3600), None)?;
    /// assert_eq!(token.authorization_header(), "Bearer abc");
    /// let theirs = AccessToken::from_secret("def", Duration::from_secs(60), Some(OnBehalfOf::new("C25845632020")))?;
    /// assert_eq!(theirs.on_behalf_of().map(|t| t.as_str()), Some("C25845632020"));
    /// assert!(AccessToken::from_secret("a b", Duration::from_secs(60), None).is_err());
    /// # Ok::<(), myinvois_auth::Error>(())
    /// ```
    pub fn from_secret(
        access_token: impl Into<String>,
        expires_in: Duration,
        on_behalf_of: Option<OnBehalfOf>,
    ) -> Result<Self, Error> {
        let secret = access_token.into();
        let header = checked_token(&secret, expires_in).map_err(|error| match error {
            Error::InvalidResponse { reason, .. } => {
                Error::InvalidConfig(format!("AccessToken::from_secret: {reason}"))
            }
            other => other,
        })?;
        let rejections = Arc::default();
        let owner = Owner {
            on_behalf_of: on_behalf_of.as_ref(),
            refresh_before: Duration::ZERO,
            rejections: &rejections,
            taxpayer: None,
        };
        let issued = Issued {
            secret,
            header,
            lifetime: expires_in,
            scope: None,
            sent_at: Instant::now(),
        };
        Ok(AccessToken::new(issued, Utc::now(), &owner))
    }

    /// The token to send as `Authorization: Bearer <secret>`. Treat it as a password.
    pub fn secret(&self) -> &str {
        &self.0.secret
    }

    /// The ready-made `Bearer <secret>` header value, marked sensitive so that
    /// `http`'s `Debug` and HTTP/2 header compression leave it out.
    pub fn authorization_header(&self) -> HeaderValue {
        self.0.header.clone()
    }

    /// When the cache stops serving the token: the local time its login was
    /// sent plus `expires_in`, less [`EXPIRY_MARGIN`] (identity servers count
    /// expiry from an issue time cut to the second, and a token must reach
    /// the API before it expires there).
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.0.expires_at
    }

    /// The local time its login request was sent.
    pub fn issued_at(&self) -> DateTime<Utc> {
        self.0.issued_at
    }

    /// The scope the identity service granted, when it said.
    pub fn scope(&self) -> Option<&str> {
        self.0.scope.as_deref()
    }

    /// The taxpayer this token acts for, for intermediary logins.
    pub fn on_behalf_of(&self) -> Option<&OnBehalfOf> {
        self.0.on_behalf_of.as_ref()
    }

    /// The token's JWT claims, decoded **without verifying the signature**:
    /// for checking which taxpayer a token acts for, not for authorization.
    /// Fails with [`Error::InvalidToken`](crate::Error::InvalidToken) when the
    /// token is not a JWT.
    ///
    /// ```no_run
    /// # async fn run(cache: myinvois_auth::TokenCache) -> Result<(), myinvois_auth::Error> {
    /// let token = cache.token_on_behalf_of("C25845632020").await?;
    /// assert_eq!(token.claims()?.taxpayer_tin(), Some("C25845632020"));
    /// # Ok(()) }
    /// ```
    pub fn claims(&self) -> Result<TokenClaims, Error> {
        TokenClaims::decode(&self.0.secret)
    }

    /// The token as kept in a [`TokenStore`](crate::TokenStore), with the
    /// time it has left at `now`.
    pub(crate) fn to_stored(&self, now: Instant) -> StoredToken {
        StoredToken {
            access_token: self.0.secret.clone(),
            issued_at: self.0.issued_at,
            expires_at: self.0.lifetime_end,
            scope: self.0.scope.clone(),
            remaining: self.0.valid_until.saturating_duration_since(now),
        }
    }

    /// A token another process obtained, taken from a store, if it passes
    /// the checks a fresh token passes and is not issued in the future. It is
    /// trusted for what the store says is left, never longer: the writing
    /// host's wall clock does not decide its expiry. The error says why a
    /// token was refused, without quoting it.
    pub(crate) fn from_stored(
        stored: StoredToken,
        clock: &Clock,
        now: Instant,
        owner: &Owner<'_>,
        hidden: &[&str],
    ) -> Result<Self, String> {
        let lifetime = (stored.expires_at - stored.issued_at)
            .to_std()
            .map_err(|_| "its expiry is before its issue time".to_owned())?;
        let header = checked_token(&stored.access_token, lifetime).map_err(|e| e.to_string())?;
        if let Some(expected) = owner.taxpayer {
            check_taxpayer(&stored.access_token, expected, hidden).map_err(|e| e.to_string())?;
        }
        let now_utc = clock.utc(now);
        if stored.issued_at > now_utc + STORED_CLOCK_SKEW {
            return Err(format!(
                "it was issued {} s in the future (check the hosts' clocks)",
                (stored.issued_at - now_utc).num_seconds()
            ));
        }
        // The store's count of what is left decides expiry; but a record
        // that expired long ago by every clock is no token to trust.
        if stored.expires_at + STORED_CLOCK_SKEW < now_utc {
            return Err(format!(
                "it expired {} s ago (check the hosts' clocks)",
                (now_utc - stored.expires_at).num_seconds()
            ));
        }
        let remaining = stored.remaining.min(lifetime);
        if remaining.is_zero() {
            return Err("it has expired".to_owned());
        }
        // Issued `lifetime - remaining` ago, whatever the writer's clock said.
        let sent_at = now
            .checked_sub(lifetime - remaining)
            .ok_or_else(|| "its issue time is out of range".to_owned())?;
        // Shown by `Debug`: treated like text from the identity service,
        // scrubbed of the token and of the client secret.
        let mut hide = hidden.to_vec();
        hide.push(&stored.access_token);
        let scope = stored
            .scope
            .map(|scope| redact::scrub(&scope, &hide, redact::MAX_TEXT));
        Ok(AccessToken::new(
            Issued {
                secret: stored.access_token,
                header,
                lifetime,
                scope,
                sent_at,
            },
            clock.utc(sent_at),
            owner,
        ))
    }

    /// True when `self` and `other` are the same issued token.
    pub fn same_token(&self, other: &AccessToken) -> bool {
        self.0.id == other.0.id
    }
}

/// The checks every token passes before it is served, fresh from the
/// identity service or taken from a token store: not empty, sendable as a
/// header value, and a lifetime between one second and
/// [`MAX_TOKEN_LIFETIME`].
pub(crate) fn checked_token(access_token: &str, lifetime: Duration) -> Result<HeaderValue, Error> {
    if access_token.is_empty() {
        return Err(Error::invalid_response("access_token is empty"));
    }
    if lifetime.is_zero() {
        return Err(Error::invalid_response("expires_in is zero"));
    }
    if lifetime > MAX_TOKEN_LIFETIME {
        return Err(Error::invalid_response(format!(
            "expires_in is larger than {} seconds",
            MAX_TOKEN_LIFETIME.as_secs()
        )));
    }
    bearer_header(access_token)
}

/// The check every token passes when its login named a taxpayer: a token
/// whose claims name one (`TaxpayerTIN`, or the older `TaxTin`) must name
/// `expected` (the TIN part of `TIN:ROB`), or the API would act for another
/// taxpayer. A token that is not a JWT, or names none, passes. The TIN the
/// token names is text from the identity service: scrubbed of `hidden`
/// (the client secret) and of the token.
pub(crate) fn check_taxpayer(
    access_token: &str,
    expected: &str,
    hidden: &[&str],
) -> Result<(), Error> {
    let Ok(claims) = TokenClaims::decode(access_token) else {
        return Ok(());
    };
    match claims.taxpayer_tin() {
        Some(named) if !named.trim().eq_ignore_ascii_case(expected) => {
            let mut hide = hidden.to_vec();
            hide.push(access_token);
            Err(Error::WrongTaxpayer {
                expected: expected.to_owned(),
                issued_for: redact::scrub(named, &hide, redact::MAX_TEXT),
                retry_after: None,
            })
        }
        _ => Ok(()),
    }
}

/// `Bearer <token>`, marked sensitive; an error (never quoting the token) if
/// the token cannot be sent in an HTTP header.
pub(crate) fn bearer_header(access_token: &str) -> Result<HeaderValue, Error> {
    let invalid = || {
        Error::invalid_response("access_token has characters that cannot be sent in an HTTP header")
    };
    if !access_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid());
    }
    let mut header =
        HeaderValue::try_from(format!("Bearer {access_token}")).map_err(|_| invalid())?;
    header.set_sensitive(true);
    Ok(header)
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"<redacted>")
            .field("scope", &self.0.scope)
            .field("on_behalf_of", &self.0.on_behalf_of)
            .field("issued_at", &self.0.issued_at)
            .field("expires_at", &self.0.expires_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_expiry_margin_is_two_seconds_and_a_quarter_of_a_short_lifetime() {
        assert_eq!(expiry_margin(S(3600)), EXPIRY_MARGIN);
        assert_eq!(expiry_margin(S(8)), S(2));
        assert_eq!(expiry_margin(S(4)), S(1));
        assert_eq!(expiry_margin(S(1)), Duration::from_millis(250));
        assert_eq!(expiry_margin(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_token_is_served_for_three_quarters_of_its_life_at_least() {
        let rejections = Arc::default();
        let owner = Owner {
            on_behalf_of: None,
            refresh_before: Duration::ZERO,
            rejections: &rejections,
            taxpayer: None,
        };
        let sent_at = Instant::now();
        let issued = |lifetime| Issued {
            secret: "t".into(),
            header: bearer_header("t").unwrap(),
            lifetime,
            scope: None,
            sent_at,
        };
        let token = AccessToken::new(issued(S(4)), Utc::now(), &owner);
        assert_eq!(token.0.expires, sent_at + S(3));
        assert_eq!(token.0.valid_until, sent_at + S(4));
        assert_eq!(
            token.expires_at(),
            token.0.lifetime_end - chrono::Duration::seconds(1)
        );
        let token = AccessToken::new(issued(S(3600)), Utc::now(), &owner);
        assert_eq!(token.0.expires, sent_at + S(3598));
    }
}
