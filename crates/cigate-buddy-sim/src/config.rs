//! Simulator configuration: one clap struct so `cigate sim` can flatten it.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use chrono::Duration;

/// Command-line / environment configuration of the simulator.
#[derive(Debug, Clone, clap::Args)]
pub struct SimConfig {
    /// Address to bind; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0", env = "CIGATE_SIM_LISTEN")]
    pub listen: SocketAddr,
    /// Seeded data, e.g. "workspaces=1,projects=3,pipelines=2,executions=50,seed=42".
    #[arg(long, default_value = SeedSpec::DEFAULT, env = "CIGATE_SIM_SEED")]
    pub seed: SeedSpec,
    /// Requests per window per token, "budget/window_seconds".
    #[arg(long, default_value = "1000/3600", env = "CIGATE_SIM_RATE_LIMIT")]
    pub rate_limit: RateLimitSpec,
    /// Status returned when the budget is exhausted (Buddy's SDKs expect 429, some clients saw 403).
    #[arg(
        long,
        value_enum,
        default_value = "429",
        env = "CIGATE_SIM_RATE_LIMIT_STATUS"
    )]
    pub rate_limit_status: RateLimitStatus,
    /// Where a token's window starts: at its first request, or aligned to the clock.
    #[arg(
        long,
        value_enum,
        default_value = "first-request",
        env = "CIGATE_SIM_RATE_LIMIT_WINDOW"
    )]
    pub rate_limit_window: WindowStart,
    /// How the window's end is written into `X-Rate-Limit-Reset` and `Retry-After`.
    #[arg(
        long,
        value_enum,
        default_value = "floor",
        env = "CIGATE_SIM_RATE_LIMIT_RESET"
    )]
    pub rate_limit_reset: ResetFormat,
    /// Refused calls are charged to the window too.
    #[arg(long, env = "CIGATE_SIM_RATE_LIMIT_COUNT_THROTTLED")]
    pub rate_limit_count_throttled: bool,
    /// Personal access tokens registered with every scope (repeatable).
    #[arg(long = "token", env = "CIGATE_SIM_TOKENS", value_delimiter = ',')]
    pub tokens: Vec<String>,
    /// OAuth access-token lifetime in seconds; 0 issues non-expiring tokens (legacy apps).
    #[arg(long, default_value_t = 28800)]
    pub oauth_expires_in: i64,
    /// OAuth refresh-token lifetime in seconds.
    #[arg(long, default_value_t = 15_811_201)]
    pub oauth_refresh_expires_in: i64,
    /// Path prefix, e.g. "/api" to mimic a self-hosted Buddy.
    #[arg(long, default_value = "")]
    pub base_path: String,
    /// Public base URL used in `url` fields (defaults to http://<bound addr>).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Base of `html_url` fields (defaults to the public origin).
    #[arg(long)]
    pub html_url: Option<String>,
    /// `real`: the clock follows wall time (executions progress by themselves);
    /// `manual`: time only moves through `advance`.
    #[arg(long, value_enum, default_value = "real")]
    pub time: TimeMode,
    /// Seconds an execution stays ENQUEUED before it starts.
    #[arg(long, default_value_t = 1)]
    pub queue_seconds: i64,
    /// Seconds each action of a run takes.
    #[arg(long, default_value_t = 3)]
    pub action_seconds: i64,
    /// Seconds an execution stays TERMINATING after CANCEL.
    #[arg(long, default_value_t = 1)]
    pub terminate_seconds: i64,
    /// Status returned when the workspace has the API disabled.
    #[arg(long, default_value_t = 403)]
    pub api_disabled_status: u16,
    /// Header carrying the webhook secret on outgoing deliveries (the secret is also in the body).
    #[arg(long, default_value = "X-Buddy-Webhook-Secret")]
    pub webhook_secret_header: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: SeedSpec::default(),
            rate_limit: RateLimitSpec::default(),
            rate_limit_status: RateLimitStatus::TooManyRequests,
            rate_limit_window: WindowStart::FirstRequest,
            rate_limit_reset: ResetFormat::Floor,
            rate_limit_count_throttled: false,
            tokens: Vec::new(),
            oauth_expires_in: 28800,
            oauth_refresh_expires_in: 15_811_201,
            base_path: String::new(),
            public_url: None,
            html_url: None,
            time: TimeMode::Real,
            queue_seconds: 1,
            action_seconds: 3,
            terminate_seconds: 1,
            api_disabled_status: 403,
            webhook_secret_header: "X-Buddy-Webhook-Secret".to_string(),
        }
    }
}

