//! Buddy wire objects → the unified model, field by field (api.md "Models", buddy-api.md §6).
//!
//! Pure functions, so they can be unit-tested against Buddy's documented samples and
//! benchmarked. A field Buddy does not have stays `None`; a Buddy value outside the
//! normalised set passes through unchanged.

use cigate_core::model::{
    job_conclusion, job_status, repo_status, workflow_status, workflow_trigger,
};
use cigate_core::{
    Branch, Integration, Job, PullRequest, Record, RemoteData, Repo, Step, Workflow, Workspace,
};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::wire;

/// Where a job was listed from: Buddy's execution objects do not say which pipeline,
/// project or workspace they belong to, the request path does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobContext {
    pub workspace: Option<String>,
    pub repo: Option<String>,
    pub workflow: Option<String>,
    /// The pipeline's name, used as the job's name when known.
    pub workflow_name: Option<String>,
}

/// Buddy execution/action status → (`status`, `conclusion`).
///
/// INITIAL/ENQUEUED → queued; INPROGRESS/TERMINATING → in_progress; WAITING_* → waiting;
/// SUCCESSFUL → completed+passed; FAILED → completed+failed; TERMINATED →
/// completed+cancelled; SKIPPED/NOT_EXECUTED → completed+skipped. Anything else: the raw
/// value as status, no conclusion.
pub fn normalize_status(raw: &str) -> (String, Option<&'static str>) {
    let upper = raw.to_ascii_uppercase();
    let (status, conclusion) = match upper.as_str() {
        "INITIAL" | "ENQUEUED" => (job_status::QUEUED, None),
        "INPROGRESS" | "IN_PROGRESS" | "TERMINATING" => (job_status::IN_PROGRESS, None),
        s if s.starts_with("WAITING") => (job_status::WAITING, None),
        "SUCCESSFUL" => (job_status::COMPLETED, Some(job_conclusion::PASSED)),
        "FAILED" => (job_status::COMPLETED, Some(job_conclusion::FAILED)),
        "TERMINATED" => (job_status::COMPLETED, Some(job_conclusion::CANCELLED)),
        "SKIPPED" | "NOT_EXECUTED" => (job_status::COMPLETED, Some(job_conclusion::SKIPPED)),
        _ => return (raw.to_owned(), None),
    };
    (status.to_owned(), conclusion)
}

fn status_pair(raw: Option<&str>) -> (Option<String>, Option<String>) {
    match raw.filter(|s| !s.is_empty()) {
        Some(raw) => {
            let (status, conclusion) = normalize_status(raw);
            (Some(status), conclusion.map(str::to_owned))
        }
        None => (None, None),
    }
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_ref().filter(|s| !s.is_empty()).cloned()
}

pub fn workspace(w: &wire::Workspace, remote_data: Option<RemoteData>) -> Workspace {
    Workspace {
        // The domain is what every Buddy path uses; the numeric id is kept in remote_data.
        id: non_empty(&w.domain)
            .or_else(|| w.id.clone())
            .unwrap_or_default(),
        name: non_empty(&w.name),
        url: non_empty(&w.html_url),
        created_at: w.create_date,
        updated_at: None,
        remote_data,
    }
}

pub fn repo(p: &wire::Project, workspace: Option<&str>, remote_data: Option<RemoteData>) -> Repo {
    Repo {
        id: non_empty(&p.name).unwrap_or_default(),
        name: non_empty(&p.display_name),
        description: None,
        owner: None,
        owner_type: None,
        visibility: p.access.as_ref().map(|a| a.to_ascii_lowercase()),
        vcs_url: non_empty(&p.http_repository),
        status: p.status.as_deref().map(|s| match s {
            "ACTIVE" => repo_status::ACTIVE.to_owned(),
            "CLOSED" => repo_status::INACTIVE.to_owned(),
            other => other.to_owned(),
        }),
        default_branch: non_empty(&p.default_branch),
        url: non_empty(&p.html_url),
        workspace: workspace.map(str::to_owned),
        created_at: p.create_date,
        updated_at: None,
        remote_data,
    }
}

