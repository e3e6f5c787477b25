//! The `cigate` binary: the production server, the demo, the Buddy simulator and the
//! operator commands.

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod demo;
mod ops;

/// mimalloc instead of the system allocator: less CPU per request on the proxy's hot
/// path (see docs/benchmarks.md, "Proxy (issue 5)"). Built without transparent huge
/// pages (`no_thp`): with them every touched 2 MiB region counts whole, which cost
/// ~25 MiB of resident memory at 1,000 connections.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "cigate",
    version,
    about = "A self-hosted unified CI/CD API (Buddy first)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API server (production).
    Serve(cigate_server::ServerConfig),
    /// Start the Buddy simulator and a gateway linked to it, and print working calls.
    Demo(demo::DemoArgs),
    /// Run the Buddy simulator alone.
    Sim(cigate_buddy_sim::SimConfig),
    /// Apply database migrations and exit.
    Migrate(StoreArgs),
    /// Manage API tokens.
    ApiToken {
        #[command(subcommand)]
        command: ApiTokenCommand,
    },
    /// Run, cancel, retry and approve jobs, and read their logs, on a running server.
    Jobs {
        #[command(flatten)]
        conn: ops::Connection,
        #[command(subcommand)]
        command: ops::JobsCommand,
    },
    /// List, create, change and delete workflows (pipelines) on a running server.
    Workflows {
        #[command(flatten)]
        conn: ops::Connection,
        #[command(subcommand)]
        command: ops::WorkflowsCommand,
    },
    /// Delivery metrics (DORA-style) of an account or a tenant from a running server,
    /// as a table.
    Metrics {
        #[command(flatten)]
        conn: ops::Connection,
        #[command(flatten)]
        args: ops::MetricsArgs,
    },
    /// Follow the events a running server records (`tail`).
    Events {
        #[command(flatten)]
        conn: ops::Connection,
        #[command(subcommand)]
        command: ops::EventsCommand,
    },
    /// Manage the credential encryption keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

/// The part of the server configuration that commands working on the store need.
#[derive(Debug, clap::Args)]
struct StoreArgs {
    #[arg(
        long,
        env = "CIGATE_DATABASE_URL",
        default_value = "sqlite://cigate.db"
    )]
    database_url: String,
    #[arg(long, env = "CIGATE_DATABASE_SCHEMA")]
    database_schema: Option<String>,
    #[arg(long, env = "CIGATE_MASTER_KEY", hide_env_values = true)]
    master_key: Option<String>,
    #[arg(long, env = "CIGATE_KEY_FILE")]
    key_file: Option<std::path::PathBuf>,
}

impl StoreArgs {
    fn server_config(&self) -> cigate_server::ServerConfig {
        let mut config = cigate_server::ServerConfig::for_database(&self.database_url);
        config.database_schema = self.database_schema.clone();
        config.master_key = self.master_key.clone().map(cigate_core::Secret::new);
        config.key_file = self.key_file.clone();
        config
    }
}

#[derive(Debug, Subcommand)]
enum ApiTokenCommand {
    /// Create a token and print it, and nothing else, on stdout.
    Create {
        /// The environment; created if it does not exist yet.
        #[arg(long, default_value = "default")]
        environment: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Re-encrypt every sealed secret (account credentials, OAuth client secrets, OAuth
    /// states in flight) under a new master key while servers keep running.
    Rotate {
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CIGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr so stdout stays clean for values scripts capture.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    // `serve` runs one single-threaded runtime per worker (this one is the first, with
    // the background tasks): no task moves between threads. The other commands run on
    // a runtime that spreads their work over the cores.
    let runtime = match cli.command {
        Command::Serve(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
    .context("cannot start the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => {
            let store = cigate_server::store::open(&config).await?;
            let state = cigate_server::build_state(config, store).await?;
            // Watched before the port opens, so no signal finds the default action.
            let mut signals = StopSignals::new()?;
            let mut server = cigate_server::start(state).await?;
            let workers = server.state.config.worker_count();
            tracing::info!(url = %server.base_url(), workers, "cigate listening");
            let signal = signals.recv().await;
            tracing::info!(signal, "shutting down");
            tokio::select! {
                result = server.shutdown() => result.context("server stopped")?,
                second = signals.recv() => {
                    anyhow::bail!("{second} during shutdown: stopped at once");
                }
            }
            tracing::info!("stopped");
        }
        Command::Demo(args) => demo::run(args).await?,
        Command::Jobs { conn, command } => ops::jobs(conn, command).await?,
        Command::Workflows { conn, command } => ops::workflows(conn, command).await?,
        Command::Events { conn, command } => ops::events(conn, command).await?,
        Command::Metrics { conn, args } => ops::metrics(conn, args).await?,
        Command::Sim(config) => run_sim(config).await?,
        Command::Migrate(args) => {
            cigate_server::store::open(&args.server_config()).await?;
            eprintln!("migrations applied to {}", args.database_url);
        }
        Command::ApiToken {
            command: ApiTokenCommand::Create { environment, store },
        } => {
            let store = cigate_server::store::open(&store.server_config()).await?;
            let env = store.ensure_environment(&environment).await?;
            let (_, token) = store.create_api_token(&env.id, Some("cli")).await?;
            println!("{}", token.expose());
        }
        Command::Keys {
            command: KeysCommand::Rotate { store },
        } => {
            let store = cigate_server::store::open(&store.server_config()).await?;
            let report = store.rotate_keys(None).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}

/// SIGTERM (what orchestrators send) and SIGINT (Ctrl-C): both stop `serve` gracefully.
struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next one and names it.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

async fn run_sim(config: cigate_buddy_sim::SimConfig) -> anyhow::Result<()> {
    let handle = cigate_buddy_sim::start(config.clone()).await?;
    let sim = handle.sim();
    let token = match config.tokens.first() {
        Some(token) => token.clone(),
        None => sim.issue_token(cigate_buddy_sim::TokenSpec::all_scopes()),
    };
    let base = handle.base_url();
    println!("Buddy simulator listening on {base}");
    println!("token with every scope: {token}");
    println!();
    println!("  curl -H 'Authorization: Bearer {token}' {base}/workspaces");
    if let Some(ws) = sim.workspace_domains().first() {
        println!("  curl -H 'Authorization: Bearer {token}' {base}/workspaces/{ws}/projects");
    }
    println!();
    println!("Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}