impl SimConfig {
    /// Base path normalised to "" or "/segment" without a trailing slash.
    pub fn normalized_base_path(&self) -> String {
        let trimmed = self.base_path.trim_matches('/');
        if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        }
    }

    /// The rate-limit settings as the limiter takes them.
    pub fn rate_limit_policy(&self) -> RateLimitPolicy {
        RateLimitPolicy {
            spec: self.rate_limit,
            window: self.rate_limit_window,
            reset: self.rate_limit_reset,
            count_throttled: self.rate_limit_count_throttled,
            status: self.rate_limit_status,
        }
    }
}

/// How the simulator's clock moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimeMode {
    Real,
    Manual,
}

/// Status code for an exhausted rate-limit budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RateLimitStatus {
    #[value(name = "429")]
    TooManyRequests,
    #[value(name = "403")]
    Forbidden,
}

impl RateLimitStatus {
    pub fn code(self) -> u16 {
        match self {
            Self::TooManyRequests => 429,
            Self::Forbidden => 403,
        }
    }

    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            429 => Some(Self::TooManyRequests),
            403 => Some(Self::Forbidden),
            _ => None,
        }
    }
}

/// Where a token's rate-limit window starts. Buddy's docs do not say, so both readings
/// are offered.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum WindowStart {
    /// A window opens on the token's first request after the last one ended.
    FirstRequest,
    /// Windows are aligned to the clock: multiples of the window length since the epoch.
    Clock,
}

/// How the window's end (kept to the millisecond) becomes whole seconds in
/// `X-Rate-Limit-Reset` ("Unix epoch seconds") and in `Retry-After`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ResetFormat {
    /// Truncated: the reset may be up to a second before the real end.
    Floor,
    /// To the nearest second: up to half a second either way.
    Round,
    /// Rounded up: the reset may be up to a second after the real end.
    Ceil,
    /// Seconds with three decimals (`1700000010.250`); `Retry-After` rounded up.
    Exact,
}

impl ResetFormat {
    fn seconds(self, millis: i64) -> i64 {
        match self {
            Self::Floor => millis.div_euclid(1000),
            Self::Round => (millis + 500).div_euclid(1000),
            Self::Ceil | Self::Exact => (millis + 999).div_euclid(1000),
        }
    }

    /// `X-Rate-Limit-Reset` for a window ending at `end_millis` (Unix milliseconds).
    pub fn reset_header(self, end_millis: i64) -> String {
        match self {
            Self::Exact => format!(
                "{}.{:03}",
                end_millis.div_euclid(1000),
                end_millis.rem_euclid(1000)
            ),
            other => other.seconds(end_millis).to_string(),
        }
    }

    /// `Retry-After` in whole seconds, at least 1, for `millis_left` until the end.
    pub fn retry_after(self, millis_left: i64) -> i64 {
        self.seconds(millis_left).max(1)
    }
}

/// Everything that decides the simulator's rate limiting; changed at run time through
/// `POST /__sim/rate-limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitPolicy {
    pub spec: RateLimitSpec,
    pub window: WindowStart,
    pub reset: ResetFormat,
    /// Refused calls are charged to the window (its `used` goes past the budget).
    pub count_throttled: bool,
    pub status: RateLimitStatus,
}

impl Default for RateLimitPolicy {
    fn default() -> Self {
        SimConfig::default().rate_limit_policy()
    }
}

/// Error for the textual specs accepted on the command line and by the control API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// Request budget per token and window, written "budget/window_seconds".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSpec {
    pub budget: u64,
    pub window_seconds: i64,
}