pub fn branch(b: &wire::Branch, repo: Option<&str>, remote_data: Option<RemoteData>) -> Branch {
    let name = non_empty(&b.name).unwrap_or_default();
    let commit = b.commit.as_ref();
    let by = commit.and_then(|c| c.author.as_ref().or(c.committer.as_ref()));
    Branch {
        id: name.clone(),
        name,
        repo: repo.map(str::to_owned),
        last_commit: commit.and_then(|c| non_empty(&c.revision)),
        last_commit_by: by.and_then(|m| non_empty(&m.name).or_else(|| non_empty(&m.email))),
        last_commit_message: commit.and_then(|c| c.message.clone()),
        last_commit_at: commit.and_then(|c| c.commit_date.or(c.author_date)),
        is_default: b.default,
        remote_data,
    }
}

pub fn pull_request(pr: &wire::PullRequest, remote_data: Option<RemoteData>) -> PullRequest {
    let number = pr.number();
    PullRequest {
        id: number
            .map(|n| n.to_string())
            .or_else(|| non_empty(&pr.name))
            .unwrap_or_default(),
        number,
        url: non_empty(&pr.github_html_url).or_else(|| non_empty(&pr.html_url)),
        remote_data,
        ..PullRequest::default()
    }
}

/// What an execution tells about a pull request it ran on, for enriching Buddy's minimal
/// PR objects: the head commit and when it last ran.
pub fn enrich_pull_request(pr: &mut PullRequest, execution: &wire::Execution) {
    let head = pr.head_branch.get_or_insert_with(Default::default);
    if head.last_commit.is_none() {
        head.last_commit = execution
            .to_revision
            .as_ref()
            .and_then(|c| non_empty(&c.revision));
    }
    if head.last_commit.is_none() && head.id.is_none() && head.name.is_none() {
        pr.head_branch = None;
    }
    if pr.updated_at.is_none() {
        pr.updated_at = execution.start_date;
    }
}

/// `on` (v1.1) if present, else `trigger_mode` (v1.0), else the first event type (current
/// model); no trigger at all means manual.
pub fn workflow_trigger_of(p: &wire::Pipeline) -> String {
    let from_events = || {
        p.events
            .iter()
            .flatten()
            .find_map(|e| e.kind.as_deref().filter(|k| !k.is_empty()))
            .map(event_trigger)
    };
    if let Some(on) = p.on.as_deref().filter(|s| !s.is_empty()) {
        return match on {
            "CLICK" => workflow_trigger::MANUAL.to_owned(),
            "SCHEDULE" => workflow_trigger::SCHEDULE.to_owned(),
            "EVENT" => from_events().unwrap_or_else(|| workflow_trigger::PUSH.to_owned()),
            other => other.to_ascii_lowercase(),
        };
    }
    if let Some(mode) = p.trigger_mode.as_deref().filter(|s| !s.is_empty()) {
        return match mode {
            "MANUAL" => workflow_trigger::MANUAL.to_owned(),
            "SCHEDULED" => workflow_trigger::SCHEDULE.to_owned(),
            "ON_EVERY_PUSH" => workflow_trigger::PUSH.to_owned(),
            other => other.to_ascii_lowercase(),
        };
    }
    from_events().unwrap_or_else(|| workflow_trigger::MANUAL.to_owned())
}

fn event_trigger(kind: &str) -> String {
    match kind {
        "PUSH" => workflow_trigger::PUSH.to_owned(),
        "SCHEDULE" => workflow_trigger::SCHEDULE.to_owned(),
        other => other.to_ascii_lowercase(),
    }
}

pub fn workflow(
    p: &wire::Pipeline,
    workspace: Option<&str>,
    repo: Option<&str>,
    remote_data: Option<RemoteData>,
) -> Workflow {
    let refs: Option<Vec<String>> = match (&p.refs, &p.ref_name) {
        (Some(refs), _) => Some(refs.clone()),
        (None, Some(name)) if !name.is_empty() => Some(vec![name.clone()]),
        _ => None,
    };
    // A single concrete branch ref is also exposed as `branch`.
    let branch = match refs.as_deref() {
        Some([only]) if !only.contains('*') => only.strip_prefix("refs/heads/").map(str::to_owned),
        _ => None,
    };
    let (last_job_status, last_job_conclusion) = match p.last_execution_status.as_deref() {
        // INITIAL on a pipeline means "never run", not a queued job.
        Some("INITIAL") => (None, None),
        other => status_pair(other),
    };
    Workflow {
        id: p.id.clone().unwrap_or_default(),
        name: non_empty(&p.name),
        repo: repo
            .map(str::to_owned)
            .or_else(|| p.project.as_ref().and_then(|pr| non_empty(&pr.name))),
        workspace: workspace.map(str::to_owned),
        trigger: Some(workflow_trigger_of(p)),
        branch,
        refs,
        status: Some(
            if p.disabled == Some(true) {
                workflow_status::DISABLED
            } else {
                workflow_status::ACTIVE
            }
            .to_owned(),
        ),
        last_job_status,
        last_job_conclusion,
        last_job_at: None,
        last_job_commit: non_empty(&p.last_execution_revision),
        url: non_empty(&p.html_url),
        created_at: p.create_date,
        updated_at: None,
        remote_data,
    }
}

