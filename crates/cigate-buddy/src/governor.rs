//! The per-account rate governor: learns Buddy's budget from `X-Rate-Limit-Remaining` and
//! `X-Rate-Limit-Reset` and spaces calls so the budget lasts until the reset, so callers
//! do not see Buddy's 429s.
//!
//! How it spaces: each call reserves one unit of the remaining budget (so 20 concurrent
//! callers cannot all pass when 3 units are left) and gets a send time on an even
//! schedule spreading what is left over the time until the reported reset (a GCRA:
//! calls may run ahead of the schedule by [`GovernorConfig::burst_percent`] of the time
//! left, so a short burst, e.g. a few pages of a list, is not slowed down). When nothing
//! is left, calls wait for the reset plus [`GovernorConfig::reset_margin`] (Buddy sends
//! the reset in whole seconds, so the real reset may be up to a second later) plus a
//! little jitter. `X-Rate-Limit-Limit` is ignored (Buddy's samples send 1).
//!
//! What the reset means is not documented (a window opened by the token's first request
//! or aligned to the clock; the end floored, rounded or exact), so the governor assumes
//! only that the window ends within a second of the reported reset: the margin covers
//! every reading. It never sends a burst on a guess: when a known window runs out, one
//! call goes alone until an answer tells the next window, so a wrong guess costs one
//! throttled call; a throttled call blocks the account for `Retry-After` plus a margin
//! (it may be truncated like the reset) or at least one margin, then again one call
//! goes alone. The last unit of a window goes only when no call sent before it is
//! unanswered (calls on other connections may reach Buddy in another order than they
//! were sent). A turn handed out ahead of its time is revoked when an answer meanwhile
//! shows the budget gone or the account blocked.
//!
//! Learning the reset's phase ([`GovernorConfig::learn_reset_phase`]): the margin costs
//! up to a second per window, 20 % of a 5 s window. When an answer reports a new window
//! with `remaining` one below the largest budget seen, our request opened that window;
//! if the window lasts whole seconds from its first request (a window aligned to the
//! clock ends at the reported second, earlier still), it ends at `reset + frac(t)` with
//! `t` when Buddy counted that request, which lies between our send and its answer. So
//! when both fall in the same second, the window is taken to renew at
//! `reset + frac(answer) + 50 ms` instead of `reset + margin`.
//!
//! Optimisations switch themselves off: every permit records what let it out (the
//! learned phase before the margin's renewal, a free burst, a call while nothing was
//! known), and a throttled call turns each of those off for good for this account.
//!
//! Every response corrects the estimate: the customer's own scripts may spend the same
//! token's budget, so the lowest remaining reported for a window wins, minus our calls
//! Buddy cannot have counted yet (reserved but unsent, or sent after the answered one;
//! calls sent before it are taken as counted, which holds on one connection and nearly
//! so across several; the last-unit rule above covers the rest).
//!
//! Until the first response nothing is known; up to [`GovernorConfig::unknown_burst`]
//! calls go out at once (one after a window ran out, see above) and the rest wait for
//! their answers.
//!
//! Clocks: the reset is compared with this host's wall clock while Buddy's `Date`
//! agrees with it; when `Date` says Buddy's clock is off ours, the reset is placed by
//! the offset `Date` bounds (its lower bound, so never earlier than it is) and the
//! phase is not learned.
//!
//! State is per process unless a [`SharedBudget`] is given. Several cigate instances
//! sharing one account each keep their own governor; every response reports the
//! *shared* remaining budget, so each sees the others' spending one response later,
//! and near a window's end two may take its last unit at once (Buddy refuses such a
//! call before acting, and the retry layer waits for the reset). With a shared budget
//! (the store, for instances on one database) each call of a known window first takes
//! a unit there, so together they never take more than the window holds, and the
//! shared count corrects each one's estimate at once. Calls sent before their window
//! was known are counted there once answered. Measured in `docs/benchmarks.md`
//! (several instances).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::client::RateLimitHeaders;
use crate::error::BuddyError;

/// Tunables of the governor. Integers so [`crate::client::HttpPoolConfig`] stays `Eq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GovernorConfig {
    /// Added to the reported reset before a spent window counts as renewed (1 s: the
    /// reset is whole seconds).
    pub reset_margin: Duration,
    /// Upper bound of the random delay added to waits for a reset, so waiting callers
    /// do not arrive together (200 ms).
    pub reset_jitter: Duration,
    /// How far a caller may run ahead of the even schedule, in percent of the time left
    /// until the reset (10 %).
    pub burst_percent: u8,
    /// While more than this share of the largest budget seen is left, calls go at once:
    /// a burst (a product syncing one account, 200 concurrent list calls) should not
    /// be stretched over the hour when the budget easily covers it. Below it, what is
    /// left is spread evenly until the reset (25 %: 250 of 1,000; 15 of 60). Only
    /// while the reset is more than `free_burst_horizon` away.
    pub free_percent: u8,
    /// No free burst within this time of the reset (2 min: four default deadlines). In
    /// a window that short, steady spacing serves every queued caller in time, and a
    /// burst would not: 60 per minute with 20 steady callers and 30 s deadlines had
    /// two thirds of its calls refused after bursts.
    pub free_burst_horizon: Duration,
    /// Budget left unspent in each window, in percent of the largest budget seen, for
    /// the customer's own use of the token (2 %: 20 of 1,000; 1 of 60; 0 of 20).
    pub reserve_percent: u8,
    /// Calls allowed in flight while the budget is unknown (4).
    pub unknown_burst: u32,
    /// Learn when windows really renew instead of always adding the margin (see the
    /// module documentation).
    pub learn_reset_phase: bool,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        Self {
            reset_margin: Duration::from_secs(1),
            reset_jitter: Duration::from_millis(100),
            burst_percent: 10,
            free_percent: 25,
            free_burst_horizon: Duration::from_secs(120),
            reserve_percent: 2,
            unknown_burst: 4,
            learn_reset_phase: true,
        }
    }
}

