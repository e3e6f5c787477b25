//! `cigate jobs …` and `cigate workflows …`: operator commands against a running
//! server's unified API. JSON answers go to stdout as printed by the server; logs as
//! plain text (followed with `--follow`). Errors (problem+json) go to stderr with a
//! non-zero exit.

use std::io::Write;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// Where the server is and who is calling; accepted before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Base URL of the cigate server.
    #[arg(
        long,
        global = true,
        env = "CIGATE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// API token (`cigate api-token create`); required.
    #[arg(long, global = true, env = "CIGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Integrated account id; required.
    #[arg(long, global = true, env = "CIGATE_ACCOUNT")]
    account: Option<String>,
    /// Buddy workspace (optional when the account has one).
    #[arg(long, global = true)]
    workspace: Option<String>,
}

impl Connection {
    fn token(&self) -> anyhow::Result<&str> {
        self.token
            .as_deref()
            .context("set --token or CIGATE_TOKEN (an API token of the server)")
    }

    fn account(&self) -> anyhow::Result<&str> {
        self.account
            .as_deref()
            .context("set --account or CIGATE_ACCOUNT (an integrated account id)")
    }
}

/// Which pipeline a job belongs to.
#[derive(Debug, Clone, Args)]
pub struct JobScope {
    /// Buddy project name.
    #[arg(long)]
    project: String,
    /// Pipeline id.
    #[arg(long)]
    workflow: String,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Run a pipeline; `--commit` pins an exact revision (a rollback).
    Run {
        #[command(flatten)]
        scope: JobScope,
        #[arg(long)]
        branch: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        #[arg(long)]
        pull_request: Option<String>,
        #[arg(long)]
        commit: Option<String>,
        #[arg(long)]
        comment: Option<String>,
        /// `KEY=VALUE`, repeatable.
        #[arg(long = "var")]
        variables: Vec<String>,
        #[arg(long)]
        clear_cache: bool,
        #[arg(long)]
        refresh: bool,
        /// low, normal or high.
        #[arg(long)]
        priority: Option<String>,
        /// Sent as `Idempotency-Key`, so a retried command starts one run.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Cancel a running job.
    Cancel {
        id: String,
        #[command(flatten)]
        scope: JobScope,
    },
    /// Retry a failed or cancelled job.
    Retry {
        id: String,
        #[command(flatten)]
        scope: JobScope,
    },
    /// Approve a job waiting for approval, optionally supplying variables.
    Approve {
        id: String,
        #[command(flatten)]
        scope: JobScope,
        /// `KEY=VALUE`, repeatable.
        #[arg(long = "var")]
        variables: Vec<String>,
    },
    /// Print a job's logs as text.
    Logs {
        id: String,
        #[command(flatten)]
        scope: JobScope,
        /// Keep printing new lines until the job ends.
        #[arg(long)]
        follow: bool,
        /// Stop following after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_s: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// List a project's pipelines.
    List {
        #[arg(long)]
        project: String,
    },
    /// Create a pipeline.
    Create {
        #[arg(long)]
        project: String,
        #[arg(long)]
        name: String,
        /// manual, push or schedule.
        #[arg(long)]
        trigger: Option<String>,
        #[arg(long)]
        branch: Option<String>,
        /// Repeatable (`refs/heads/*`).
        #[arg(long = "ref")]
        refs: Vec<String>,
        #[arg(long)]
        cron: Option<String>,
        #[arg(long)]
        priority: Option<String>,
        #[arg(long)]
        disabled: bool,
    },
    /// Change a pipeline.
    Update {
        id: String,
        #[arg(long)]
        project: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        trigger: Option<String>,
        #[arg(long)]
        branch: Option<String>,
        #[arg(long = "ref")]
        refs: Vec<String>,
        #[arg(long)]
        cron: Option<String>,
        #[arg(long)]
        priority: Option<String>,
        #[arg(long)]
        disabled: Option<bool>,
    },
    /// Delete a pipeline.
    Delete {
        id: String,
        #[arg(long)]
        project: String,
    },
}

struct Client {
    http: reqwest::Client,
    conn: Connection,
}

impl Client {
    fn new(conn: Connection) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client { http, conn })
    }