pub fn step(a: &wire::ActionExecution) -> Step {
    let (status, conclusion) = status_pair(a.status.as_deref());
    let action = a.action.as_ref();
    Step {
        id: a
            .action_execution_id
            .clone()
            .or_else(|| action.and_then(|x| x.id.clone()))
            .unwrap_or_default(),
        name: action.and_then(|x| non_empty(&x.name)),
        status,
        conclusion,
        started_at: a.start_date,
        completed_at: a.finish_date,
    }
}

/// Buddy has no separate creation time for an execution; `start_date` is set when it is
/// created (queued ones included), so it also serves as `created_at`, which is what the
/// `created_at[gte|lte]` filters and the newest-first merge use.
///
/// Buddy reports an execution held at an approval or arguments gate as INPROGRESS with
/// the gate's action WAITING_*; the job is `waiting` then, so callers know to approve.
pub fn job(e: &wire::Execution, ctx: &JobContext, remote_data: Option<RemoteData>) -> Job {
    let (mut status, conclusion) = status_pair(e.status.as_deref());
    let gated = e.action_executions.iter().flatten().any(|a| {
        a.status
            .as_deref()
            .is_some_and(|s| s.to_ascii_uppercase().starts_with("WAITING"))
    });
    if gated && status.as_deref() == Some(job_status::IN_PROGRESS) {
        status = Some(job_status::WAITING.to_owned());
    }
    let duration_ms = match (e.start_date, e.finish_date) {
        (Some(s), Some(f)) => Some((f - s).num_milliseconds()),
        _ => None,
    };
    let pipeline = e.pipeline.as_ref();
    Job {
        id: e.id.clone().unwrap_or_default(),
        name: pipeline
            .and_then(|p| non_empty(&p.name))
            .or_else(|| ctx.workflow_name.clone()),
        build: None,
        status,
        conclusion,
        commit: e.to_revision.as_ref().and_then(|c| non_empty(&c.revision)),
        commit_at: e
            .to_revision
            .as_ref()
            .and_then(|c| c.commit_date.or(c.author_date)),
        branch: e.ref_name().map(str::to_owned),
        attempts: None,
        workflow: ctx
            .workflow
            .clone()
            .or_else(|| pipeline.and_then(|p| p.id.clone())),
        repo: ctx.repo.clone(),
        workspace: ctx.workspace.clone(),
        triggered_by: e.creator.as_ref().and_then(|c| non_empty(&c.name)),
        trigger: e
            .triggered_on()
            .or(e.mode.as_deref())
            .filter(|t| !t.is_empty())
            .map(str::to_ascii_lowercase),
        comment: e.comment.clone(),
        url: non_empty(&e.html_url),
        steps: e
            .action_executions
            .as_ref()
            .map(|actions| actions.iter().map(step).collect()),
        created_at: e.start_date,
        updated_at: None,
        started_at: e.start_date,
        completed_at: e.finish_date,
        queued_duration_ms: None,
        duration_ms,
        remote_data,
    }
}

/// A Buddy integration when it is a Git host's (the kind a project can mirror); `None`
/// for the others (Slack, cloud accounts, …).
pub fn integration(raw: &Value) -> Option<Integration> {
    let kind = raw.get("type")?.as_str()?;
    let kind = match kind {
        "GIT_HUB" => "github".to_owned(),
        "GIT_LAB" => "gitlab".to_owned(),
        "BITBUCKET" => "bitbucket".to_owned(),
        other if other.contains("GIT") || other.contains("BITBUCKET") => {
            other.to_ascii_lowercase().replace('_', "")
        }
        _ => return None,
    };
    Some(Integration {
        id: raw.get("hash_id")?.as_str()?.to_owned(),
        kind,
        name: raw.get("name").and_then(Value::as_str).map(str::to_owned),
        remote_data: RemoteData::from_value(raw),
    })
}

