//! cigate's own request limits per API token and per integrated account, so one caller
//! cannot starve the others (or spend an account's Buddy budget for everyone).
//!
//! Each key is metered with GCRA (the generic cell rate algorithm): one timestamp per
//! key, a burst of the whole budget, then one request per `window / budget`. The state
//! lives in this process: with several instances each enforces the limit on its own
//! share of the traffic, so the effective limit is up to `instances ×` the configured
//! one (set it accordingly).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{retry_after_secs, ApiError};

/// `budget/window_seconds`, e.g. `600/60`; `off` disables the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub budget: u32,
    pub window: Duration,
}

impl FromStr for RateSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not `requests/seconds` (e.g. `600/60`)");
        let (budget, window) = s.trim().split_once('/').ok_or_else(bad)?;
        let budget: u32 = budget.trim().parse().map_err(|_| bad())?;
        let window: f64 = window.trim().parse().map_err(|_| bad())?;
        if budget == 0 || !window.is_finite() || window <= 0.0 {
            return Err(bad());
        }
        Ok(Self {
            budget,
            window: Duration::from_secs_f64(window),
        })
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.budget, self.window.as_secs_f64())
    }
}

/// A limit setting as configured: `budget/window_seconds`, or `off`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitSetting(pub Option<RateSpec>);

impl FromStr for LimitSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "off" | "none" | "0" => Ok(Self(None)),
            other => other.parse().map(|spec| Self(Some(spec))),
        }
    }
}

impl fmt::Display for LimitSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(spec) => spec.fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// One GCRA meter over many keys.
#[derive(Debug)]
struct Meter {
    interval: Duration,
    tolerance: Duration,
    /// Theoretical arrival time per key: the meter is full while it is ahead of now.
    tat: Mutex<HashMap<String, Instant>>,
}

/// Entries kept before idle ones are swept.
const SWEEP_AT: usize = 10_000;

