//! The simulator's clock: wall time or manual, and always advanceable so tests
//! can move executions, token expiry and rate-limit windows without sleeping.

use chrono::{DateTime, Duration, Utc};
use parking_lot::Mutex;

use crate::config::TimeMode;

#[derive(Debug)]
pub struct Clock {
    mode: TimeMode,
    /// Manual mode: the current instant. Real mode: offset added to wall time.
    manual_now: Mutex<DateTime<Utc>>,
    offset: Mutex<Duration>,
}

impl Clock {
    pub fn new(mode: TimeMode) -> Self {
        // Manual time starts on a whole second so header values are exact.
        let start = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_else(Utc::now);
        Self {
            mode,
            manual_now: Mutex::new(start),
            offset: Mutex::new(Duration::zero()),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self.mode {
            TimeMode::Manual => *self.manual_now.lock(),
            TimeMode::Real => Utc::now() + *self.offset.lock(),
        }
    }

    pub fn advance(&self, by: Duration) {
        match self.mode {
            TimeMode::Manual => *self.manual_now.lock() += by,
            TimeMode::Real => *self.offset.lock() += by,
        }
    }
}

/// Buddy's date format: ISO-8601 UTC with milliseconds and a `Z`.
pub fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Parses the date forms Buddy accepts (0–3 fractional digits, `Z` or offset).
pub fn parse_iso(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}