/// Source of wall-clock time, to turn Buddy's reset (Unix seconds) into an [`Instant`].
/// Injectable so tests can run on Tokio's paused clock.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Seconds since the Unix epoch.
    fn unix_now(&self) -> f64;
}

/// The host's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_now(&self) -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

/// A wall clock that follows Tokio's clock from a fixed starting point: under
/// `tokio::time::pause()` it moves only with `advance`, which makes governor tests exact.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    unix_at_start: f64,
    start: Instant,
}

impl TokioClock {
    pub fn starting_at(unix_seconds: f64) -> Self {
        Self {
            unix_at_start: unix_seconds,
            start: Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn unix_now(&self) -> f64 {
        self.unix_at_start + self.start.elapsed().as_secs_f64()
    }
}

/// What the governor currently believes, for response headers and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GovernorSnapshot {
    /// Units we may still spend in the current window (after reservations), if known.
    pub remaining: Option<u64>,
    /// Buddy's reported reset of the current window (Unix seconds), if known.
    pub reset: Option<i64>,
    /// Calls sent or about to be sent that have not been answered.
    pub in_flight: u64,
    /// Largest budget seen in a window (`remaining + 1` of a first response).
    pub learned_budget: u64,
}

/// A rate budget shared with other processes using the same account (several `cigate
/// serve` instances on one database). Each instance's governor still spaces its own
/// calls; before a call of a known window goes out it takes a unit here, so between
/// them the instances never spend more than the window holds, and each learns the
/// others' spending at once instead of one answer later. Failures are the
/// implementation's to log; it then answers as if the unit were free (the governor's
/// own view still holds).
#[async_trait::async_trait]
pub trait SharedBudget: Send + Sync + fmt::Debug {
    /// Takes one unit of the window reported to reset at `reset` (Unix seconds) for
    /// `account` unless `limit` are taken: the units taken with this one, or `None`
    /// when the window is full.
    async fn take(&self, account: &str, reset: i64, limit: u64) -> Option<u64>;
    /// Counts a unit spent without taking it (a call sent before its window was known).
    async fn count(&self, account: &str, reset: i64);
}

/// A governor's link to a [`SharedBudget`]: the budget and the account's key in it.
#[derive(Debug, Clone)]
pub struct SharedLink {
    pub budget: Arc<dyn SharedBudget>,
    /// Identifies the account (a fingerprint of base URL and token, never the token).
    pub account: String,
}

/// One account's rate governor; shared by every client of the account (see
/// [`GovernorRegistry`]).
#[derive(Debug)]
pub struct Governor {
    config: GovernorConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// Woken on every answer, for callers waiting while the budget is unknown.
    answered: Notify,
    /// Callers that could not go at once wait here, in arrival order.
    queue: tokio::sync::Mutex<()>,
    queued: AtomicUsize,
    shared: Option<SharedLink>,
}

#[derive(Debug)]
struct State {
    window: Option<Window>,
    in_flight: u64,
    unknown_in_flight: u64,
    learned_budget: u64,
    /// GCRA's theoretical arrival time of the next call.
    tat: Instant,
    /// A 429 without a usable reset: nothing goes out before this.
    blocked_until: Option<Instant>,
    /// The largest budget seen before the current window; the phase is learned from
    /// the second window on.
    budget_before: u64,
    /// Turned off by a throttled call sent before the margin would have let it go.
    phase_learning: bool,
    /// Free bursts; turned off by a throttled call of a free burst.
    free_burst: bool,
    /// Calls allowed out while nothing is known; 1 after a blind call was throttled.
    unknown_burst: u64,
    /// A known window ran out: until an answer tells the next one, one call goes alone,
    /// so a wrong guess about the renewal costs one throttled call, not a burst.
    renewing: bool,
    /// After a window renewed by its learned phase: the margin's renewal, before which
    /// handed-out calls are "early" (see [`Tags`]).
    early_until: Option<Instant>,
    /// What we know of Buddy's clock minus ours, from `Date` headers: the bounds
    /// `[max(date − answered), min(date + 1 − sent)]` over the answers seen.
    offset: Option<(f64, f64)>,
    /// Sequence numbers of calls sent and not yet answered.
    sent: BTreeSet<u64>,
    next_seq: u64,
}

/// Which optimisations let a call out, so a throttled one turns them off for good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tags {
    /// Sent before the margin's renewal, because the learned phase said the window renewed.
    early: bool,
    /// Sent at once by a free burst.
    free: bool,
    /// Sent while nothing was known about the window.
    blind: bool,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    reset_unix: i64,
    /// The reported reset on our clock.
    reset_at: Instant,
    /// When the window certainly renewed: reset + margin.
    renew_at: Instant,
    /// Remaining budget minus our reservations since the last answer.
    remaining: i64,
    /// `renew_at` comes from the learned phase, not the margin.
    phased: bool,
    /// The margin's renewal: reported reset + margin.
    sure_renew_at: Instant,
}

/// Added to a phase-based renewal for clock granularity and conversion error.
const PHASE_SLACK: f64 = 0.05;

/// Buddy's clock minus ours, in seconds, learned from `Date` (whole seconds: Buddy's
/// clock read `date` somewhere between our send and our answer, so the offset lies in
/// `[date − answered, date + 1 − sent]`; the answers narrow it). 0 while our clock fits
/// it; otherwise its lower bound, which places every reset later on our clock, never
/// earlier.
fn buddy_offset(st: &mut State, date: Option<i64>, sent: f64, answered: f64) -> f64 {
    if let Some(date) = date {
        let (lo, hi) = (date as f64 - answered, date as f64 + 1.0 - sent);
        st.offset = Some(match st.offset {
            Some((l, h)) if lo.max(l) <= hi.min(h) => (lo.max(l), hi.min(h)),
            // The first answer, or a clock that jumped: start again.
            _ => (lo, hi),
        });
    }
    match st.offset {
        Some((lo, hi)) if lo > 0.0 || hi < 0.0 => lo,
        _ => 0.0,
    }
}

fn rate_limited(at: Instant, now: Instant) -> BuddyError {
    BuddyError::RateLimited {
        retry_after: at.saturating_duration_since(now),
    }
}

