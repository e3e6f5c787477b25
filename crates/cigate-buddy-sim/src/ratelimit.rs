//! Fixed-window request budget per token, measured on the simulator clock.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::config::RateLimitSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Unix seconds at which the window resets.
    pub reset: i64,
}

#[derive(Debug)]
pub struct RateLimiter {
    pub spec: RateLimitSpec,
    windows: HashMap<String, Window>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: DateTime<Utc>,
    used: u64,
}

impl RateLimiter {
    pub fn new(spec: RateLimitSpec) -> Self {
        Self {
            spec,
            windows: HashMap::new(),
        }
    }

    /// Charges one request to `key`; a window opens on a key's first request.
    pub fn check(&mut self, key: &str, now: DateTime<Utc>) -> Verdict {
        let spec = self.spec;
        let window = self.windows.entry(key.to_string()).or_insert(Window {
            started: now,
            used: 0,
        });
        if now >= window.started + spec.window() {
            *window = Window {
                started: now,
                used: 0,
            };
        }
        let reset = (window.started + spec.window()).timestamp();
        if window.used >= spec.budget {
            return Verdict {
                allowed: false,
                limit: spec.budget,
                remaining: 0,
                reset,
            };
        }
        window.used += 1;
        Verdict {
            allowed: true,
            limit: spec.budget,
            remaining: spec.budget - window.used,
            reset,
        }
    }

    /// Current state without charging a request (for storms and control reads).
    pub fn peek(&self, key: &str, now: DateTime<Utc>) -> Verdict {
        let spec = self.spec;
        match self.windows.get(key) {
            Some(w) if now < w.started + spec.window() => Verdict {
                allowed: w.used < spec.budget,
                limit: spec.budget,
                remaining: spec.budget.saturating_sub(w.used),
                reset: (w.started + spec.window()).timestamp(),
            },
            _ => Verdict {
                allowed: true,
                limit: spec.budget,
                remaining: spec.budget,
                reset: (now + spec.window()).timestamp(),
            },
        }
    }

    pub fn set_spec(&mut self, spec: RateLimitSpec) {
        self.spec = spec;
        self.windows.clear();
    }

    pub fn reset_all(&mut self) {
        self.windows.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn counts_down_then_resets() {
        let mut rl = RateLimiter::new("3/60".parse().unwrap());
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let v: Vec<_> = (0..4).map(|_| rl.check("a", t0)).collect();
        assert_eq!(
            v.iter().map(|v| v.remaining).collect::<Vec<_>>(),
            vec![2, 1, 0, 0]
        );
        assert!(!v[3].allowed);
        assert_eq!(v[0].reset, 1_700_000_060);
        assert!(rl.check("b", t0).allowed);
        let later = rl.check("a", t0 + Duration::seconds(60));
        assert!(later.allowed);
        assert_eq!(later.remaining, 2);
    }
}