    /// `segments` are appended as path segments (percent-encoded), after the base URL.
    fn url(&self, segments: &[&str], extra: &[(&str, &str)]) -> anyhow::Result<reqwest::Url> {
        let mut url =
            reqwest::Url::parse(self.conn.url.trim_end_matches('/')).context("invalid --url")?;
        url.path_segments_mut()
            .map_err(|_| anyhow::anyhow!("--url cannot be a base URL"))?
            .pop_if_empty()
            .extend(segments);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("integrated_account_id", self.conn.account()?);
            if let Some(ws) = &self.conn.workspace {
                q.append_pair("workspace", ws);
            }
            for (k, v) in extra {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(self.conn.token()?);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        let response = req.send().await.context("cannot reach the cigate server")?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            bail!("cigate answered {status}: {text}");
        }
        Ok(response)
    }

    /// Sends and prints the JSON answer (or nothing for 204).
    async fn print(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<()> {
        let response = self.call(method, url, body, idempotency_key).await?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(());
        }
        let value: Value = response.json().await.context("the answer is not JSON")?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        Ok(())
    }
}

/// `KEY=VALUE` pairs as run-time variables.
fn variables(pairs: &[String]) -> anyhow::Result<Vec<Value>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok(json!({"key": k, "value": v})),
            _ => bail!("`--var {p}` must be KEY=VALUE"),
        })
        .collect()
}