/// Records from Buddy's objects as it sent them: each parsed once into its wire type,
/// and its bytes kept, not copied into a tree, as `remote_data`.
pub mod records {
    use super::*;

    pub fn workspace(raw: Box<RawValue>) -> Record {
        let w = wire::parse_raw(&raw);
        Record::new(super::workspace(&w, RemoteData::new(raw)))
    }

    pub fn repo(raw: Box<RawValue>, workspace: Option<&str>) -> Record {
        let p = wire::parse_raw(&raw);
        Record::new(super::repo(&p, workspace, RemoteData::new(raw)))
    }

    pub fn branch(raw: Box<RawValue>, repo: Option<&str>) -> Record {
        let b = wire::parse_raw(&raw);
        Record::new(super::branch(&b, repo, RemoteData::new(raw)))
    }

    /// Not a record yet: Buddy's pull requests are minimal, the provider enriches them.
    pub fn pull_request(raw: Box<RawValue>) -> PullRequest {
        let pr = wire::parse_raw(&raw);
        super::pull_request(&pr, RemoteData::new(raw))
    }

    pub fn workflow(raw: Box<RawValue>, workspace: Option<&str>, repo: Option<&str>) -> Record {
        let p = wire::parse_raw(&raw);
        Record::new(super::workflow(&p, workspace, repo, RemoteData::new(raw)))
    }