/// Leaves the wait queue's count when a waiter is served or gives up.
struct Dequeue<'a>(&'a AtomicUsize);

impl Drop for Dequeue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What one caller should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// A unit is reserved; send at this time.
    Go {
        at: Instant,
        window: Option<i64>,
        tags: Tags,
    },
    /// Nothing left: try again at this time.
    WaitUntil(Instant),
    /// Budget unknown and enough calls in flight: wait for an answer.
    WaitForAnswer,
    /// The earliest send time is past the caller's deadline.
    TooLate(Instant),
}

/// A reserved unit of budget. Hand it back through [`Governor::observe`] with the
/// answer; dropped without an answer, it frees its slot (and its unit, if the request
/// was never sent).
#[derive(Debug)]
pub struct Permit {
    governor: Arc<Governor>,
    window: Option<i64>,
    sent: bool,
    sent_at: Option<Instant>,
    /// Order of sending among this governor's calls.
    seq: Option<u64>,
    tags: Tags,
    done: bool,
}

impl Permit {
    /// The request is about to leave: from now on its unit counts as spent.
    pub fn mark_sent(&mut self) {
        self.sent = true;
        self.sent_at = Some(Instant::now());
        let mut st = self.governor.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        st.sent.insert(seq);
        self.seq = Some(seq);
    }

    /// The request never left after all (a connect failure): its unit is handed back.
    pub fn mark_unsent(&mut self) {
        self.sent = false;
        if let Some(seq) = self.seq.take() {
            self.governor.lock().sent.remove(&seq);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.governor.release(self.window, self.seq, !self.sent);
        }
    }
}