impl Meter {
    fn new(spec: RateSpec) -> Self {
        let interval = spec.window / spec.budget;
        Self {
            interval,
            tolerance: spec.window.saturating_sub(interval),
            tat: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` and one unit spent, or how long until the next unit is free.
    fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut map = self
            .tat
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.len() >= SWEEP_AT {
            map.retain(|_, tat| *tat > now);
        }
        let tat = map.get(key).copied().unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        let next = tat + self.interval;
        match map.get_mut(key) {
            Some(slot) => *slot = next,
            None => {
                map.insert(key.to_owned(), next);
            }
        }
        Ok(())
    }
}

/// The configured limits; a missing one costs nothing on the request path.
#[derive(Debug, Default)]
pub struct Limits {
    token: Option<Meter>,
    account: Option<Meter>,
    in_flight: InFlight,
}

/// At most `max` calls per account at Buddy at once; the rest queue (until
/// their deadline). Bounds the upstream connections, and so the memory, one busy
/// account can take: HTTP/1.1 needs one connection per call in flight.
#[derive(Debug, Default)]
struct InFlight {
    max: usize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A held slot of the account's in-flight cap; released on drop.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Limits {
    /// `max_in_flight`: calls per account at Buddy at once (0 = unbounded).
    pub fn new(token: LimitSetting, account: LimitSetting, max_in_flight: usize) -> Self {
        Self {
            token: token.0.map(Meter::new),
            account: account.0.map(Meter::new),
            in_flight: InFlight {
                max: max_in_flight,
                slots: Mutex::new(HashMap::new()),
            },
        }
    }

    /// Waits for one of the account's in-flight slots, until `deadline`; past it the
    /// call is refused with 429 (the account is saturated, not failing).
    pub async fn slot(&self, account_id: &str, deadline: Instant) -> Result<Slot, ApiError> {
        if self.in_flight.max == 0 {
            return Ok(Slot(None));
        }
        let semaphore = {
            let mut slots = self
                .in_flight
                .slots
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match slots.get(account_id) {
                Some(semaphore) => Arc::clone(semaphore),
                None => {
                    let semaphore = Arc::new(Semaphore::new(self.in_flight.max));
                    slots.insert(account_id.to_owned(), Arc::clone(&semaphore));
                    semaphore
                }
            }
        };
        if let Ok(permit) = Arc::clone(&semaphore).try_acquire_owned() {
            return Ok(Slot(Some(permit)));
        }
        match tokio::time::timeout_at(deadline.into(), semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot(Some(permit))),
            _ => Err(ApiError::TooManyRequests {
                scope: "integrated account (calls in flight)",
                retry_after_secs: 1,
            }),
        }
    }

    /// Spends one request of the API token's budget.
    pub fn check_token(&self, token_id: &str) -> Result<(), ApiError> {
        check(self.token.as_ref(), "API token", token_id)
    }

    /// Spends one request of the integrated account's budget (keyed by account id,
    /// which is unique across environments).
    pub fn check_account(&self, account_id: &str) -> Result<(), ApiError> {
        check(self.account.as_ref(), "integrated account", account_id)
    }
}

fn check(meter: Option<&Meter>, scope: &'static str, key: &str) -> Result<(), ApiError> {
    let Some(meter) = meter else { return Ok(()) };
    meter
        .check(key, Instant::now())
        .map_err(|wait| ApiError::TooManyRequests {
            scope,
            retry_after_secs: retry_after_secs(wait),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!(
            "600/60".parse::<RateSpec>().unwrap(),
            RateSpec {
                budget: 600,
                window: Duration::from_secs(60)
            }
        );
        assert_eq!("off".parse::<LimitSetting>().unwrap(), LimitSetting(None));
        assert_eq!(
            "5/1".parse::<LimitSetting>().unwrap().to_string(),
            "5/1",
            "round-trips"
        );
        for bad in ["", "10", "0/60", "10/0", "x/1", "10/-1", "10/inf"] {
            assert!(bad.parse::<RateSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn allows_the_burst_then_one_per_interval() {
        let meter = Meter::new("3/3".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(meter.check("a", t0).is_ok());
        }
        let wait = meter.check("a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // Other keys have their own budget.
        assert!(meter.check("b", t0).is_ok());
        assert!(meter.check("a", t0 + Duration::from_millis(999)).is_err());
        assert!(meter.check("a", t0 + Duration::from_secs(1)).is_ok());
        assert!(meter.check("a", t0 + Duration::from_secs(1)).is_err());
        // After a full window of silence the whole burst is back.
        let later = t0 + Duration::from_secs(10);
        for _ in 0..3 {
            assert!(meter.check("a", later).is_ok());
        }
        assert!(meter.check("a", later).is_err());
    }

    #[test]
    fn refusals_say_when_to_retry() {
        let limits = Limits::new("1/30".parse().unwrap(), LimitSetting(None), 0);
        assert!(limits.check_token("t").is_ok());
        match limits.check_token("t") {
            Err(ApiError::TooManyRequests {
                retry_after_secs, ..
            }) => assert!((29..=30).contains(&retry_after_secs)),
            other => panic!("{other:?}"),
        }
        assert!(limits.check_account("any").is_ok(), "no account limit set");
    }

    #[tokio::test]
    async fn in_flight_calls_are_capped_per_account() {
        let limits = Limits::new(LimitSetting(None), LimitSetting(None), 2);
        let soon = Instant::now() + Duration::from_millis(20);
        let a = limits.slot("acc", soon).await.unwrap();
        let _b = limits.slot("acc", soon).await.unwrap();
        assert!(limits.slot("other", soon).await.is_ok(), "per account");
        assert!(matches!(
            limits.slot("acc", soon).await,
            Err(ApiError::TooManyRequests { .. })
        ));
        drop(a);
        assert!(limits.slot("acc", Instant::now()).await.is_ok());
    }
}
