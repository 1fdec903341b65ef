//! How an entry obtains a new token: one another process already shared
//! through the token store, or a login of this process within the client
//! ID's login budget (this process's and the fleet's), under the entry's
//! lock in the store so that one process in a fleet logs in per key.
//!
//! The lock covers the login call only: the budget slot is taken first,
//! the lock (see `lock`) for about the login timeout after. A process
//! whose fleet slot must wait looks at the store again before asking
//! anew, and one refused a slot looks once more: if another process holds
//! the entry's lock it waits for that login instead of failing. A process
//! that finds another one logging in waits for its token (see `wait`), for
//! at most a lock TTL (that login is being sent; a dead holder's lock
//! expires, and one held longer is no live login's: it is taken over); a
//! background refresh does not wait at all (its token is still valid):
//! the next sweep takes the new one from the store.
//!
//! While a login waits (for another process's login, a fleet slot, a 429's
//! hold), each of its store calls before it is sent takes the process's
//! turn (see `pacer`): however many entries wait, the process asks the
//! store at most twice a second. A background refresh always waits its
//! turn; a caller's first look and first ask for a slot go at once while
//! nothing of the process waits, so that cold taxpayers log in at once.
//! One entry at a time asks the fleet for a slot of the budget, and what
//! the fleet answers (no slot before a time) holds for the process's other
//! entries, which wait for that time without asking.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::flight::{Phase, Progress};
use super::lock::{lock_ttl, HeldLock};
use super::state::{Entry, REFRESH_MARGIN};
use super::wait::{Awaited, Awaiting, FLEET_POLL_FIRST};
use crate::budget::{Grant, Urgency, DEFAULT_RATE_LIMIT_BACKOFF};
use crate::cache::pacer::Closed;
use crate::clock::after;
use crate::error::Error;
use crate::login::login;
use crate::store::{lock_owner, Loaded, LoginSlot, SlotRequest, StoreError};
use crate::token::{check_taxpayer, AccessToken};

/// The shortest wait for the fleet's window, whatever the store answers.
const MIN_FLEET_WAIT: Duration = Duration::from_millis(10);

/// No turn to ask the store came before the login's deadline.
struct NoTurn;

/// When the calls of the login's attempt that took no turn were made (see
/// `pacer`).
type Counted = parking_lot::Mutex<Vec<Instant>>;