impl Governor {
    pub fn new(config: GovernorConfig) -> Arc<Self> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: GovernorConfig, clock: Arc<dyn Clock>) -> Arc<Self> {
        Self::with_parts(config, clock, None)
    }

    /// A governor that also takes each unit from a budget shared with other processes.
    pub fn with_parts(
        config: GovernorConfig,
        clock: Arc<dyn Clock>,
        shared: Option<SharedLink>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            clock,
            state: Mutex::new(State {
                window: None,
                in_flight: 0,
                unknown_in_flight: 0,
                learned_budget: 0,
                tat: Instant::now(),
                blocked_until: None,
                budget_before: 0,
                phase_learning: config.learn_reset_phase,
                free_burst: config.free_percent > 0,
                unknown_burst: u64::from(config.unknown_burst.max(1)),
                renewing: false,
                early_until: None,
                offset: None,
                sent: BTreeSet::new(),
                next_seq: 0,
            }),
            answered: Notify::new(),
            queue: tokio::sync::Mutex::new(()),
            queued: AtomicUsize::new(0),
            shared,
        })
    }

    pub fn config(&self) -> GovernorConfig {
        self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every await-free step, so a poisoned lock
        // (a panic elsewhere) is safe to keep using.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> GovernorSnapshot {
        let st = self.lock();
        let live = st.window.filter(|w| Instant::now() < w.renew_at);
        GovernorSnapshot {
            remaining: live.map(|w| w.remaining.max(0) as u64),
            reset: live.map(|w| w.reset_unix),
            in_flight: st.in_flight,
            learned_budget: st.learned_budget,
        }
    }

    /// Nothing learned is worth keeping (no call in flight, no live window): the
    /// registry may forget this governor.
    pub fn is_idle(&self) -> bool {
        let st = self.lock();
        let now = Instant::now();
        st.in_flight == 0
            && st.window.is_none_or(|w| now >= w.renew_at)
            && st.blocked_until.is_none_or(|b| now >= b)
    }

    /// Waits for this call's turn and reserves a unit of budget. When the turn comes
    /// after `deadline`, returns [`BuddyError::RateLimited`] at once instead of waiting.
    pub async fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<Permit, BuddyError> {
        loop {
            let permit = self.turn(deadline).await?;
            // A revoked turn is handed back (its unit too, unsent); the caller queues
            // again.
            if !self.revoked(&permit) && self.take_shared(&permit).await {
                return Ok(permit);
            }
            drop(permit);
        }
    }

    /// Takes the permit's unit from the shared budget, if there is one and the window is
    /// known. The shared count corrects our estimate (the other instances' spending),
    /// and a full window leaves nothing to spend here until it renews.
    async fn take_shared(&self, permit: &Permit) -> bool {
        let (Some(shared), Some(reset)) = (&self.shared, permit.window) else {
            return true;
        };
        let (limit, budget) = {
            let st = self.lock();
            let reserve = st.learned_budget * u64::from(self.config.reserve_percent) / 100;
            (st.learned_budget.saturating_sub(reserve), st.learned_budget)
        };
        let taken = shared.budget.take(&shared.account, reset, limit).await;
        let mut st = self.lock();
        if let Some(w) = st.window.as_mut().filter(|w| w.reset_unix == reset) {
            // Our own unit is already off `remaining` and among `taken`.
            let left = budget.saturating_sub(taken.unwrap_or(budget)) as i64;
            let ours_pending = if taken.is_some() { 0 } else { 1 };
            w.remaining = w.remaining.min(left - ours_pending);
        }
        taken.is_some()
    }

    /// Turns are handed out ahead of their time; an answer that came meanwhile may show
    /// the budget gone (another consumer spent it, or Buddy refused a call): such a turn
    /// must not be used, or every turn handed out ahead is a throttled call.
    fn revoked(&self, permit: &Permit) -> bool {
        let now = Instant::now();
        let st = self.lock();
        st.blocked_until.is_some_and(|until| now < until)
            || st
                .window
                .is_some_and(|w| Some(w.reset_unix) == permit.window && w.remaining < 0)
    }

    async fn turn(self: &Arc<Self>, deadline: Instant) -> Result<Permit, BuddyError> {
        // Fast path while nobody waits, so nobody is overtaken.
        if self.queued.load(Ordering::SeqCst) == 0 {
            let now = Instant::now();
            match self.decide(now, deadline) {
                Decision::Go { at, window, tags } => {
                    return Ok(self.permit_at(at, window, tags).await)
                }
                Decision::TooLate(at) | Decision::WaitUntil(at) if at > deadline => {
                    return Err(rate_limited(at, now))
                }
                _ => {}
            }
        }
        // Waiters are served first come, first served (Tokio's mutex is fair): without
        // that, whoever wakes first after a reset wins, and an unlucky caller can wait
        // for two windows.
        self.queued.fetch_add(1, Ordering::SeqCst);
        let _queued = Dequeue(&self.queued);
        let Ok(turn) = tokio::time::timeout_at(deadline, self.queue.lock()).await else {
            return Err(BuddyError::RateLimited {
                retry_after: self.retry_hint(),
            });
        };
        loop {
            let answered = self.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            let now = Instant::now();
            match self.decide(now, deadline) {
                Decision::Go { at, window, tags } => {
                    drop(turn);
                    return Ok(self.permit_at(at, window, tags).await);
                }
                Decision::TooLate(at) | Decision::WaitUntil(at) if at > deadline => {
                    return Err(rate_limited(at, now))
                }
                Decision::TooLate(at) | Decision::WaitUntil(at) => {
                    let jitter = self.jitter().min(deadline.saturating_duration_since(at));
                    tokio::time::sleep_until(at + jitter).await;
                }
                Decision::WaitForAnswer => {
                    if tokio::time::timeout_at(deadline, answered).await.is_err() {
                        return Err(BuddyError::RateLimited {
                            retry_after: self.retry_hint(),
                        });
                    }
                }
            }
        }
    }

    /// A reserved unit, handed out at `at`. Built before the sleep so a cancelled
    /// caller hands its unit back.
    async fn permit_at(self: &Arc<Self>, at: Instant, window: Option<i64>, tags: Tags) -> Permit {
        let permit = Permit {
            governor: Arc::clone(self),
            window,
            sent: false,
            sent_at: None,
            seq: None,
            tags,
            done: false,
        };
        // Tokio's timer rounds up to the next millisecond: a turn that is already due
        // must not sleep, or every call pays ~1 ms.
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
        permit
    }

    /// For a caller giving up in the queue: until the window renews, if it is spent.
    fn retry_hint(&self) -> Duration {
        let now = Instant::now();
        self.lock()
            .window
            .map(|w| w.renew_at.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
            .unwrap_or(self.config.reset_margin)
    }

    fn jitter(&self) -> Duration {
        let max = self.config.reset_jitter.as_millis() as u64;
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(rand::thread_rng().gen_range(0..=max))
    }

    fn decide(&self, now: Instant, deadline: Instant) -> Decision {
        let mut st = self.lock();
        if let Some(until) = st.blocked_until {
            if now < until {
                return Decision::WaitUntil(until);
            }
            st.blocked_until = None;
        }
        if let Some(w) = st.window.filter(|w| now >= w.renew_at) {
            st.window = None;
            st.renewing = true;
            st.early_until = (w.sure_renew_at > w.renew_at).then_some(w.sure_renew_at);
        }
        if st.early_until.is_some_and(|until| now >= until) {
            st.early_until = None;
        }
        let reserve = st.learned_budget * u64::from(self.config.reserve_percent) / 100;
        let free_above = st.learned_budget * u64::from(self.config.free_percent) / 100;
        let tat = st.tat;
        let unanswered = !st.sent.is_empty();
        let free_burst = st.free_burst;
        let early = st.early_until.is_some();
        let Some(window) = st.window.as_mut() else {
            let limit = if st.renewing { 1 } else { st.unknown_burst };
            if st.unknown_in_flight < limit {
                st.unknown_in_flight += 1;
                st.in_flight += 1;
                return Decision::Go {
                    at: now,
                    window: None,
                    tags: Tags {
                        early,
                        blind: true,
                        ..Tags::default()
                    },
                };
            }
            return Decision::WaitForAnswer;
        };
        let available = window.remaining - reserve as i64;
        if available <= 0 {
            return Decision::WaitUntil(window.renew_at);
        }
        // Calls in flight on other connections may reach Buddy in another order than
        // they were sent, so the estimate may be one high: the window's last unit goes
        // only once every call sent before it is answered.
        if available == 1 && unanswered {
            return Decision::WaitForAnswer;
        }
        // A free burst only while the reset is far: in a short window (60 per minute)
        // a burst leaves the last quarter spread so thin that steady callers queued
        // behind it miss their deadlines, and spacing costs each call little anyway.
        let reset_is_far =
            window.reset_at.saturating_duration_since(now) > self.config.free_burst_horizon;
        if free_burst && available > free_above as i64 && reset_is_far {
            window.remaining -= 1;
            let reset_unix = window.reset_unix;
            st.in_flight += 1;
            return Decision::Go {
                at: now,
                window: Some(reset_unix),
                tags: Tags {
                    early,
                    free: true,
                    ..Tags::default()
                },
            };
        }
        // Spread what is left evenly over [base, reset]; run ahead by at most `tau`.
        let base = tat.max(now).min(window.reset_at.max(now));
        let left = window.reset_at.saturating_duration_since(base);
        let interval = left / available.min(i64::from(u32::MAX)) as u32;
        let tau = window.reset_at.saturating_duration_since(now)
            * u32::from(self.config.burst_percent)
            / 100;
        let at = base.checked_sub(tau).unwrap_or(now).max(now);
        if at > deadline {
            return Decision::TooLate(at);
        }
        window.remaining -= 1;
        let reset_unix = window.reset_unix;
        st.tat = base + interval;
        st.in_flight += 1;
        Decision::Go {
            at,
            window: Some(reset_unix),
            tags: Tags {
                early: st.early_until.is_some_and(|until| at < until),
                ..Tags::default()
            },
        }
    }

    fn release(&self, window: Option<i64>, seq: Option<u64>, unsent: bool) {
        let mut st = self.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        if let Some(seq) = seq {
            st.sent.remove(&seq);
        }
        if window.is_none() {
            st.unknown_in_flight = st.unknown_in_flight.saturating_sub(1);
        }
        if unsent {
            if let (Some(w), Some(reset)) = (st.window.as_mut(), window) {
                if w.reset_unix == reset {
                    w.remaining += 1;
                }
            }
        }
        drop(st);
        self.answered.notify_waiters();
    }

    /// Learns from Buddy's answer to the call that held `permit`. `rate_limited`: Buddy
    /// refused it for the budget (429, or 403 "Rate limit exceeded."); `retry_after`:
    /// its `Retry-After`, if any.
    pub fn observe(
        &self,
        mut permit: Permit,
        headers: &RateLimitHeaders,
        rate_limited: bool,
        retry_after: Option<Duration>,
    ) {
        permit.done = true;
        let now = Instant::now();
        let our_unix_now = self.clock.unix_now();
        let mut st = self.lock();
        if rate_limited {
            self.switch_off(&mut st, permit.tags);
        }
        let sent_ago = permit
            .sent_at
            .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        let offset = buddy_offset(&mut st, headers.date, our_unix_now - sent_ago, our_unix_now);
        // Buddy's clock now, as far as we can tell.
        let unix_now = our_unix_now + offset;
        st.in_flight = st.in_flight.saturating_sub(1);
        if let Some(seq) = permit.seq {
            st.sent.remove(&seq);
        }
        if permit.window.is_none() {
            st.unknown_in_flight = st.unknown_in_flight.saturating_sub(1);
        }
        if let (Some(shared), Some(reset), false) = (&self.shared, headers.reset, rate_limited) {
            // A call sent before its window was known, or one Buddy counted in the next
            // window, spends a unit the shared count has not seen.
            if permit.window != Some(reset) {
                let shared = shared.clone();
                tokio::spawn(async move { shared.budget.count(&shared.account, reset).await });
            }
        }
        if let (Some(remaining), Some(reset_unix)) = (headers.remaining, headers.reset) {
            st.renewing = false;
            // Our request opened this window if it left one below the budget of the
            // windows before (answers may arrive in any order, so any answer of the
            // window may be the one).
            let new_window = st.window.is_none_or(|w| reset_unix > w.reset_unix);
            let budget_before = if new_window {
                st.learned_budget
            } else {
                st.budget_before
            };
            let opened_window =
                !rate_limited && budget_before > 0 && remaining.saturating_add(1) >= budget_before;
            if !rate_limited {
                st.learned_budget = st.learned_budget.max(remaining.saturating_add(1));
            }
            // Not yet counted in `remaining`: our reserved calls not sent yet, and
            // those sent after this one (those sent before it reached Buddy first).
            let uncounted = {
                let unsent = st.in_flight.saturating_sub(st.sent.len() as u64);
                let later = match permit.seq {
                    Some(seq) => st.sent.range(seq + 1..).count(),
                    None => st.sent.len(),
                };
                unsent + later as u64
            };
            let candidate = if rate_limited {
                0
            } else {
                (remaining.min(i64::MAX as u64) as i64) - uncounted as i64
            };
            let sent_unix = permit.sent_at.map(|_| unix_now - sent_ago);
            // Not with a clock known only to the second from `Date`.
            let phase = sent_unix
                .filter(|sent| {
                    st.phase_learning
                        && offset == 0.0
                        && opened_window
                        && sent.floor() == unix_now.floor()
                })
                .map(|_| unix_now.fract() + PHASE_SLACK);
            let at_unix = |unix: f64| now + Duration::from_secs_f64((unix - unix_now).max(0.0));
            let fresh = match phase {
                Some(fract) => {
                    let renew_at = at_unix(reset_unix as f64 + fract);
                    Window {
                        reset_unix,
                        reset_at: renew_at,
                        renew_at,
                        remaining: candidate,
                        phased: true,
                        sure_renew_at: at_unix(reset_unix as f64) + self.config.reset_margin,
                    }
                }
                None => {
                    let reset_at = at_unix(reset_unix as f64);
                    Window {
                        reset_unix,
                        reset_at,
                        renew_at: reset_at + self.config.reset_margin,
                        remaining: candidate,
                        phased: false,
                        sure_renew_at: reset_at + self.config.reset_margin,
                    }
                }
            };
            match st.window.as_mut() {
                // An answer from a window we already left behind.
                Some(w) if reset_unix < w.reset_unix => {}
                Some(w) if reset_unix == w.reset_unix => {
                    w.remaining = w.remaining.min(candidate);
                    if rate_limited {
                        w.renew_at = w.renew_at.max(fresh.renew_at);
                        w.phased = false;
                    } else if fresh.phased && !w.phased {
                        // The opener's answer came after another one of the window.
                        w.renew_at = w.renew_at.min(fresh.renew_at);
                        w.phased = true;
                    }
                }
                _ => {
                    st.window = Some(fresh);
                    st.budget_before = budget_before;
                    // Turns already handed out (up to `tat`) go out in this window
                    // and are already taken off its `remaining`; starting the
                    // schedule at `now` would spread what is left over time they
                    // occupy, and with 20 queued callers stretch each turn by half.
                    st.tat = st.tat.max(now);
                }
            }
        }
        if rate_limited {
            // `Retry-After` is whole seconds and may be truncated like the reset, and a
            // reset already past (Buddy's window outlasted it) must not let the next
            // call go at once: at least one margin, then one call alone.
            let margin = self.config.reset_margin;
            let until = now + retry_after.map_or(margin, |after| after + margin);
            st.blocked_until = Some(st.blocked_until.map_or(until, |b| b.max(until)));
            st.renewing = true;
        }
        drop(st);
        self.answered.notify_waiters();
    }

    /// A throttled call turns off, for good, each optimisation that let it out.
    fn switch_off(&self, st: &mut State, tags: Tags) {
        if tags.early && st.phase_learning {
            st.phase_learning = false;
            tracing::info!("rate governor: a call sent on the learned reset phase was throttled; margin from now on");
        }
        if tags.free && st.free_burst {
            st.free_burst = false;
            tracing::info!(
                "rate governor: a call of a free burst was throttled; spacing from now on"
            );
        }
        if tags.blind {
            st.unknown_burst = 1;
        }
    }
}

