//! `cigate demo`: the simulator with seeded data, the gateway on a throwaway SQLite
//! database, a linked demo account, and copy-pasteable calls that return data.

use anyhow::{bail, Context};
use serde_json::{json, Value};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the gateway listens.
    #[arg(long, env = "CIGATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// The simulator's seeded data.
    #[arg(
        long,
        default_value = "workspaces=1,projects=4,pipelines=3,executions=120,seed=7"
    )]
    seed: cigate_buddy_sim::SeedSpec,
    /// Print the calls and exit instead of serving until Ctrl-C (for scripts and tests).
    #[arg(long, hide = true)]
    exit_after_setup: bool,
}

/// What the demo set up, printed for the user.
pub struct Demo {
    pub base_url: String,
    pub api_token: String,
    pub account_id: String,
    pub workspace: String,
    pub repo: String,
    /// A repo with pull requests, for the pull-requests example.
    pub pr_repo: String,
    pub workflow: String,
    /// A status badge of the repo's default branch (open in a browser, no token).
    pub badge_url: String,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let sim = cigate_buddy_sim::start(cigate_buddy_sim::SimConfig {
        seed: args.seed,
        ..cigate_buddy_sim::SimConfig::default()
    })
    .await
    .context("starting the Buddy simulator")?;
    let buddy_token = sim
        .sim()
        .issue_token(cigate_buddy_sim::TokenSpec::all_scopes());

    let mut config = cigate_server::ServerConfig::for_database(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("cigate.db").display()
    ));
    config.listen = args.listen;
    config.allow_private_upstreams = true;
    // The simulator reaches the gateway directly, so job events come by webhook; on
    // port 0 (address unknown in advance) they come by polling, every few seconds.
    if args.listen.port() != 0 {
        config.public_url = Some(format!("http://{}", args.listen));
    }
    config.event_poll_interval = std::time::Duration::from_secs(5);
    let store = cigate_server::store::open(&config).await?;
    let env = store.ensure_environment("default").await?;
    let (_, api_token) = store.create_api_token(&env.id, Some("demo")).await?;
    let state = cigate_server::build_state(config, store).await?;
    let server = cigate_server::start(state).await?;

    let demo = link(
        &server.base_url(),
        api_token.expose(),
        &sim.base_url(),
        &buddy_token,
    )
    .await
    .context("linking the demo account")?;
    print_calls(&demo, &sim.base_url());
    if args.exit_after_setup {
        return Ok(());
    }
    tokio::select! {
        result = server.wait() => result.context("server stopped")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    sim.shutdown().await;
    Ok(())
}