fn job_query(scope: &JobScope) -> [(&'static str, &str); 2] {
    [
        ("project", scope.project.as_str()),
        ("workflow", scope.workflow.as_str()),
    ]
}

pub async fn jobs(conn: Connection, command: JobsCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = Client::new(conn)?;
    match command {
        JobsCommand::Run {
            scope,
            branch,
            tag,
            pull_request,
            commit,
            comment,
            variables: vars,
            clear_cache,
            refresh,
            priority,
            idempotency_key,
        } => {
            let mut body = json!({});
            for (k, v) in [
                ("branch", branch),
                ("tag", tag),
                ("pull_request", pull_request),
                ("commit", commit),
                ("comment", comment),
                ("priority", priority),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            if !vars.is_empty() {
                body["variables"] = json!(variables(&vars)?);
            }
            if clear_cache {
                body["clear_cache"] = json!(true);
            }
            if refresh {
                body["refresh"] = json!(true);
            }
            let url = client.url(&["unified", "ci-cd", "jobs"], &job_query(&scope))?;
            client
                .print(Method::POST, url, Some(body), idempotency_key.as_deref())
                .await
        }
        JobsCommand::Cancel { id, scope } => {
            let url = client.url(
                &["unified", "ci-cd", "jobs", &id, "cancel"],
                &job_query(&scope),
            )?;
            client.print(Method::POST, url, None, None).await
        }
        JobsCommand::Retry { id, scope } => {
            let url = client.url(
                &["unified", "ci-cd", "jobs", &id, "retry"],
                &job_query(&scope),
            )?;
            client.print(Method::POST, url, None, None).await
        }
        JobsCommand::Approve {
            id,
            scope,
            variables: vars,
        } => {
            let url = client.url(
                &["unified", "ci-cd", "jobs", &id, "approve"],
                &job_query(&scope),
            )?;
            let body = json!({ "variables": variables(&vars)? });
            client.print(Method::POST, url, Some(body), None).await
        }
        JobsCommand::Logs {
            id,
            scope,
            follow,
            timeout_s,
        } => {
            let timeout = timeout_s.to_string();
            let mut extra = job_query(&scope).to_vec();
            extra.push(("format", "text"));
            if follow {
                extra.push(("follow", "true"));
                extra.push(("timeout_s", &timeout));
            }
            let url = client.url(&["unified", "ci-cd", "jobs", &id, "logs"], &extra)?;
            let mut response = client.call(Method::GET, url, None, None).await?;
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = response.chunk().await.context("the log stream broke")? {
                out.write_all(&chunk)?;
                out.flush()?;
            }
            Ok(())
        }
    }
}

pub async fn workflows(conn: Connection, command: WorkflowsCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = Client::new(conn)?;
    let fields = |name: Option<String>,
                  trigger: Option<String>,
                  branch: Option<String>,
                  refs: Vec<String>,
                  cron: Option<String>,
                  priority: Option<String>,
                  disabled: Option<bool>| {
        let mut body = json!({});
        for (k, v) in [
            ("name", name),
            ("trigger", trigger),
            ("branch", branch),
            ("cron", cron),
            ("priority", priority),
        ] {
            if let Some(v) = v {
                body[k] = json!(v);
            }
        }
        if !refs.is_empty() {
            body["refs"] = json!(refs);
        }
        if let Some(d) = disabled {
            body["disabled"] = json!(d);
        }
        body
    };
    match command {
        WorkflowsCommand::List { project } => {
            let url = client.url(&["unified", "ci-cd", "workflow"], &[("repo", &project)])?;
            client.print(Method::GET, url, None, None).await
        }
        WorkflowsCommand::Create {
            project,
            name,
            trigger,
            branch,
            refs,
            cron,
            priority,
            disabled,
        } => {
            let body = fields(
                Some(name),
                trigger,
                branch,
                refs,
                cron,
                priority,
                disabled.then_some(true),
            );
            let url = client.url(&["unified", "ci-cd", "workflow"], &[("repo", &project)])?;
            client.print(Method::POST, url, Some(body), None).await
        }
        WorkflowsCommand::Update {
            id,
            project,
            name,
            trigger,
            branch,
            refs,
            cron,
            priority,
            disabled,
        } => {
            let body = fields(name, trigger, branch, refs, cron, priority, disabled);
            let url = client.url(
                &["unified", "ci-cd", "workflow", &id],
                &[("repo", &project)],
            )?;
            client.print(Method::PATCH, url, Some(body), None).await
        }
        WorkflowsCommand::Delete { id, project } => {
            let url = client.url(
                &["unified", "ci-cd", "workflow", &id],
                &[("repo", &project)],
            )?;
            client.print(Method::DELETE, url, None, None).await
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print events as they happen, one JSON object per line (from `/events/stream`).
    Tail {
        /// An event type or a prefix pattern such as `job:*`.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only this tenant's events.
        #[arg(long)]
        tenant: Option<String>,
        /// Continue after this position (a printed event's `position`) instead of
        /// starting at the newest event.
        #[arg(long)]
        after: Option<String>,
    },
}

/// One Server-Sent Events message being read: its `id` and `data` lines.
#[derive(Default)]
struct SseMessage {
    id: Option<String>,
    data: Vec<String>,
}

impl SseMessage {
    /// Takes one line (without its line break); a blank line ends the message, which is
    /// then returned as `(id, data)`.
    fn line(&mut self, line: &str) -> Option<(Option<String>, String)> {
        if line.is_empty() {
            let done = std::mem::take(self);
            return (!done.data.is_empty()).then(|| (done.id, done.data.join("\n")));
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => self.id = Some(value.to_owned()),
            "data" => self.data.push(value.to_owned()),
            // Comments (keep-alives), `event` and `retry` need nothing here.
            _ => {}
        }
        None
    }
}

pub async fn events(conn: Connection, command: EventsCommand) -> anyhow::Result<()> {
    let EventsCommand::Tail {
        event_type,
        tenant,
        after,
    } = command;
    let mut url = reqwest::Url::parse(conn.url.trim_end_matches('/')).context("invalid --url")?;
    url.path_segments_mut()
        .map_err(|_| anyhow::anyhow!("--url cannot be a base URL"))?
        .pop_if_empty()
        .extend(["events", "stream"]);
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in [
            ("event_type", event_type.as_deref()),
            ("tenant_id", tenant.as_deref()),
            ("integrated_account_id", conn.account.as_deref()),
            ("after", after.as_deref()),
        ] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
    }
    let client = Client::new(conn)?;
    let mut response = client.call(reqwest::Method::GET, url, None, None).await?;
    let mut message = SseMessage::default();
    let mut pending = Vec::new();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = response.chunk().await.context("the event stream broke")? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if let Some((id, data)) = message.line(line) {
                let mut event: Value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                if let (Some(object), Some(id)) = (event.as_object_mut(), id) {
                    object.insert("position".into(), Value::String(id));
                }
                writeln!(out, "{event}")?;
                out.flush()?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_messages_end_at_a_blank_line_and_skip_comments() {
        let mut m = SseMessage::default();
        assert_eq!(m.line(": keep-alive"), None);
        assert_eq!(m.line(""), None, "a comment alone is no message");
        assert_eq!(m.line("id: 17.abc"), None);
        assert_eq!(m.line("event: job:completed"), None);
        assert_eq!(m.line("data: {\"a\":"), None);
        assert_eq!(m.line("data:1}"), None);
        assert_eq!(
            m.line(""),
            Some((Some("17.abc".into()), "{\"a\":\n1}".into()))
        );
        assert_eq!(m.line(""), None, "the message was taken");
    }

    #[test]
    fn variables_need_key_and_equals() {
        assert_eq!(
            variables(&["A=1=2".into()]).unwrap(),
            vec![json!({"key": "A", "value": "1=2"})]
        );
        assert!(variables(&["novalue".into()]).is_err());
        assert!(variables(&["=x".into()]).is_err());
    }
}

/// What `cigate metrics` asks for; `--account` (or `CIGATE_ACCOUNT`) or `--tenant`.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Every active account of this tenant instead of one account.
    #[arg(long)]
    tenant: Option<String>,
    /// Buddy project name.
    #[arg(long)]
    project: Option<String>,
    /// One pipeline id.
    #[arg(long)]
    workflow: Option<String>,
    /// Start of the window (RFC 3339; default: 30 days before `--to`).
    #[arg(long)]
    from: Option<String>,
    /// End of the window (RFC 3339; default: now).
    #[arg(long)]
    to: Option<String>,
    /// A pipeline id that deploys (repeatable); default: names with deploy, release, prod.
    #[arg(long = "deploy-workflow")]
    deploy_workflows: Vec<String>,
    /// Print the server's JSON instead of the table.
    #[arg(long)]
    json: bool,
}

pub async fn metrics(conn: Connection, args: MetricsArgs) -> anyhow::Result<()> {
    let mut url = reqwest::Url::parse(conn.url.trim_end_matches('/')).context("invalid --url")?;
    url.path_segments_mut()
        .map_err(|_| anyhow::anyhow!("--url cannot be a base URL"))?
        .pop_if_empty()
        .extend(["unified", "ci-cd", "metrics"]);
    {
        let mut q = url.query_pairs_mut();
        match (&args.tenant, conn.account.as_deref()) {
            (Some(tenant), _) => q.append_pair("tenant_id", tenant),
            (None, Some(account)) => q.append_pair("integrated_account_id", account),
            (None, None) => bail!("set --tenant, or --account (or CIGATE_ACCOUNT)"),
        };
        for (k, v) in [
            ("workspace", conn.workspace.as_deref()),
            ("project", args.project.as_deref()),
            ("workflow", args.workflow.as_deref()),
            ("from", args.from.as_deref()),
            ("to", args.to.as_deref()),
        ] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
        for id in &args.deploy_workflows {
            q.append_pair("deploy_workflows[]", id);
        }
    }
    // A long read shows a spinner on a terminal (indicatif draws nothing otherwise).
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message("reading jobs from Buddy");
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let client = Client::new(conn)?;
    let answer = client.call(reqwest::Method::GET, url, None, None).await;
    spinner.finish_and_clear();
    let value: Value = answer?.json().await.context("the answer is not JSON")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    print!("{}", metrics_table(&value));
    Ok(())
}

/// The figures as a plain-text table: one row per workflow, per account (tenant) and
/// for everything.
fn metrics_table(m: &Value) -> String {
    fn num(v: &Value, digits: usize) -> String {
        v.as_f64()
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
    }
    fn pct(v: &Value) -> String {
        v.as_f64()
            .map_or_else(|| "-".to_owned(), |x| format!("{:.1}%", x * 100.0))
    }
    fn row(label: String, f: &Value) -> Vec<String> {
        vec![
            label,
            f["jobs_total"].to_string(),
            pct(&f["success_rate"]),
            num(&f["duration_s"]["p50"], 0),
            num(&f["duration_s"]["p95"], 0),
            f["deployments"].to_string(),
            num(&f["deployment_frequency_per_day"], 2),
            pct(&f["change_failure_rate"]),
            num(&f["mean_time_to_restore_s"], 0),
            num(&f["lead_time_s"], 0),
        ]
    }
    let mut rows = vec![[
        "", "jobs", "success", "p50 s", "p95 s", "deploys", "per day", "CFR", "MTTR s", "lead s",
    ]
    .map(str::to_owned)
    .to_vec()];
    for wf in m["workflows"].as_array().into_iter().flatten() {
        let name = wf["name"].as_str().unwrap_or("");
        let mark = if wf["deploy"] == json!(true) {
            " *"
        } else {
            ""
        };
        let label = format!(
            "{}/{} {}{mark}",
            wf["repo"].as_str().unwrap_or(""),
            wf["workflow"].as_str().unwrap_or(""),
            name
        );
        rows.push(row(label, wf));
    }
    for account in m["accounts"].as_array().into_iter().flatten() {
        let id = account["integrated_account_id"].as_str().unwrap_or("");
        rows.push(row(format!("account {id}"), account));
    }
    rows.push(row("all".to_owned(), m));
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "{} to {}; * = deploy workflow; {} Buddy calls\n",
        m["from"].as_str().unwrap_or(""),
        m["to"].as_str().unwrap_or(""),
        m["upstream_calls"]
    );
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, cell)| match c {
                0 => format!("{cell:<w$}", w = widths[c]),
                _ => format!("{cell:>w$}", w = widths[c]),
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for skipped in m["skipped_accounts"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "skipped: account {} ({})\n",
            skipped["id"].as_str().unwrap_or(""),
            skipped["status"].as_str().unwrap_or("")
        ));
    }
    out
}