impl RateLimitSpec {
    pub fn window(&self) -> Duration {
        Duration::seconds(self.window_seconds)
    }
}

impl Default for RateLimitSpec {
    fn default() -> Self {
        Self {
            budget: 1000,
            window_seconds: 3600,
        }
    }
}

impl FromStr for RateLimitSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (budget, window) = s
            .split_once('/')
            .ok_or_else(|| SpecError(format!("rate limit `{s}` must look like 1000/3600")))?;
        let budget = budget
            .trim()
            .parse::<u64>()
            .map_err(|e| SpecError(format!("rate limit budget: {e}")))?;
        let window_seconds = window
            .trim()
            .trim_end_matches('s')
            .parse::<i64>()
            .map_err(|e| SpecError(format!("rate limit window: {e}")))?;
        if window_seconds <= 0 {
            return Err(SpecError("rate limit window must be positive".into()));
        }
        Ok(Self {
            budget,
            window_seconds,
        })
    }
}

impl fmt::Display for RateLimitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.budget, self.window_seconds)
    }
}

/// Shape of the seeded data; everything is derived from `seed`, so equal specs give equal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SeedSpec {
    pub workspaces: u32,
    /// Projects per workspace.
    pub projects: u32,
    /// Pipelines per project.
    pub pipelines: u32,
    /// Finished executions per pipeline.
    pub executions: u64,
    /// Members per workspace (the first is the owner, who holds every token).
    pub members: u32,
    /// Commits per project on the default branch.
    pub commits: u32,
    pub seed: u64,
}

impl SeedSpec {
    pub const DEFAULT: &'static str =
        "workspaces=1,projects=3,pipelines=2,executions=50,members=4,commits=30,seed=42";
}

impl Default for SeedSpec {
    fn default() -> Self {
        Self {
            workspaces: 1,
            projects: 3,
            pipelines: 2,
            executions: 50,
            members: 4,
            commits: 30,
            seed: 42,
        }
    }
}

impl FromStr for SeedSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut spec = SeedSpec::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| SpecError(format!("seed part `{part}` must be key=value")))?;
            let num = |v: &str| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|e| SpecError(format!("seed `{key}`: {e}")))
            };
            let small = |v: &str| {
                num(v).and_then(|n| {
                    u32::try_from(n).map_err(|_| SpecError(format!("seed `{key}` too large")))
                })
            };
            match key.trim() {
                "workspaces" => spec.workspaces = small(value)?,
                "projects" => spec.projects = small(value)?,
                "pipelines" => spec.pipelines = small(value)?,
                "executions" => spec.executions = num(value)?,
                "members" => spec.members = small(value)?.max(1),
                "commits" => spec.commits = small(value)?.max(1),
                "seed" => spec.seed = num(value)?,
                other => return Err(SpecError(format!("unknown seed key `{other}`"))),
            }
        }
        Ok(spec)
    }
}

impl fmt::Display for SeedSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "workspaces={},projects={},pipelines={},executions={},members={},commits={},seed={}",
            self.workspaces,
            self.projects,
            self.pipelines,
            self.executions,
            self.members,
            self.commits,
            self.seed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_spec_round_trips() {
        let spec: SeedSpec = "workspaces=2,projects=100,pipelines=10,executions=1000,seed=7"
            .parse()
            .unwrap();
        assert_eq!(spec.workspaces, 2);
        assert_eq!(spec.executions, 1000);
        assert_eq!(spec.to_string().parse::<SeedSpec>().unwrap(), spec);
        assert!("projects".parse::<SeedSpec>().is_err());
        assert!("colour=3".parse::<SeedSpec>().is_err());
    }

    #[test]
    fn rate_limit_spec_parses() {
        let spec: RateLimitSpec = "5/60".parse().unwrap();
        assert_eq!((spec.budget, spec.window_seconds), (5, 60));
        assert!("5".parse::<RateLimitSpec>().is_err());
        assert!("5/0".parse::<RateLimitSpec>().is_err());
    }
}