/// The governors of one process, one per account, keyed by base URL and a fingerprint
/// of the token (never the token itself), so every client of an account shares one.
#[derive(Debug, Default)]
pub struct GovernorRegistry {
    config: GovernorConfig,
    governors: Mutex<HashMap<(String, String), Arc<Governor>>>,
    shared: Option<Arc<dyn SharedBudget>>,
}

impl GovernorRegistry {
    pub fn new(config: GovernorConfig) -> Self {
        Self::with_shared(config, None)
    }

    /// Governors that also take every unit from `shared` (see [`SharedBudget`]).
    pub fn with_shared(config: GovernorConfig, shared: Option<Arc<dyn SharedBudget>>) -> Self {
        Self {
            config,
            governors: Mutex::default(),
            shared,
        }
    }

    /// The account's governor, created on first use. Creating one forgets idle
    /// governors nobody else holds, so rotated tokens do not accumulate.
    pub fn governor(&self, base_url: &str, token: &str) -> Arc<Governor> {
        let key = (base_url.to_owned(), token_fingerprint(token));
        let mut map = self.governors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = map.get(&key) {
            return Arc::clone(g);
        }
        map.retain(|_, g| Arc::strong_count(g) > 1 || !g.is_idle());
        let shared = self.shared.as_ref().map(|budget| SharedLink {
            budget: Arc::clone(budget),
            account: token_fingerprint(&format!("{base_url}\n{token}")),
        });
        let g = Governor::with_parts(self.config, Arc::new(SystemClock), shared);
        map.insert(key, Arc::clone(&g));
        g
    }