impl Entry {
    /// Gets a new token for the entry (see the module docs). Runs inside
    /// the login's span, which names the entry and the reason.
    pub(super) async fn obtain(
        &self,
        urgency: &Urgency,
        progress: &Progress,
    ) -> Result<AccessToken, Error> {
        let ctx = &self.ctx;
        let store = &ctx.settings.token_store;
        self.release_abandoned_locks().await;
        // The token to improve on: the one held (a refresh), or one rejected.
        let rejected = self.rejected_until.load(Ordering::Relaxed);
        let have = match self.current.load().as_ref() {
            Some(current) => Some(current.expires),
            None => (rejected > 0).then(|| ctx.clock.at(rejected)),
        };
        let ttl = lock_ttl(&ctx.settings);
        // Whether this login waits, so that its looks take turns (as they
        // do while the process waits); and whether the fleet refused it a
        // slot, so that its asks do too.
        let mut paced = urgency.get().refresh;
        let mut fleet_refused = false;
        let mut awaiting: Option<Awaiting> = None;
        let mut take_over = false;
        let mut rechecked = false;
        let counted = Counted::default();
        // What a wait for another's login last saw, if it looked.
        let mut seen: Option<Option<Loaded>> = None;
        loop {
            // Someone may have shared a token, or be logging in for it.
            let loaded = match seen.take() {
                Some(loaded) => loaded,
                None => {
                    self.look(paced, urgency, &counted)
                        .await
                        .map_err(|NoTurn| match &awaiting {
                            Some(awaiting) => Error::timeout(awaiting.since().elapsed()),
                            None => Error::RateLimited { retry_after: None },
                        })?
                }
            };
            let locked = loaded.as_ref().and_then(|l| l.locked);
            if let Some(token) = loaded.and_then(|l| self.accept_shared(l, have)) {
                return Ok(token);
            }
            match locked {
                None => self.forget_lock_seen(),
                // Held for a whole lock TTL: taken over below.
                Some(_) if take_over => {}
                Some(lock_left) => {
                    if urgency.get().refresh {
                        // Our token is still valid: no polling; the next
                        // sweep takes the new one from the store.
                        tracing::debug!("another process is refreshing this entry");
                        return Err(Error::LoginAborted);
                    }
                    // Perhaps the lock of a login of ours that was cut
                    // off: released, it is no reason to wait.
                    if self.has_abandoned_locks() && self.release_abandoned_locks().await {
                        continue;
                    }
                    // The lock is held only while a login is sent: like our
                    // own login once sent, that login's time bounds the wait
                    // (the lock's TTL, which a dead holder cannot outlast).
                    progress.set(Phase::AwaitingFleet);
                    paced = true;
                    // The attempt became a wait: its calls stay counted.
                    counted.lock().clear();
                    let awaiting = awaiting.get_or_insert_with(|| self.awaiting());
                    match self.await_fleet(lock_left, awaiting, ttl).await {
                        Awaited::Gone(loaded) => {
                            seen = loaded.map(Some);
                            continue;
                        }
                        Awaited::Outlived => take_over = true,
                    }
                }
            }
            awaiting = None;
            // A login is needed: its client is built now if it was not
            // (a failure spends no slot of the budget).
            ctx.settings.http_client.get()?;
            let slot = match self
                .login_slot(urgency, progress, &counted, &mut fleet_refused)
                .await
            {
                Ok(Some(slot)) => slot,
                // Waited for the fleet's window: look at the store again.
                Ok(None) => {
                    paced = true;
                    continue;
                }
                Err(refusal) => {
                    // No slot in time; but another process may have taken
                    // the lock or shared the token since we looked. Waiting
                    // for its login is better than a refusal (once a login).
                    if !rechecked {
                        rechecked = true;
                        let loaded = self.look(paced, urgency, &counted).await.ok().flatten();
                        let locked = loaded.as_ref().is_some_and(|l| l.locked.is_some());
                        if let Some(token) = loaded.and_then(|l| self.accept_shared(l, have)) {
                            return Ok(token);
                        }
                        if locked {
                            continue;
                        }
                    }
                    return Err(self.refused(refusal));
                }
            };
            // The calls that led here are the login's own, as its lock is.
            ctx.pacer.uncount(&std::mem::take(&mut *counted.lock()));
            let Some(lock) = HeldLock::take(self, ttl, take_over).await else {
                // Another process took it since we looked (or, taking over,
                // holds it as a live login would): wait for its token.
                slot.give_back(self).await;
                if take_over {
                    self.forget_lock_seen();
                    take_over = false;
                }
                continue;
            };
            // Another process may have finished just before we took the lock.
            let loaded = self.ctx.store("load", store.load(&self.store_key)).await;
            if let Some(token) = loaded.and_then(|l| self.accept_shared(l, have)) {
                lock.release(None).await;
                slot.give_back(self).await;
                return Ok(token);
            }
            slot.keep();
            let result = self.login_now(progress).await;
            let unsaved = match &result {
                Ok(token) => {
                    // Saved (and the lock released) before the callers here
                    // have it: a process that exits once its callers are
                    // served must not leave the fleet waiting out the lock.
                    let stored = token.to_stored(Instant::now());
                    let saved = self.ctx.store("save", store.save(&self.store_key, &stored));
                    saved.await.is_none().then(|| token.clone())
                }
                Err(_) => None,
            };
            lock.release(unsaved).await;
            return result;
        }
    }

    /// One look at the entry in the token store: its turn is paced when
    /// `paced` says so or while the process waits on the store (see `ask`).
    async fn look(
        &self,
        paced: bool,
        urgency: &Urgency,
        counted: &Counted,
    ) -> Result<Option<Loaded>, NoTurn> {
        let ctx = &self.ctx;
        let load = ctx.settings.token_store.load(&self.store_key);
        let paced = paced || ctx.pacer.waiting(&ctx.budget_key);
        self.ask(paced, urgency, counted, "load", load).await
    }