    pub fn job(raw: Box<RawValue>, ctx: &JobContext) -> Record {
        let e = wire::parse_raw(&raw);
        Record::new(super::job(&e, ctx, RemoteData::new(raw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse;
    use serde_json::json;

    #[test]
    fn a_job_held_at_a_gate_is_waiting() {
        let raw = json!({"id": 4, "status": "INPROGRESS", "action_executions": [
            {"action_execution_id": "a", "status": "SUCCESSFUL"},
            {"action_execution_id": "b", "status": "WAITING_FOR_APPLY"}]});
        let j = job(
            &parse(&raw),
            &JobContext::default(),
            RemoteData::from_value(&raw),
        );
        assert_eq!(j.status.as_deref(), Some("waiting"));
        let running = json!({"id": 4, "status": "INPROGRESS", "action_executions": [
            {"action_execution_id": "a", "status": "INPROGRESS"}]});
        let j = job(
            &parse(&running),
            &JobContext::default(),
            RemoteData::from_value(&running),
        );
        assert_eq!(j.status.as_deref(), Some("in_progress"));
        let cancelling = json!({"id": 4, "status": "TERMINATED", "action_executions": [
            {"action_execution_id": "b", "status": "WAITING_FOR_APPLY"}]});
        let j = job(
            &parse(&cancelling),
            &JobContext::default(),
            RemoteData::from_value(&cancelling),
        );
        assert_eq!(j.status.as_deref(), Some("completed"));
    }

    #[test]
    fn workspace_sample() {
        let raw = json!({"url":"https://api.buddy.works/workspaces/buddy","html_url":"https://app.buddy.works/buddy",
            "id":1,"owner_id":1,"name":"buddy","domain":"buddy","frozen":false,"create_date":"2016-02-29T11:22:40Z"});
        let w = workspace(&parse(&raw), RemoteData::from_value(&raw));
        assert_eq!(w.id, "buddy");
        assert_eq!(w.name.as_deref(), Some("buddy"));
        assert_eq!(w.url.as_deref(), Some("https://app.buddy.works/buddy"));
        assert_eq!(
            w.created_at.unwrap().to_rfc3339(),
            "2016-02-29T11:22:40+00:00"
        );
        assert_eq!(w.remote_data, RemoteData::from_value(&raw));
    }

    #[test]
    fn project_sample() {
        let raw = json!({"url":"https://api.buddy.works/workspaces/buddy/projects/company-website",
            "html_url":"https://app.buddy.works/buddy/company-website","name":"company-website",
            "display_name":"Company Website","status":"ACTIVE","create_date":"2016-02-29T11:23:04Z",
            "created_by":{"id":1,"name":"Mike Benson"},
            "http_repository":"https://app.buddy.works/buddy/company-website",
            "ssh_repository":"buddy@app.buddy.works:buddy/company-website","default_branch":"master",
            "access":"PUBLIC","fetch_submodules":true,"allow_pull_requests":true});
        let r = repo(&parse(&raw), Some("buddy"), RemoteData::from_value(&raw));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["id"], "company-website");
        assert_eq!(v["name"], "Company Website");
        assert_eq!(v["status"], "active");
        assert_eq!(v["visibility"], "public");
        assert_eq!(
            v["vcs_url"],
            "https://app.buddy.works/buddy/company-website"
        );
        assert_eq!(v["default_branch"], "master");
        assert_eq!(v["url"], "https://app.buddy.works/buddy/company-website");
        assert_eq!(v["workspace"], "buddy");
        for absent in ["description", "owner", "owner_type", "updated_at"] {
            assert!(v.get(absent).is_none(), "{absent}");
        }
        let closed = json!({"name": "old", "status": "CLOSED"});
        assert_eq!(
            repo(&parse(&closed), None, RemoteData::from_value(&closed))
                .status
                .as_deref(),
            Some("inactive")
        );
        let odd = json!({"name": "x", "status": "ARCHIVED_SOMEHOW"});
        assert_eq!(
            repo(&parse(&odd), None, RemoteData::from_value(&odd))
                .status
                .as_deref(),
            Some("ARCHIVED_SOMEHOW")
        );
    }

    #[test]
    fn branch_sample() {
        let raw = json!({"url":"u","html_url":"h","name":"master","default":true,"commit":{
            "revision":"506a3963507943d6908154f4bc9646e829128a08","author_date":"2016-01-19T12:36:33Z",
            "commit_date":"2016-01-19T12:36:33Z","message":"init repo\n",
            "committer":{"id":1,"name":"Mike Benson"},"author":{"id":1,"name":"Mike Benson"}}});
        let b = branch(
            &parse(&raw),
            Some("company-website"),
            RemoteData::from_value(&raw),
        );
        assert_eq!(b.id, "master");
        assert_eq!(b.is_default, Some(true));
        assert_eq!(
            b.last_commit.as_deref(),
            Some("506a3963507943d6908154f4bc9646e829128a08")
        );
        assert_eq!(b.last_commit_by.as_deref(), Some("Mike Benson"));
        assert_eq!(b.last_commit_message.as_deref(), Some("init repo\n"));
        assert!(b.last_commit_at.is_some());
        let short = json!({"name": "dev", "default": false});
        let b = branch(&parse(&short), None, RemoteData::from_value(&short));
        assert_eq!(b.last_commit, None);
    }

    #[test]
    fn pull_request_sample_invents_nothing() {
        let raw = json!({"url":"https://api.buddy.works/workspaces/buddy/projects/company-website/repository/pulls/3",
            "name":"pull/3","github_html_url":"https://github.com/orgs/buddy-works/pull-request-repo/pull/3"});
        let pr = pull_request(&parse(&raw), RemoteData::from_value(&raw));
        let v = serde_json::to_value(&pr).unwrap();
        assert_eq!(
            v,
            json!({"id": "3", "number": 3,
                "url": "https://github.com/orgs/buddy-works/pull-request-repo/pull/3", "remote_data": raw})
        );
    }

    #[test]
    fn pull_request_enrichment() {
        let raw = json!({"name": "pull/3"});
        let mut pr = pull_request(&parse(&raw), RemoteData::from_value(&raw));
        let e: wire::Execution = parse(&json!({"pull_request": {"name": "pull/3"},
            "to_revision": {"revision": "abc"}, "start_date": "2024-01-01T00:00:00Z"}));
        enrich_pull_request(&mut pr, &e);
        assert_eq!(pr.head_branch.unwrap().last_commit.as_deref(), Some("abc"));
        assert!(pr.updated_at.is_some());
    }

    #[test]
    fn pipeline_current_model() {
        let raw = json!({"url":"https://api.buddy.works/workspaces/buddy/projects/company-website/pipelines/2",
            "html_url":"https://app.buddy.works/buddy/company-website/pipelines/pipeline/2",
            "id":2,"identifier":"live-mirror","name":"Live mirror","refs":["refs/heads/master"],
            "events":[{"type":"PUSH","refs":["refs/heads/master"]}],"trigger_conditions":[{"trigger_condition":"ON_CHANGE"}],
            "priority":"NORMAL","last_execution_status":"SUCCESSFUL","last_execution_revision":"506a",
            "create_date":"2016-02-29T11:23:12Z","disabled":false,"paused":false,"definition_source":"LOCAL",
            "project":{"name":"company-website","display_name":"Company Website","status":"ACTIVE"}});
        let w = workflow(
            &parse(&raw),
            Some("buddy"),
            Some("company-website"),
            RemoteData::from_value(&raw),
        );
        assert_eq!(w.id, "2");
        assert_eq!(w.name.as_deref(), Some("Live mirror"));
        assert_eq!(w.trigger.as_deref(), Some("push"));
        assert_eq!(w.refs, Some(vec!["refs/heads/master".to_owned()]));
        assert_eq!(w.branch.as_deref(), Some("master"));
        assert_eq!(w.status.as_deref(), Some("active"));
        assert_eq!(w.last_job_status.as_deref(), Some("completed"));
        assert_eq!(w.last_job_conclusion.as_deref(), Some("passed"));
        assert_eq!(w.last_job_commit.as_deref(), Some("506a"));
        assert_eq!(
            w.url.as_deref(),
            Some("https://app.buddy.works/buddy/company-website/pipelines/pipeline/2")
        );
    }

    #[test]
    fn pipeline_v11_model_and_triggers() {
        let cases = [
            (
                json!({"id": 1, "on": "CLICK", "refs": ["refs/heads/*"]}),
                "manual",
            ),
            (
                json!({"id": 1, "on": "SCHEDULE", "cron": "0 * * * *"}),
                "schedule",
            ),
            (
                json!({"id": 1, "on": "EVENT", "events": [{"type": "PUSH"}]}),
                "push",
            ),
            (json!({"id": 1, "on": "EVENT"}), "push"),
            (
                json!({"id": 1, "events": [{"type": "SCHEDULE", "cron": "0 * * * *"}]}),
                "schedule",
            ),
            (
                json!({"id": 1, "events": [{"type": "PULL_REQUEST"}]}),
                "pull_request",
            ),
            (
                json!({"id": 1, "events": [], "refs": ["refs/heads/main"]}),
                "manual",
            ),
            (json!({"id": 1}), "manual"),
            (
                json!({"id": 1, "trigger_mode": "ON_EVERY_PUSH", "ref_name": "master"}),
                "push",
            ),
        ];
        for (raw, trigger) in cases {
            let w = workflow(&parse(&raw), None, None, RemoteData::from_value(&raw));
            assert_eq!(w.trigger.as_deref(), Some(trigger), "{raw}");
        }
        let wild = json!({"id": 1, "on": "CLICK", "refs": ["refs/heads/*"], "disabled": true,
            "last_execution_status": "INITIAL"});
        let w = workflow(&parse(&wild), None, None, RemoteData::from_value(&wild));
        assert_eq!(w.branch, None);
        assert_eq!(w.status.as_deref(), Some("disabled"));
        assert_eq!(w.last_job_status, None);
    }

    #[test]
    fn execution_sample() {
        let raw = json!({"url":".../pipelines/2/executions/1",
            "html_url":"https://app.buddy.works/buddy/company-website/pipelines/pipeline/2/execution/56fa2a981faaf061c7c9e0a0",
            "id":1,"start_date":"2016-03-29T07:11:20.278Z","finish_date":"2016-03-29T07:11:22.527Z",
            "priority":"NORMAL","triggeredOn":"CLICK","refresh":false,"status":"SUCCESSFUL","comment":"",
            "branch":{"name":"master","default":true},"to_revision":{"revision":"506a"},
            "creator":{"id":1,"name":"Mike Benson"},
            "action_executions":[{"action_execution_id":"6836dca490f5896b4bb8e6a7","status":"SUCCESSFUL",
                "start_date":"2025-05-28T09:51:00Z","finish_date":"2025-05-28T09:52:10Z",
                "action":{"id":2,"name":"Build application","type":"BUILD"}}]});
        let ctx = JobContext {
            workspace: Some("buddy".into()),
            repo: Some("company-website".into()),
            workflow: Some("2".into()),
            workflow_name: None,
        };
        let j = job(&parse(&raw), &ctx, RemoteData::from_value(&raw));
        assert_eq!(j.id, "1");
        assert_eq!(j.status.as_deref(), Some("completed"));
        assert_eq!(j.conclusion.as_deref(), Some("passed"));
        assert_eq!(j.commit.as_deref(), Some("506a"));
        assert_eq!(j.branch.as_deref(), Some("master"));
        assert_eq!(j.trigger.as_deref(), Some("click"));
        assert_eq!(j.triggered_by.as_deref(), Some("Mike Benson"));
        assert_eq!(j.duration_ms, Some(2249));
        assert_eq!(j.workflow.as_deref(), Some("2"));
        assert_eq!(j.repo.as_deref(), Some("company-website"));
        assert_eq!(j.workspace.as_deref(), Some("buddy"));
        assert_eq!(j.comment.as_deref(), Some(""));
        let steps = j.steps.unwrap();
        assert_eq!(steps[0].id, "6836dca490f5896b4bb8e6a7");
        assert_eq!(steps[0].name.as_deref(), Some("Build application"));
        assert_eq!(steps[0].conclusion.as_deref(), Some("passed"));
    }

    #[test]
    fn execution_triggered_on_snake_and_nulls() {
        let raw = json!({"id": 5, "triggered_on": "SCHEDULE", "status": "INPROGRESS",
            "start_date": "2024-01-01T00:00:00Z", "finish_date": null, "branch": "develop",
            "creator": null, "to_revision": null, "action_executions": null});
        let j = job(
            &parse(&raw),
            &JobContext::default(),
            RemoteData::from_value(&raw),
        );
        assert_eq!(j.trigger.as_deref(), Some("schedule"));
        assert_eq!(j.status.as_deref(), Some("in_progress"));
        assert_eq!(j.conclusion, None);
        assert_eq!(j.duration_ms, None);
        assert_eq!(j.branch.as_deref(), Some("develop"));
        assert_eq!(j.steps, None);
        let v = serde_json::to_value(&j).unwrap();
        for absent in [
            "commit",
            "triggered_by",
            "completed_at",
            "steps",
            "conclusion",
        ] {
            assert!(v.get(absent).is_none(), "{absent}");
        }
    }

    #[test]
    fn status_normalisation_and_passthrough() {
        let cases = [
            ("INITIAL", "queued", None),
            ("ENQUEUED", "queued", None),
            ("INPROGRESS", "in_progress", None),
            ("TERMINATING", "in_progress", None),
            ("WAITING_FOR_APPLY", "waiting", None),
            ("WAITING_FOR_VARIABLES", "waiting", None),
            ("SUCCESSFUL", "completed", Some("passed")),
            ("FAILED", "completed", Some("failed")),
            ("TERMINATED", "completed", Some("cancelled")),
            ("SKIPPED", "completed", Some("skipped")),
            ("NOT_EXECUTED", "completed", Some("skipped")),
            ("SOMETHING_NEW", "SOMETHING_NEW", None),
        ];
        for (raw, status, conclusion) in cases {
            let (s, c) = normalize_status(raw);
            assert_eq!((s.as_str(), c), (status, conclusion), "{raw}");
        }
        let raw = json!({"id": 9, "status": "SOMETHING_NEW"});
        let j = job(
            &parse(&raw),
            &JobContext::default(),
            RemoteData::from_value(&raw),
        );
        assert_eq!(j.status.as_deref(), Some("SOMETHING_NEW"));
    }

    #[test]
    fn only_git_integrations_map() {
        let gh = serde_json::json!({"hash_id": "a1", "type": "GIT_HUB", "name": "GitHub"});
        let i = integration(&gh).unwrap();
        assert_eq!((i.id.as_str(), i.kind.as_str()), ("a1", "github"));
        let ghe = serde_json::json!({"hash_id": "b2", "type": "GIT_HUB_ENTERPRISE"});
        assert_eq!(integration(&ghe).unwrap().kind, "githubenterprise");
        assert!(integration(&serde_json::json!({"hash_id": "c3", "type": "SLACK"})).is_none());
        assert!(integration(&serde_json::json!({"type": "GIT_LAB"})).is_none());
    }
}