/// Links the simulator's account through the public API, as a product would, and picks
/// a repo and workflow to show.
async fn link(
    base_url: &str,
    api_token: &str,
    buddy_url: &str,
    buddy_token: &str,
) -> anyhow::Result<Demo> {
    let http = reqwest::Client::new();
    let account: Value = http
        .post(format!("{base_url}/integrated-account"))
        .bearer_auth(api_token)
        .json(&json!({
            "tenant_id": TENANT,
            "integration": "buddy",
            "context": { "api_key": buddy_token, "base_url": buddy_url },
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let account_id = field(&account, "id")?;
    let workspace = account["context"]["workspace"]
        .as_str()
        .map(str::to_owned)
        .context("the demo account has no default workspace")?;
    let page = |resource: &'static str, extra: String| {
        let http = http.clone();
        let url = format!(
            "{base_url}/unified/ci-cd/{resource}?integrated_account_id={account_id}{extra}"
        );
        async move {
            let page: Value = http
                .get(url)
                .bearer_auth(api_token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            anyhow::Ok(page)
        }
    };
    let first_id = |page: &Value, resource: &str| match page["result"].get(0) {
        Some(item) => field(item, "id"),
        None => bail!("the simulator has no {resource}"),
    };
    let repos = page("repos", "&limit=20".into()).await?;
    let repo = first_id(&repos, "repos")?;
    let workflow = first_id(
        &page("workflows", format!("&repo={repo}&limit=1")).await?,
        "workflows",
    )?;
    // Only GitHub-backed projects have pull requests: show one that does.
    let mut pr_repo = repo.clone();
    for candidate in repos["result"].as_array().into_iter().flatten() {
        let candidate = field(candidate, "id")?;
        let prs = page("pull-requests", format!("&repo={candidate}&limit=1")).await?;
        if prs["result_count"].as_u64().unwrap_or(0) > 0 {
            pr_repo = candidate;
            break;
        }
    }
    // A status badge of the default branch of the shown workflow's project.
    let branches = page("branches", format!("&repo={repo}&limit=50")).await?;
    let branch = branches["result"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["is_default"] == json!(true))
        .or_else(|| branches["result"].get(0))
        .map(|b| field(b, "name"))
        .transpose()?
        .context("the demo repo has no branch")?;
    let badge: Value = http
        .post(format!("{base_url}/badge"))
        .bearer_auth(api_token)
        .json(&json!({
            "integrated_account_id": account_id, "workspace": workspace, "repo": repo,
            "workflow": workflow, "branch": branch,
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let badge_url = field(&badge, "url")?;
    Ok(Demo {
        badge_url,
        base_url: base_url.to_owned(),
        api_token: api_token.to_owned(),
        account_id,
        workspace,
        repo,
        pr_repo,
        workflow,
    })
}

/// The demo account's tenant, for the tenant-wide calls.
const TENANT: &str = "demo-tenant";

fn field(value: &Value, name: &str) -> anyhow::Result<String> {
    match &value[name] {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => bail!("response has no `{name}`: {value}"),
    }
}

fn print_calls(demo: &Demo, buddy_url: &str) {
    let Demo {
        base_url,
        api_token,
        account_id,
        workspace,
        repo,
        pr_repo,
        workflow,
        badge_url,
    } = demo;
    let q = format!("integrated_account_id={account_id}");
    println!("cigate demo is running.");
    println!();
    println!("  gateway          {base_url}   (API reference: {base_url}/docs)");
    println!("  dashboard        {base_url}/ui   (sign in with the API token)");
    println!("  Buddy simulator  {buddy_url}");
    println!("  API token        {api_token}");
    println!("  account          {account_id}   (workspace `{workspace}`)");
    println!();
    println!("Try:");
    println!();
    let calls = [
        "integrated-account".to_owned(),
        format!("unified/ci-cd/workspaces?{q}"),
        format!("unified/ci-cd/repos?{q}"),
        format!("unified/ci-cd/branches?{q}&repo={repo}"),
        format!("unified/ci-cd/pull-requests?{q}&repo={pr_repo}"),
        format!("unified/ci-cd/workflows?{q}&repo={repo}"),
        format!("unified/ci-cd/jobs?{q}&repo={repo}&workflow={workflow}&limit=5"),
        format!("unified/ci-cd/jobs?{q}&limit=5&truto_ignore_remote_data=true"),
        format!("unified/ci-cd/jobs?tenant_id={TENANT}&limit=5&truto_ignore_remote_data=true"),
        format!("unified/ci-cd/metrics?{q}&repo={repo}"),
    ];
    for call in calls {
        println!("  curl -s -H 'Authorization: Bearer {api_token}' '{base_url}/{call}'");
    }
    println!();
    println!("A status badge of {repo}'s default branch (no token: open it in a browser,");
    println!("or put it in an <img>; .json gives shields.io's endpoint schema):");
    println!();
    println!("  {badge_url}");
    println!();
    println!("Delivery metrics as a table:");
    println!();
    println!("  cigate metrics --url {base_url} --token {api_token} --account {account_id}");
    println!();
    println!("Watch job events (in a second terminal):");
    println!();
    println!("  cigate events tail --url {base_url} --token {api_token} --type 'job:*'");
    println!();
    println!("and make one happen (runs workflow {workflow} of {repo}):");
    println!();
    println!(
        "  curl -s -X POST -H 'Authorization: Bearer {api_token}' \\\n    \
         '{base_url}/unified/ci-cd/jobs?{q}&repo={repo}&workflow={workflow}'"
    );
    println!();
    println!("Ctrl-C stops the demo and deletes its data.");
}
