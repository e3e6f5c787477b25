//! The server's whole configuration: one struct, filled from CLI flags or `CIGATE_*`
//! environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cigate_core::Secret;
use clap::builder::BoolishValueParser;
use clap::ArgAction;

use crate::limits::LimitSetting;

#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(long, env = "CIGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Threads serving requests, each with its own single-threaded event loop and its
    /// own listening socket on the same port (`SO_REUSEPORT`), so a request is read,
    /// sent to Buddy and answered on one thread, without hand-offs between threads.
    /// 0 (the default): one per CPU core this process may use; at most 1024.
    #[arg(
        long,
        env = "CIGATE_WORKERS",
        default_value_t = 0,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1024),
    )]
    pub workers: usize,

    /// `sqlite://path/to/cigate.db` (created on first run) or `postgres://…`.
    #[arg(
        long,
        env = "CIGATE_DATABASE_URL",
        default_value = "sqlite://cigate.db"
    )]
    pub database_url: String,

    /// PostgreSQL schema to use (created if missing), so several deployments or test
    /// runs can share one database.
    #[arg(long, env = "CIGATE_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,

    /// Master key for credential encryption: base64 of 32 bytes. Without it, a key file
    /// beside the SQLite database is used (created on first run, mode 0600).
    #[arg(long, env = "CIGATE_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<Secret>,

    /// Key file to use instead of the default one beside the SQLite database.
    #[arg(long, env = "CIGATE_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// The URL under which callers and Buddy reach this server (link URLs, webhooks).
    #[arg(long, env = "CIGATE_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Permit `http` and loopback/private upstream addresses (the simulator, tests,
    /// self-hosted Buddy on a private network). Off by default: an end user's
    /// self-hosted URL must not reach the operator's internal network. Like every
    /// boolean setting: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`; the bare flag
    /// means true.
    #[arg(
        long,
        env = "CIGATE_ALLOW_PRIVATE_UPSTREAMS",
        default_value_t = false,
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new(),
        num_args = 0..=1,
        default_missing_value = "true",
    )]
    pub allow_private_upstreams: bool,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "CIGATE_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,

    /// Default deadline of a call to Buddy, in milliseconds (`truto_timeout_ms` overrides).
    #[arg(long, env = "CIGATE_UPSTREAM_TIMEOUT_MS", default_value_t = 30_000)]
    pub upstream_timeout_ms: u64,

    /// How long an `Idempotency-Key` is remembered, in seconds (24 h).
    #[arg(long, env = "CIGATE_IDEMPOTENCY_TTL_SECS", default_value_t = 86_400)]
    pub idempotency_ttl_secs: u64,

    /// cigate's own limit per API token, `requests/seconds` (e.g. `6000/60`) or `off`.
    /// Enforced per instance; over it: 429 with `Retry-After`.
    #[arg(long, env = "CIGATE_TOKEN_RATE_LIMIT", default_value = "off")]
    pub token_rate_limit: LimitSetting,

    /// cigate's own limit per integrated account on calls that reach Buddy (unified,
    /// proxy, custom), `requests/seconds` or `off`. Enforced per instance.
    #[arg(long, env = "CIGATE_ACCOUNT_RATE_LIMIT", default_value = "off")]
    pub account_rate_limit: LimitSetting,

    /// How long an API token's environment and an account's decrypted credential stay
    /// cached in memory for the proxy's hot path, in milliseconds (0 disables). Changes
    /// made through this instance apply at once; other instances see them within this.
    #[arg(long, env = "CIGATE_HOT_CACHE_MS", default_value_t = 1000)]
    pub hot_cache_ms: u64,

    /// Calls per account at Buddy at once (0 = unbounded), unified, writes, proxy and
    /// custom alike; more wait for a turn within their deadline. Bounds upstream
    /// connections and memory per account.
    #[arg(long, env = "CIGATE_ACCOUNT_MAX_IN_FLIGHT", default_value_t = 64)]
    pub account_max_in_flight: usize,
    /// OAuth client id of the Buddy app used by every environment that has not set its
    /// own with `PUT /environment-integration/buddy`.
    #[arg(long, env = "CIGATE_BUDDY_CLIENT_ID")]
    pub buddy_client_id: Option<String>,

    /// Client secret of that app.
    #[arg(long, env = "CIGATE_BUDDY_CLIENT_SECRET", hide_env_values = true)]
    pub buddy_client_secret: Option<Secret>,

    /// CSP `frame-ancestors` of the Link page: who may embed it in an iframe. Defaults
    /// to any origin, since products embed it from origins cigate cannot know; set e.g.
    /// `https://app.example.com` (space-separated) or `'none'` to restrict.
    #[arg(long, env = "CIGATE_LINK_FRAME_ANCESTORS", default_value = "*")]
    pub link_frame_ancestors: String,

    /// After SIGTERM or SIGINT, how long in-flight requests may take to finish before
    /// what is left (followed logs, `/custom` streams) is cut and the process exits,
    /// e.g. `30s` or `500ms`. New connections are refused from the signal on.
    #[arg(long, env = "CIGATE_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// How long a client may take to send a request's body once its head has arrived;
    /// slower bodies are answered 408 and the connection is closed, so a client that
    /// declares a body and never sends it cannot hold a connection open.
    #[arg(long, env = "CIGATE_BODY_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,

    /// How long an in-progress `Idempotency-Key` stays claimed without renewal. The
    /// request holding it renews it every third of this while it runs, so a key whose
    /// holder died (killed process) is known as such within this time.
    #[arg(long, env = "CIGATE_IDEMPOTENCY_LEASE", default_value = "10s", value_parser = parse_duration)]
    pub idempotency_lease: Duration,
    /// Waits between a failed webhook delivery attempt and the next (comma-separated
    /// durations, jittered; a receiver's `Retry-After` wins). After the last one fails,
    /// the delivery is `failed`.
    #[arg(long, env = "CIGATE_WEBHOOK_RETRY_SCHEDULE", default_value = "5s,5m,30m,2h,5h,10h,10h", value_parser = RetrySchedule::parse)]
    pub webhook_retry_schedule: RetrySchedule,
    /// How long a worker holds a webhook delivery it is sending. Longer than the 15 s
    /// delivery timeout, so only a worker that died loses it; another instance then
    /// sends it again under the same `webhook-id`.
    #[arg(long, env = "CIGATE_WEBHOOK_DELIVERY_LEASE", default_value = "60s", value_parser = parse_duration)]
    pub webhook_delivery_lease: Duration,

    /// How often each account is polled for job changes when no provider webhook can
    /// reach this server (no `CIGATE_PUBLIC_URL`, no webhook scope). Accounts with a
    /// registered webhook are polled ten times less often, as a safety net. `0` turns
    /// polling off (job events then come from provider webhooks alone).
    #[arg(long, env = "CIGATE_EVENT_POLL_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub event_poll_interval: Duration,

    /// The share of an account's provider rate budget polling may spend (`0.1` or
    /// `10%`); a poll skips its turn while less than this share of the budget is left.
    #[arg(long, env = "CIGATE_EVENT_POLL_BUDGET_SHARE", default_value = "10%", value_parser = parse_share)]
    pub event_poll_budget_share: f64,

    /// How long the event log (and the change detector's memory) is kept, e.g. `30d`.
    #[arg(long, env = "CIGATE_EVENT_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub event_retention: Duration,

    /// How often provider webhooks pointing here are checked and repaired (one Buddy
    /// lost, a secret drifted).
    #[arg(long, env = "CIGATE_EVENT_HOOK_REPAIR_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub event_hook_repair_interval: Duration,

    /// A subscription whose deliveries have failed for this long without one getting
    /// through is deactivated, with a `webhook:disabled` event.
    #[arg(long, env = "CIGATE_WEBHOOK_DISABLE_AFTER", default_value = "5d", value_parser = parse_duration)]
    pub webhook_disable_after: Duration,

    /// Where an account's provider rate budget is counted: `shared` through the store,
    /// so several instances on one database stay within it together (a store round trip
    /// per provider call); `local` per process; `auto` is `shared` on PostgreSQL and
    /// `local` on SQLite.
    #[arg(long, env = "CIGATE_RATE_BUDGET", value_enum, default_value = "auto")]
    pub rate_budget: RateBudget,

    /// How long one answer of a status badge (`/badge/{id}.svg`, `.json`) is kept, e.g.
    /// `15s`: badges are viewed far more often than a provider's rate budget allows, so
    /// concurrent views share one provider call and its answer serves this long. The one
    /// short-lived cache of CI/CD data in cigate; `0` keeps nothing (views still share
    /// a call in flight).
    #[arg(long, env = "CIGATE_BADGE_CACHE_TTL", default_value = "15s", value_parser = parse_duration)]
    pub badge_cache_ttl: Duration,

    /// PostgreSQL: how long a request waits for a database connection (while the
    /// database is unreachable, connecting is retried this long) before it is answered
    /// 503 with `Retry-After`.
    #[arg(long, env = "CIGATE_DATABASE_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub database_acquire_timeout: Duration,

    /// How long a dashboard session (`/ui`) lasts without being used before it must
    /// sign in again, e.g. `30m`.
    #[arg(long, env = "CIGATE_UI_SESSION_IDLE", default_value = "30m", value_parser = parse_duration)]
    pub ui_session_idle: Duration,
}