#[cfg(test)]
mod metrics_tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_workflow_and_a_total() {
        let m = json!({
            "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "upstream_calls": 9,
            "jobs_total": 3, "success_rate": 0.5, "duration_s": {"p50": 60.0, "p95": 90.0},
            "deployments": 1, "deployment_frequency_per_day": 0.0333, "change_failure_rate": null,
            "mean_time_to_restore_s": null, "lead_time_s": 120.0,
            "workflows": [{"repo": "web", "workflow": "7", "name": "Deploy", "deploy": true,
                "jobs_total": 3, "success_rate": 0.5, "duration_s": {"p50": 60.0, "p95": 90.0},
                "deployments": 1, "deployment_frequency_per_day": 0.0333}],
            "skipped_accounts": [{"id": "acc_2", "status": "needs_reauth"}],
        });
        let table = metrics_table(&m);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("9 Buddy calls"), "{table}");
        assert!(lines[2].starts_with("web/7 Deploy *"), "{table}");
        assert!(
            lines[3].starts_with("all") && lines[3].contains("50.0%") && lines[3].contains("0.03"),
            "{table}"
        );
        assert!(lines[3].ends_with("120"), "{table}");
        assert_eq!(lines[4], "skipped: account acc_2 (needs_reauth)");
    }
}
