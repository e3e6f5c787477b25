//! Fixed-window request budget per token, measured on the simulator clock, with the
//! window semantics of [`RateLimitPolicy`] (Buddy's docs leave them open).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::config::{RateLimitPolicy, WindowStart};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// When the window ends (Unix milliseconds); written out by the policy's
    /// [`crate::config::ResetFormat`].
    pub end_millis: i64,
}

impl Verdict {
    /// `X-Rate-Limit-Reset` of this verdict.
    pub fn reset_header(&self, policy: &RateLimitPolicy) -> String {
        policy.reset.reset_header(self.end_millis)
    }

    /// `Retry-After` (whole seconds, at least 1) at `now`.
    pub fn retry_after(&self, policy: &RateLimitPolicy, now: DateTime<Utc>) -> i64 {
        policy
            .reset
            .retry_after(self.end_millis - now.timestamp_millis())
    }
}

#[derive(Debug)]
pub struct RateLimiter {
    pub policy: RateLimitPolicy,
    windows: HashMap<String, Window>,
    /// Requests refused for the budget since the last reset of the counters.
    throttled: u64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: DateTime<Utc>,
    used: u64,
}

impl RateLimiter {
    pub fn new(policy: RateLimitPolicy) -> Self {
        Self {
            policy,
            windows: HashMap::new(),
            throttled: 0,
        }
    }

    /// Where a window holding `now` starts under the policy.
    fn opening(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self.policy.window {
            WindowStart::FirstRequest => now,
            WindowStart::Clock => {
                let len = self.policy.spec.window().num_milliseconds().max(1);
                let start = now.timestamp_millis().div_euclid(len) * len;
                DateTime::from_timestamp_millis(start).unwrap_or(now)
            }
        }
    }

    /// Charges one request to `key`.
    pub fn check(&mut self, key: &str, now: DateTime<Utc>) -> Verdict {
        let spec = self.policy.spec;
        let opening = self.opening(now);
        let window = self.windows.entry(key.to_string()).or_insert(Window {
            started: opening,
            used: 0,
        });
        if now >= window.started + spec.window() {
            *window = Window {
                started: opening,
                used: 0,
            };
        }
        let allowed = window.used < spec.budget;
        if allowed || self.policy.count_throttled {
            window.used += 1;
        }
        let verdict = Verdict {
            allowed,
            limit: spec.budget,
            remaining: spec.budget.saturating_sub(window.used),
            end_millis: (window.started + spec.window()).timestamp_millis(),
        };
        if !allowed {
            self.throttled += 1;
        }
        verdict
    }

    /// Current state without charging a request (for storms and control reads).
    pub fn peek(&self, key: &str, now: DateTime<Utc>) -> Verdict {
        let spec = self.policy.spec;
        match self.windows.get(key) {
            Some(w) if now < w.started + spec.window() => Verdict {
                allowed: w.used < spec.budget,
                limit: spec.budget,
                remaining: spec.budget.saturating_sub(w.used),
                end_millis: (w.started + spec.window()).timestamp_millis(),
            },
            _ => Verdict {
                allowed: true,
                limit: spec.budget,
                remaining: spec.budget,
                end_millis: (self.opening(now) + spec.window()).timestamp_millis(),
            },
        }
    }

    /// Replaces the policy; every window starts afresh.
    pub fn set_policy(&mut self, policy: RateLimitPolicy) {
        self.policy = policy;
        self.windows.clear();
    }

    pub fn reset_all(&mut self) {
        self.windows.clear();
    }

    pub fn throttled(&self) -> u64 {
        self.throttled
    }

    pub fn reset_counters(&mut self) {
        self.throttled = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RateLimitStatus, ResetFormat};
    use chrono::Duration;

    fn limiter(spec: &str, window: WindowStart, reset: ResetFormat, counted: bool) -> RateLimiter {
        RateLimiter::new(RateLimitPolicy {
            spec: spec.parse().unwrap(),
            window,
            reset,
            count_throttled: counted,
            status: RateLimitStatus::TooManyRequests,
        })
    }

    fn at(millis: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + millis).unwrap()
    }

    #[test]
    fn counts_down_then_resets() {
        let mut rl = limiter("3/60", WindowStart::FirstRequest, ResetFormat::Floor, false);
        let t0 = at(0);
        let v: Vec<_> = (0..4).map(|_| rl.check("a", t0)).collect();
        assert_eq!(
            v.iter().map(|v| v.remaining).collect::<Vec<_>>(),
            vec![2, 1, 0, 0]
        );
        assert!(!v[3].allowed);
        assert_eq!(v[0].reset_header(&rl.policy), "1700000060");
        assert_eq!(rl.throttled(), 1);
        assert!(rl.check("b", t0).allowed);
        let later = rl.check("a", t0 + Duration::seconds(60));
        assert!(later.allowed);
        assert_eq!(later.remaining, 2);
    }

    #[test]
    fn a_first_request_window_ends_a_window_after_it_and_the_reset_is_written_as_asked() {
        let mut rl = limiter("2/10", WindowStart::FirstRequest, ResetFormat::Floor, false);
        let v = rl.check("a", at(2_700));
        assert_eq!(v.end_millis, at(12_700).timestamp_millis());
        let p = |reset| RateLimitPolicy { reset, ..rl.policy };
        assert_eq!(v.reset_header(&p(ResetFormat::Floor)), "1700000012");
        assert_eq!(v.reset_header(&p(ResetFormat::Round)), "1700000013");
        assert_eq!(v.reset_header(&p(ResetFormat::Ceil)), "1700000013");
        assert_eq!(v.reset_header(&p(ResetFormat::Exact)), "1700000012.700");
        // 1.7 s before the end.
        assert_eq!(v.retry_after(&p(ResetFormat::Floor), at(11_000)), 1);
        assert_eq!(v.retry_after(&p(ResetFormat::Round), at(11_000)), 2);
        assert_eq!(v.retry_after(&p(ResetFormat::Exact), at(11_000)), 2);
        assert_eq!(v.retry_after(&p(ResetFormat::Floor), at(12_600)), 1);
        // Still the same window at 12.6 s, a new one from 12.7 s.
        rl.check("a", at(12_600));
        assert!(!rl.check("a", at(12_699)).allowed);
        let next = rl.check("a", at(12_700));
        assert!(next.allowed);
        assert_eq!(next.end_millis, at(22_700).timestamp_millis());
    }

    #[test]
    fn clock_windows_are_aligned_and_throttles_may_count() {
        let mut rl = limiter("1/10", WindowStart::Clock, ResetFormat::Floor, true);
        let v = rl.check("a", at(2_700));
        assert_eq!(v.end_millis, at(10_000).timestamp_millis());
        assert!(!rl.check("a", at(9_999)).allowed);
        assert_eq!(rl.peek("a", at(9_999)).remaining, 0);
        assert!(rl.check("a", at(10_000)).allowed);
        assert_eq!(rl.throttled(), 1);
        rl.reset_counters();
        assert_eq!(rl.throttled(), 0);
    }
}