    pub fn len(&self) -> usize {
        self.governors.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// First 16 hex digits of the token's SHA-256: tells accounts apart without keeping
/// the token in another place.
pub fn token_fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_700_000_000.0;

    fn cfg() -> GovernorConfig {
        GovernorConfig {
            reset_jitter: Duration::ZERO,
            burst_percent: 0,
            free_percent: 0,
            reserve_percent: 0,
            learn_reset_phase: false,
            ..GovernorConfig::default()
        }
    }

    fn governor(config: GovernorConfig) -> Arc<Governor> {
        Governor::with_clock(config, Arc::new(TokioClock::starting_at(T0)))
    }

    fn headers(remaining: u64, reset: i64) -> RateLimitHeaders {
        RateLimitHeaders {
            limit: Some(1),
            remaining: Some(remaining),
            reset: Some(reset),
            date: None,
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    /// Sends one call and answers it with `remaining`/`reset`; returns when it went out.
    async fn call(g: &Arc<Governor>, remaining: u64, reset: i64) -> Duration {
        let start = Instant::now();
        let mut p = g.acquire(far()).await.unwrap();
        let waited = start.elapsed();
        p.mark_sent();
        g.observe(p, &headers(remaining, reset), false, None);
        waited
    }

    #[tokio::test(start_paused = true)]
    async fn spreads_the_remaining_budget_evenly_until_the_reset() {
        let g = governor(cfg());
        let reset = T0 as i64 + 10;
        // The first call is free and teaches 10 left for 10 s: one per second.
        assert_eq!(call(&g, 10, reset).await, Duration::ZERO);
        let t0 = Instant::now();
        let mut sent = Vec::new();
        for left in (0..10).rev() {
            call(&g, left, reset).await;
            sent.push(t0.elapsed().as_millis());
        }
        assert_eq!(
            sent,
            vec![0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000]
        );
        // Spent: the next call waits for the reset plus the 1 s margin.
        let waited = call(&g, 9, reset + 10).await;
        assert_eq!(t0.elapsed(), Duration::from_secs(11));
        assert_eq!(waited, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_while_the_budget_is_ample_then_spacing_starts() {
        let g = governor(GovernorConfig {
            free_percent: 25,
            ..cfg()
        });
        let reset = T0 as i64 + 1000;
        // Teaches a budget of 100 for 1,000 s.
        call(&g, 99, reset).await;
        let t0 = Instant::now();
        // Down to 25 left, calls are not spaced at all.
        for left in (25..99).rev() {
            call(&g, left, reset).await;
        }
        assert_eq!(t0.elapsed(), Duration::ZERO);
        // From there on the last quarter is spread over the time left: one per 40 s.
        call(&g, 24, reset).await;
        let before = Instant::now();
        call(&g, 23, reset).await;
        assert_near(before.elapsed(), 40_000);
    }

    #[tokio::test(start_paused = true)]
    async fn no_free_burst_when_the_reset_is_near() {
        let g = governor(GovernorConfig {
            free_percent: 25,
            ..cfg()
        });
        let reset = T0 as i64 + 100;
        call(&g, 99, reset).await;
        // The reset 100 s away, within the 2 min horizon: spaced from the start, one
        // per second, not sent at once.
        let t0 = Instant::now();
        for left in (80..99).rev() {
            call(&g, left, reset).await;
        }
        assert!(
            t0.elapsed() >= Duration::from_secs(18),
            "{:?}",
            t0.elapsed()
        );
    }

    /// Within 2 ms: Unix seconds as `f64` and Tokio's millisecond timer round a little.
    fn assert_near(elapsed: Duration, expected_ms: i128) {
        let diff = elapsed.as_millis() as i128 - expected_ms;
        assert!(diff.abs() <= 2, "{elapsed:?} vs {expected_ms} ms");
    }

    /// Spends a window of `budget` reported as ending at `reset`, answering each call
    /// after `rtt`.
    async fn spend_window(g: &Arc<Governor>, budget: u64, reset: i64, rtt: Duration) {
        for left in (0..budget).rev() {
            let mut p = g.acquire(far()).await.unwrap();
            p.mark_sent();
            tokio::time::sleep(rtt).await;
            g.observe(p, &headers(left, reset), false, None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn learns_when_windows_really_renew() {
        let start = Instant::now();
        let g = governor(GovernorConfig {
            learn_reset_phase: true,
            ..cfg()
        });
        let rtt = Duration::from_millis(300);
        // First window: nothing to learn from, so reset (4 s) + 1 s margin.
        spend_window(&g, 10, T0 as i64 + 4, rtt).await;
        let mut p = g.acquire(far()).await.unwrap();
        assert_near(start.elapsed(), 5000);
        // Our call opens the next window (9 left of 10), answered 300 ms later: the
        // window renews at 9 s + 0.3 s + slack, not at 10 s.
        p.mark_sent();
        tokio::time::sleep(rtt).await;
        g.observe(p, &headers(9, T0 as i64 + 9), false, None);
        spend_window(&g, 9, T0 as i64 + 9, Duration::ZERO).await;
        drop(g.acquire(far()).await.unwrap());
        assert_near(start.elapsed(), 9350);
        // A 429 in such a window turns the learning off.
        let mut p = g.acquire(far()).await.unwrap();
        p.mark_sent();
        g.observe(p, &headers(9, T0 as i64 + 14), false, None);
        let p = g.acquire(far()).await.unwrap();
        g.observe(p, &headers(0, T0 as i64 + 14), true, None);
        drop(g.acquire(far()).await.unwrap());
        assert_near(start.elapsed(), 15000);
        assert!(!g.lock().phase_learning);
    }

    #[tokio::test(start_paused = true)]
    async fn learns_the_phase_from_the_opener_answering_second() {
        let start = Instant::now();
        let g = governor(GovernorConfig {
            learn_reset_phase: true,
            ..cfg()
        });
        // A budget of 10, the reset reported at 4 s (rounded up: Buddy's window really
        // ends at 3.5 s).
        call(&g, 9, T0 as i64 + 4).await;
        tokio::time::sleep(Duration::from_millis(3500)).await;
        // Two calls open the next window; the opener (9 left) answers last.
        let mut opener = g.acquire(far()).await.unwrap();
        opener.mark_sent();
        let mut other = g.acquire(far()).await.unwrap();
        other.mark_sent();
        tokio::time::sleep_until(start + Duration::from_millis(3900)).await;
        g.observe(other, &headers(8, T0 as i64 + 8), false, None);
        g.observe(opener, &headers(9, T0 as i64 + 8), false, None);
        // Sent before the other, the opener was counted in its answer: 8 left.
        assert_eq!(g.snapshot().remaining, Some(8));
        spend_window(&g, 8, T0 as i64 + 8, Duration::ZERO).await;
        drop(g.acquire(far()).await.unwrap());
        assert_near(start.elapsed(), 8950);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_arrival_order_after_a_reset() {
        let g = governor(GovernorConfig {
            reset_jitter: Duration::from_millis(500),
            unknown_burst: 1,
            ..cfg()
        });
        call(&g, 0, T0 as i64 + 5).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for id in 0..8u64 {
            let (g, order) = (Arc::clone(&g), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let mut p = g.acquire(far()).await.unwrap();
                order.lock().unwrap().push(id);
                p.mark_sent();
                g.observe(p, &headers(100 - id, T0 as i64 + 100), false, None);
            }));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_reserve_and_never_overspend() {
        let g = governor(cfg());
        call(&g, 3, T0 as i64 + 6).await;
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let g = Arc::clone(&g);
            tasks.push(tokio::spawn(async move {
                // Permits are held (never answered) so nothing is learned meanwhile.
                let p = g.acquire(t0 + Duration::from_secs(10)).await.ok()?;
                Some((t0.elapsed(), p))
            }));
        }
        let mut times = Vec::new();
        let mut held = Vec::new();
        for t in tasks {
            if let Some((at, p)) = t.await.unwrap() {
                times.push(at);
                held.push(p);
            }
        }
        times.sort();
        // 3 left for 6 s: one every 2 s, nobody else before the renewal at 7 s.
        assert_eq!(
            &times[..3],
            &[0, 2, 4].map(Duration::from_secs),
            "{times:?}"
        );
        // After the renewal one call goes alone until an answer tells the new window
        // (a wrong guess of the renewal costs one throttled call); the rest give up at
        // their deadline.
        assert_eq!(times.len(), 3 + 1, "{times:?}");
        assert!(times[3..].iter().all(|t| *t == Duration::from_secs(7)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_handed_out_ahead_is_revoked_when_the_budget_turns_out_spent() {
        let g = governor(cfg());
        // 10 left for 10 s: one turn per second.
        call(&g, 10, T0 as i64 + 10).await;
        let t0 = Instant::now();
        let mut first = g.acquire(far()).await.unwrap();
        let g2 = Arc::clone(&g);
        // Handed the turn at 1 s, and waiting for it.
        let waiter = tokio::spawn(async move {
            drop(g2.acquire(far()).await.unwrap());
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Another consumer spent the window: the first call's answer says 0 left.
        first.mark_sent();
        g.observe(first, &headers(0, T0 as i64 + 10), false, None);
        // The turn at 1 s is not used; the caller goes at the renewal (10 s + 1 s).
        assert_eq!(waiter.await.unwrap() - t0, Duration::from_secs(11));
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_optimisation_switches_itself_off() {
        let g = governor(GovernorConfig {
            free_percent: 25,
            ..cfg()
        });
        // A fresh 1,000 per hour: free bursts.
        call(&g, 999, T0 as i64 + 3600).await;
        let mut p = g.acquire(far()).await.unwrap();
        assert!(p.tags.free);
        p.mark_sent();
        // Someone else spent the budget: Buddy refuses the burst's call.
        g.observe(
            p,
            &headers(0, T0 as i64 + 3600),
            true,
            Some(Duration::from_secs(5)),
        );
        assert!(!g.lock().free_burst);
        // Blind calls too: a throttled one leaves one call at a time while nothing is known.
        let g = governor(cfg());
        let mut p = g.acquire(far()).await.unwrap();
        assert!(p.tags.blind);
        p.mark_sent();
        g.observe(
            p,
            &RateLimitHeaders::default(),
            true,
            Some(Duration::from_secs(1)),
        );
        assert_eq!(g.lock().unknown_burst, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn buddys_date_places_the_reset_when_its_clock_is_off_ours() {
        let g = governor(cfg());
        // Buddy's clock 30 s behind ours: its reset 10 s ahead of *its* now.
        let buddy_now = T0 as i64 - 30;
        let headers = |remaining| RateLimitHeaders {
            date: Some(buddy_now),
            ..headers(remaining, buddy_now + 10)
        };
        let mut p = g.acquire(far()).await.unwrap();
        p.mark_sent();
        g.observe(p, &headers(0), false, None);
        // Spent until 10 s from now (+ the margin, + up to a second for `Date`'s
        // resolution), not at once as a reset 20 s in our past would say.
        let t0 = Instant::now();
        drop(g.acquire(far()).await.unwrap());
        let waited = t0.elapsed();
        assert!(
            (Duration::from_secs(11)..=Duration::from_secs(12)).contains(&waited),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_may_run_ahead_of_the_schedule() {
        let g = governor(GovernorConfig {
            burst_percent: 10,
            ..cfg()
        });
        call(&g, 100, T0 as i64 + 100).await;
        // 10 % of 100 s is 10 s of run-ahead at one call per second: 11 go at once.
        let t0 = Instant::now();
        let mut immediate = 0;
        for left in (0..20).rev() {
            call(&g, 80 + left, T0 as i64 + 100).await;
            if t0.elapsed().is_zero() {
                immediate += 1;
            }
        }
        assert_eq!(immediate, 11);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_correct_the_estimate_downwards() {
        let start = Instant::now();
        let g = governor(cfg());
        call(&g, 50, T0 as i64 + 100).await;
        // Someone else spent the budget: the next answer says 1 left.
        call(&g, 1, T0 as i64 + 100).await;
        assert_eq!(g.snapshot().remaining, Some(1));
        // A late answer claiming more does not raise it.
        call(&g, 40, T0 as i64 + 100).await;
        assert_eq!(g.snapshot().remaining, Some(0));
        // A new window does; it starts after the old one's reset + margin.
        call(&g, 40, T0 as i64 + 200).await;
        assert_eq!(start.elapsed(), Duration::from_secs(101));
        assert_eq!(g.snapshot().remaining, Some(40));
        assert_eq!(g.snapshot().reset, Some(T0 as i64 + 200));
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_a_reserve() {
        let g = governor(GovernorConfig {
            reserve_percent: 10,
            ..cfg()
        });
        // Budget 20 learned; 10 % reserve keeps 2 units: only 2 of 4 remaining go out.
        call(&g, 19, T0 as i64 + 60).await;
        call(&g, 4, T0 as i64 + 60).await;
        let p1 = g.acquire(far()).await.unwrap();
        let p2 = g.acquire(far()).await.unwrap();
        let e = g.acquire(Instant::now() + Duration::from_secs(1)).await;
        assert!(matches!(e, Err(BuddyError::RateLimited { .. })), "{e:?}");
        drop((p1, p2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_is_rate_limited_at_once() {
        let g = governor(cfg());
        call(&g, 0, T0 as i64 + 30).await;
        let t0 = Instant::now();
        let e = g.acquire(t0 + Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(t0.elapsed(), Duration::ZERO);
        match e {
            BuddyError::RateLimited { retry_after } => {
                assert_eq!(retry_after, Duration::from_secs(31))
            }
            other => panic!("{other:?}"),
        }
        // A spacing slot past the deadline is refused the same way, and not reserved.
        let g = governor(cfg());
        call(&g, 2, T0 as i64 + 60).await;
        let _p = g.acquire(far()).await.unwrap();
        let e = g.acquire(Instant::now() + Duration::from_secs(1)).await;
        assert!(
            matches!(e, Err(BuddyError::RateLimited { retry_after }) if retry_after == Duration::from_secs(30)),
            "{e:?}"
        );
        assert_eq!(g.snapshot().remaining, Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_blocks_until_the_reset_or_retry_after() {
        let g = governor(cfg());
        let mut p = g.acquire(far()).await.unwrap();
        p.mark_sent();
        g.observe(
            p,
            &headers(0, T0 as i64 + 4),
            true,
            Some(Duration::from_secs(4)),
        );
        assert_eq!(call(&g, 9, T0 as i64 + 20).await, Duration::from_secs(5));
        // Without headers, Retry-After alone blocks.
        let g = governor(cfg());
        let p = g.acquire(far()).await.unwrap();
        g.observe(
            p,
            &RateLimitHeaders::default(),
            true,
            Some(Duration::from_secs(3)),
        );
        // Retry-After may be truncated like the reset: one margin more.
        let t0 = Instant::now();
        drop(g.acquire(far()).await.unwrap());
        assert_eq!(t0.elapsed(), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_budget_allows_a_small_burst_then_waits_for_an_answer() {
        let g = governor(cfg());
        let mut held = Vec::new();
        for _ in 0..cfg().unknown_burst {
            held.push(g.acquire(far()).await.unwrap());
        }
        let g2 = Arc::clone(&g);
        let waiter = tokio::spawn(async move { g2.acquire(far()).await.map(drop) });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let mut first = held.remove(0);
        first.mark_sent();
        g.observe(first, &headers(100, T0 as i64 + 1000), false, None);
        waiter.await.unwrap().unwrap();
        // An unsent permit hands its unit back.
        let before = g.snapshot().remaining;
        drop(g.acquire(far()).await.unwrap());
        assert_eq!(g.snapshot().remaining, before);
    }

    #[test]
    fn registry_shares_per_account_and_hides_the_token() {
        let r = GovernorRegistry::new(GovernorConfig::default());
        let a = r.governor("https://api.buddy.works", "tok-a");
        let a2 = r.governor("https://api.buddy.works", "tok-a");
        let b = r.governor("https://api.buddy.works", "tok-b");
        let c = r.governor("https://api.eu.buddy.works", "tok-a");
        assert!(Arc::ptr_eq(&a, &a2));
        assert!(!Arc::ptr_eq(&a, &b) && !Arc::ptr_eq(&a, &c));
        assert_eq!(token_fingerprint("tok-a").len(), 16);
        assert!(!format!("{r:?}").contains("tok-a"));
        drop((a, a2, b, c));
        // Idle and unheld: forgotten when the next account appears.
        r.governor("https://api.buddy.works", "tok-d");
        assert_eq!(r.len(), 1);
    }
}
