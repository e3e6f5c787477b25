//! Injected faults, consumed one request at a time in the order they were added.

use serde::{Deserialize, Serialize};

/// A fault applied to the next `count` matching requests.
///
/// JSON form: `{"kind":"status","status":503,"count":3,"path":"/executions","method":"GET"}`;
/// kinds: `status`, `latency` (with `ms`), `reset`, `rate_limit`, `malformed_json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultSpec {
    #[serde(flatten)]
    pub kind: FaultKind,
    #[serde(default = "one")]
    pub count: u32,
    /// Only requests whose path contains this string.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this status (e.g. 500, 502, 503) and Buddy's error body.
    Status { status: u16 },
    /// Delay the response by `ms` milliseconds, then answer normally.
    Latency { ms: u64 },
    /// Drop the connection without sending a response.
    Reset,
    /// Answer normally but end the connection halfway through the body (the status
    /// and headers were sent; the body never completes).
    ResetMidBody,
    /// Answer as if the rate-limit budget were exhausted.
    RateLimit,
    /// Answer 200 with a truncated JSON body.
    MalformedJson,
}

impl FaultSpec {
    pub fn new(kind: FaultKind, count: u32) -> Self {
        Self {
            kind,
            count,
            path: None,
            method: None,
        }
    }

    pub fn on_path(mut self, path: &str) -> Self {
        self.path = Some(path.to_string());
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.path.as_deref().is_none_or(|p| path.contains(p))
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
    }
}

#[derive(Debug, Default)]
pub struct Faults {
    queue: Vec<FaultSpec>,
}

impl Faults {
    pub fn push(&mut self, fault: FaultSpec) {
        if fault.count > 0 {
            self.queue.push(fault);
        }
    }

    pub fn clear(&mut self) {
        self.queue.clear();
    }

    pub fn pending(&self) -> Vec<FaultSpec> {
        self.queue.clone()
    }

    /// Takes one use of the first fault matching the request.
    pub fn take(&mut self, method: &str, path: &str) -> Option<FaultKind> {
        let pos = self.queue.iter().position(|f| f.matches(method, path))?;
        let fault = &mut self.queue[pos];
        let kind = fault.kind.clone();
        fault.count -= 1;
        if fault.count == 0 {
            self.queue.remove(pos);
        }
        Some(kind)
    }
}