    /// A store call of a login not yet sent: after the process's turn when
    /// `paced` (see `pacer`), at once otherwise (counted all the same).
    async fn ask<T>(
        &self,
        paced: bool,
        urgency: &Urgency,
        counted: &Counted,
        what: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<Option<T>, NoTurn> {
        let pacer = &self.ctx.pacer;
        if paced {
            if !pacer.turn(urgency.get().deadline).await {
                return Err(NoTurn);
            }
        } else {
            counted.lock().push(pacer.count());
        }
        Ok(self.ctx.store(what, call).await)
    }

    /// The token in `loaded`, if it passes the checks, is valid for a while
    /// and, for a refresh, is newer than the one held (`have` is its expiry).
    fn accept_shared(&self, loaded: Loaded, have: Option<Instant>) -> Option<AccessToken> {
        let stored = loaded.token?;
        let secret = self.ctx.settings.credentials.secret().forms();
        let token = match AccessToken::from_stored(
            stored,
            &self.ctx.clock,
            Instant::now(),
            &self.owner(),
            &[secret[0].as_str(), secret[1].as_str()],
        ) {
            Ok(token) => token,
            Err(reason) => {
                tracing::warn!(%reason, "token in the token store refused; logging in instead");
                return None;
            }
        };
        let valid_until = token.0.expires;
        let newer = have.is_none_or(|have| valid_until > have + Duration::from_secs(1));
        if newer && valid_until > Instant::now() + REFRESH_MARGIN {
            tracing::info!(expires_at = %token.expires_at(), "token taken from the token store");
            Some(token)
        } else {
            None
        }
    }

    /// Takes a slot from this process's budget and then from the fleet's
    /// (the token store's). While the store is out of reach, this process
    /// keeps to its share of the budget (see `fleet_size`). `None`: the
    /// fleet's window had no slot yet and this waited for one; the entry
    /// may have been logged in for meanwhile, so the caller looks at the
    /// store before asking again. A refusal is not counted here. Once the
    /// fleet has refused (`refused` is set), every ask takes its turn (see
    /// `pacer`), as does a refresh's, and any while the process waits; a
    /// caller's first ask, or its first after another's login it waited
    /// for, goes at once.
    async fn login_slot(
        &self,
        urgency: &Urgency,
        progress: &Progress,
        counted: &Counted,
        refused: &mut bool,
    ) -> Result<Option<Slot<'_>>, Error> {
        let ctx = &self.ctx;
        let store = &ctx.settings.token_store;
        progress.set(Phase::Queued);
        let mut share = if store.is_available() {
            None
        } else {
            Some(ctx.fallback_share())
        };
        loop {
            let grant = ctx.budget.acquire(urgency, share.flatten()).await?;
            let Some(limit) = ctx.budget.limit() else {
                return Ok(Some(Slot { grant, fleet: None }));
            };
            if share.is_some() {
                // The store is out of reach: our share is all there is.
                return Ok(Some(Slot { grant, fleet: None }));
            }
            // One entry at a time asks the fleet; what it hears holds for
            // the others.
            let asking = ctx.pacer.asking(&ctx.budget_key);
            let asking = asking.lock().await;
            if let Some(closed) = ctx.pacer.closed(&ctx.budget_key, Instant::now()) {
                drop((asking, grant));
                *refused = true;
                counted.lock().clear();
                return self.wait_for_fleet(closed, urgency).await;
            }
            let request = SlotRequest {
                count: limit.count,
                window: limit.window(),
                pace: grant.paced().then(|| limit.interval()),
                id: lock_owner(),
            };
            let reserve = store.reserve_login(&ctx.budget_key, &request);
            let paced = *refused || urgency.get().refresh || ctx.pacer.waiting(&ctx.budget_key);
            let answer = match self.ask(paced, urgency, counted, "reserve", reserve).await {
                Ok(answer) => answer,
                Err(NoTurn) => return Err(Error::RateLimited { retry_after: None }),
            };
            match answer {
                Some(LoginSlot::Granted) => {
                    ctx.pacer.open(&ctx.budget_key);
                    return Ok(Some(Slot {
                        grant,
                        fleet: Some(request.id),
                    }));
                }
                None => {
                    // The store failed now: ask again within our share.
                    drop((asking, grant));
                    share = Some(ctx.fallback_share());
                }
                Some(answer) => {
                    // Not ours (yet): give the local slot back, and wait for
                    // the fleet's window if the deadline allows.
                    let (ask_again, wait) = match answer {
                        LoginSlot::Pending { ask_again, wait } => (ask_again, wait),
                        LoginSlot::Wait(wait) => (wait, wait),
                        // Granted is above; a future answer: ask again soon.
                        _ => (FLEET_POLL_FIRST, FLEET_POLL_FIRST),
                    };
                    // Never a tight loop, whatever a store answers.
                    let now = Instant::now();
                    let closed = Closed {
                        ask_again: after(now, ask_again.max(MIN_FLEET_WAIT)),
                        slot: after(now, wait.max(ask_again)),
                    };
                    ctx.pacer.close(&ctx.budget_key, closed);
                    drop((asking, grant));
                    *refused = true;
                    // A refused attempt is a wait: its calls stay counted.
                    counted.lock().clear();
                    return self.wait_for_fleet(closed, urgency).await;
                }
            }
        }
    }

