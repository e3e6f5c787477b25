//! Pull requests: Buddy's objects only carry the number and the GitHub URL, so the head
//! commit and the last activity are read from the executions that ran on them.
//!
//! Cost, on top of the pulls call: nothing when the page holds no pull request; otherwise
//! the project's pipelines (one call per 50 pipelines) and the first page of executions
//! (50, newest first) of each pipeline whose refs can match a pull request — one call per
//! such pipeline, at most [`MAX_PR_PIPELINES`], with the provider's concurrency bound.
//! Best effort: a call that fails (e.g. a token without `EXECUTION_INFO`) leaves the
//! fields absent instead of failing the read, and nothing is filled in that no execution
//! said.

use cigate_core::PullRequest;
use futures::stream::{self, StreamExt};

use super::{pipeline_path, project_path, Call, MAX_PER_PAGE, SCOPE_EXECUTION};
use crate::{mapping, wire};

/// Pipelines read per enrichment; a project rarely has more that run on pull requests.
pub const MAX_PR_PIPELINES: usize = 10;

/// Whether a pipeline's refs can match `refs/pull/<n>` (explicit pull refs or wildcards).
fn runs_on_pulls(p: &wire::Pipeline) -> bool {
    let covers = |r: &str| {
        let r = r.trim();
        r.starts_with("refs/pull") || r.starts_with("pull/") || r == "*" || r == "refs/*"
    };
    p.refs.iter().flatten().any(|r| covers(r))
        || p.events
            .iter()
            .flatten()
            .flat_map(|e| e.refs.iter().flatten())
            .any(|r| covers(r))
        || p.ref_name.as_deref().is_some_and(covers)
}

/// Whether `e` ran on pull request `number`.
fn ran_on(e: &wire::Execution, number: u64) -> bool {
    e.pull_request
        .as_ref()
        .and_then(wire::RefField::name)
        .or_else(|| e.ref_name())
        .and_then(wire::pull_number)
        == Some(number)
}

/// Enriches `prs` in place from the newest execution that ran on each (see module docs
/// for the cost).
pub(crate) async fn enrich(call: &Call<'_>, ws: &str, repo: &str, prs: &mut [PullRequest]) {
    if prs.iter().all(|pr| pr.number.is_none()) {
        return;
    }
    let pipelines = match call
        .get_all(
            &format!("{}/pipelines", project_path(ws, repo)),
            "pipelines",
            SCOPE_EXECUTION,
        )
        .await
    {
        Ok(p) => p,
        Err(err) => {
            tracing::debug!(error = %err, "pull requests left unenriched: pipelines unreadable");
            return;
        }
    };
    let ids: Vec<String> = pipelines
        .iter()
        .map(wire::parse::<wire::Pipeline>)
        .filter(runs_on_pulls)
        .filter_map(|p| p.id)
        .take(MAX_PR_PIPELINES)
        .collect();
    let executions: Vec<wire::Execution> = stream::iter(ids)
        .map(|id| async move {
            let path = format!("{}/executions", pipeline_path(ws, repo, &id));
            let params = [
                ("page", "1".to_owned()),
                ("per_page", MAX_PER_PAGE.to_string()),
            ];
            match call.get(&path, &params, SCOPE_EXECUTION).await {
                Ok(body) => wire::list_items(&body, "executions")
                    .iter()
                    .map(wire::parse::<wire::Execution>)
                    .collect(),
                Err(err) => {
                    tracing::debug!(error = %err, "pull requests: executions unreadable");
                    Vec::new()
                }
            }
        })
        .buffer_unordered(call.concurrency())
        .flat_map(stream::iter)
        .collect()
        .await;
    for pr in prs.iter_mut() {
        let Some(number) = pr.number else { continue };
        let newest = executions
            .iter()
            .filter(|e| ran_on(e, number))
            .max_by_key(|e| e.start_date);
        if let Some(e) = newest {
            mapping::enrich_pull_request(pr, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pipelines_that_can_run_on_pulls() {
        let p = |v| wire::parse::<wire::Pipeline>(&v);
        assert!(runs_on_pulls(&p(
            json!({"refs": ["refs/heads/main", "refs/pull/*"]})
        )));
        assert!(runs_on_pulls(&p(
            json!({"events": [{"type": "PUSH", "refs": ["refs/pull/*"]}]})
        )));
        assert!(runs_on_pulls(&p(json!({"ref_name": "*"}))));
        assert!(!runs_on_pulls(&p(json!({"refs": ["refs/heads/main"]}))));
        assert!(!runs_on_pulls(&p(json!({}))));
    }

    #[test]
    fn executions_on_a_pull() {
        let e = |v| wire::parse::<wire::Execution>(&v);
        assert!(ran_on(&e(json!({"pull_request": {"name": "pull/3"}})), 3));
        assert!(ran_on(&e(json!({"branch": {"name": "pull/3"}})), 3));
        assert!(!ran_on(&e(json!({"branch": {"name": "pull/3"}})), 5));
        assert!(!ran_on(&e(json!({"branch": {"name": "main"}})), 3));
    }
}