/// See [`ServerConfig::rate_budget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RateBudget {
    Auto,
    Shared,
    Local,
}

/// A share as `0.1` or `10%`, more than 0 and at most 1.
pub fn parse_share(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let value = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| format!("`{text}` is not a share like `0.1` or `10%`"))?;
    if value.is_finite() && value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(format!("`{text}` must be more than 0 and at most 100%"))
    }
}

/// The waits of [`ServerConfig::webhook_retry_schedule`], in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl RetrySchedule {
    /// Every entry must be a valid duration: a typo is a start-up error, not a
    /// silently shorter schedule.
    pub fn parse(text: &str) -> Result<Self, String> {
        let waits = text
            .split(',')
            .map(parse_duration)
            .collect::<Result<Vec<_>, _>>()?;
        if waits.is_empty() {
            return Err("the retry schedule needs at least one duration".into());
        }
        Ok(Self(waits))
    }
}

/// A duration as `30s`, `500ms`, `2m` or `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like `30s` or `500ms`"))?;
    let millis = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        other => {
            return Err(format!(
                "unknown duration unit `{other}` (use ms, s, m, h or d)"
            ))
        }
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

impl ServerConfig {
    /// The number of serving threads `workers` asks for.
    pub fn worker_count(&self) -> usize {
        // Sharing a port between sockets is a Unix socket option.
        if cfg!(not(unix)) {
            return 1;
        }
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    /// A configuration for embedding (tests, `cigate demo`): port 0, the given store.
    pub fn for_database(database_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            // Embedded: served on the caller's runtime.
            workers: 1,
            database_url: database_url.into(),
            database_schema: None,
            master_key: None,
            key_file: None,
            public_url: None,
            allow_private_upstreams: false,
            body_limit: 1024 * 1024,
            upstream_timeout_ms: 30_000,
            idempotency_ttl_secs: 86_400,
            token_rate_limit: LimitSetting::default(),
            account_rate_limit: LimitSetting::default(),
            hot_cache_ms: 1000,
            account_max_in_flight: 64,
            buddy_client_id: None,
            buddy_client_secret: None,
            link_frame_ancestors: "*".into(),
            shutdown_grace: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            idempotency_lease: Duration::from_secs(10),
            webhook_retry_schedule: RetrySchedule(
                [5, 300, 1800, 7200, 18_000, 36_000, 36_000]
                    .map(Duration::from_secs)
                    .to_vec(),
            ),
            webhook_delivery_lease: Duration::from_secs(60),
            event_poll_interval: Duration::from_secs(30),
            event_poll_budget_share: 0.1,
            event_retention: Duration::from_secs(30 * 86_400),
            event_hook_repair_interval: Duration::from_secs(3600),
            webhook_disable_after: Duration::from_secs(5 * 86_400),
            rate_budget: RateBudget::Auto,
            database_acquire_timeout: Duration::from_secs(5),
            badge_cache_ttl: Duration::from_secs(15),
            ui_session_idle: Duration::from_secs(30 * 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: ServerConfig,
    }

    fn parse(args: &[&str]) -> Result<ServerConfig, clap::Error> {
        Cli::try_parse_from(std::iter::once("cigate").chain(args.iter().copied()))
            .map(|cli| cli.config)
    }

    #[test]
    fn workers_are_bounded() {
        assert_eq!(parse(&[]).unwrap().workers, 0, "one per core");
        assert_eq!(parse(&["--workers", "3"]).unwrap().worker_count(), 3);
        for bad in ["2000", "-1", "many"] {
            assert!(parse(&["--workers", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn booleans_take_the_usual_spellings() {
        for (value, expected) in [
            ("true", true),
            ("1", true),
            ("yes", true),
            ("on", true),
            ("TRUE", true),
            ("Yes", true),
            ("false", false),
            ("0", false),
            ("no", false),
            ("off", false),
            ("OFF", false),
        ] {
            let arg = format!("--allow-private-upstreams={value}");
            let config = parse(&[&arg]).unwrap_or_else(|err| panic!("{value}: {err}"));
            assert_eq!(config.allow_private_upstreams, expected, "{value}");
        }
        assert!(
            parse(&["--allow-private-upstreams"])
                .unwrap()
                .allow_private_upstreams
        );
        assert!(!parse(&[]).unwrap().allow_private_upstreams);
        assert!(parse(&["--allow-private-upstreams=maybe"]).is_err());
        // The environment variable takes the same spellings (`cigate serve` used to exit
        // with "invalid value '1'"). Only this test touches the variable.
        for (value, expected) in [("1", true), ("yes", true), ("0", false), ("off", false)] {
            std::env::set_var("CIGATE_ALLOW_PRIVATE_UPSTREAMS", value);
            let parsed = parse(&[]);
            std::env::remove_var("CIGATE_ALLOW_PRIVATE_UPSTREAMS");
            let config = parsed.unwrap_or_else(|err| panic!("{value}: {err}"));
            assert_eq!(config.allow_private_upstreams, expected, "env {value}");
        }
    }

    #[test]
    fn debug_redacts_the_secrets() {
        let config = parse(&[
            "--master-key",
            "bWFzdGVyLWtleS1wbGFpbnRleHQ=",
            "--buddy-client-secret",
            "client-secret-plaintext",
        ])
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("bWFzdGVyLWtleS1wbGFpbnRleHQ="), "{shown}");
        assert!(!shown.contains("client-secret-plaintext"), "{shown}");
        assert_eq!(
            config.master_key.as_ref().map(Secret::expose),
            Some("bWFzdGVyLWtleS1wbGFpbnRleHQ=")
        );
    }

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn shares() {
        assert_eq!(parse_share("10%"), Ok(0.1));
        assert_eq!(parse_share("0.25"), Ok(0.25));
        assert_eq!(parse_share("100%"), Ok(1.0));
        for bad in ["0", "0%", "-0.1", "1.5", "150%", "NaN", "inf", "ten", ""] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retry_schedules_parse_strictly() {
        use super::RetrySchedule;
        assert_eq!(
            RetrySchedule::parse("5s,5m"),
            Ok(RetrySchedule(vec![
                Duration::from_secs(5),
                Duration::from_secs(300)
            ]))
        );
        assert!(RetrySchedule::parse("5s,,5m").is_err());
        assert!(RetrySchedule::parse("5s,5 days").is_err());
        assert!(RetrySchedule::parse("").is_err());
    }
}