    /// The fleet has no slot before `closed.ask_again`: waits for then
    /// (`None`: look at the store, and ask again), or, if the deadline
    /// does not allow, refuses, saying when a slot frees.
    async fn wait_for_fleet(
        &self,
        closed: Closed,
        urgency: &Urgency,
    ) -> Result<Option<Slot<'_>>, Error> {
        if closed.ask_again > urgency.get().deadline {
            return Err(Error::RateLimited {
                retry_after: Some(closed.slot.saturating_duration_since(Instant::now())),
            });
        }
        let _waiting = self.ctx.pacer.wait();
        tokio::time::sleep_until(closed.ask_again).await;
        Ok(None)
    }

    /// Sends the login.
    async fn login_now(&self, progress: &Progress) -> Result<AccessToken, Error> {
        let ctx = &self.ctx;
        let store = &ctx.settings.token_store;
        ctx.counters.login_sent();
        progress.set(Phase::Sending);
        let started = Instant::now();
        tracing::debug!("login started");
        let secret = ctx.settings.credentials.secret();
        self.login_secret
            .store(secret.generation, Ordering::Relaxed);
        let owner = self.owner();
        let result = login(&ctx.settings, &secret, self.on_behalf_of.as_ref())
            .await
            .and_then(|issued| {
                if let Some(expected) = owner.taxpayer {
                    let forms = secret.forms();
                    let hidden = [forms[0].as_str(), forms[1].as_str()];
                    check_taxpayer(&issued.secret, expected, &hidden)?;
                }
                let sent_at_utc = ctx.clock.utc(issued.sent_at);
                Ok(AccessToken::new(issued, sent_at_utc, &owner))
            });
        let took = started.elapsed();
        ctx.counters.login_ended(took, result.as_ref().err());
        let elapsed_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(token) => tracing::info!(
                elapsed_ms,
                expires_at = %token.expires_at(),
                "login succeeded"
            ),
            Err(error) => {
                if let Error::RateLimited { retry_after } = error {
                    let retry = retry_after.unwrap_or(DEFAULT_RATE_LIMIT_BACKOFF);
                    ctx.budget.block_for(retry);
                    self.ctx
                        .store("block", store.block_logins(&ctx.budget_key, retry))
                        .await;
                }
                tracing::warn!(elapsed_ms, %error, "login failed");
            }
        }
        result
    }

    fn refused(&self, error: Error) -> Error {
        self.ctx.counters.refused_by_budget();
        tracing::warn!(%error, "no login slot in time");
        error
    }
}

/// A login slot: this process's, and the fleet's reservation when there is
/// one. Given back if the login is never sent.
struct Slot<'a> {
    grant: Grant<'a>,
    fleet: Option<String>,
}

impl Slot<'_> {
    fn keep(self) {
        self.grant.keep();
    }

    /// The login will not be sent: both slots are given back.
    async fn give_back(self, entry: &Entry) {
        drop(self.grant);
        if let Some(id) = self.fleet {
            let (ctx, store) = (&entry.ctx, &entry.ctx.settings.token_store);
            entry
                .ctx
                .store("release", store.release_login(&ctx.budget_key, &id))
                .await;
        }
    }
}
