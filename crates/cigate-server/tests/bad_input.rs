//! Caller mistakes over real HTTP: each is answered with problem+json and a stable
//! `type` (never as Buddy being unreachable), and refused ones never reach Buddy.

mod common;

use cigate_buddy_sim::{FaultKind, FaultSpec};
use common::{Backend, Harness};
use serde_json::{json, Value};

async fn linked() -> (Harness, String) {
    let h = Harness::start(Backend::Sqlite).await.unwrap();
    let id = h.link().await;
    (h, id)
}

/// Status, `Content-Type` and parsed body of a response that must be problem+json.
async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.unwrap();
    assert_eq!(kind, "application/problem+json", "{status}: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], status, "{body}");
    (status, body)
}

#[tokio::test]
async fn scoping_identifiers_that_cannot_name_a_buddy_object_are_400() {
    let (h, id) = linked().await;
    let ws = h.sim.sim().workspace_domains()[0].clone();
    let project = h.sim.sim().project_names(&ws)[0].clone();
    h.sim.sim().reset_request_counts();
    for (path, parameter) in [
        (
            format!("/unified/ci-cd/variables?integrated_account_id={id}&workspace=a%2Fb"),
            "workspace",
        ),
        (
            format!("/unified/ci-cd/jobs?integrated_account_id={id}&workspace={ws}&repo=..&workflow=1"),
            "repo",
        ),
        (
            format!("/unified/ci-cd/repos?integrated_account_id={id}&workspace=acme%00"),
            "workspace",
        ),
        (
            format!("/unified/ci-cd/workflow?integrated_account_id={id}&workspace={ws}&project=a%5Cb"),
            "project",
        ),
        (
            format!("/unified/ci-cd/jobs?integrated_account_id={id}&workspace={ws}&project={project}&workflow=1%0d%0aX:1"),
            "workflow",
        ),
        (
            format!("/unified/ci-cd/repos/a%2Fb?integrated_account_id={id}&workspace={ws}"),
            "id",
        ),
        (
            format!("/unified/ci-cd/workspaces/%25?integrated_account_id={id}"),
            "id",
        ),
    ] {
        let (status, body) = problem(h.get(&path).send().await.unwrap()).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["type"], "/problems/invalid-parameter", "{path}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{parameter}`")),
            "{path}: {message}"
        );
    }
    // Writes check the same parameters before anything else.
    let response = h
        .post(&format!(
            "/unified/ci-cd/jobs?integrated_account_id={id}&workspace=a%2Fb&project={project}&workflow=1"
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(response).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (400, Some("/problems/invalid-parameter"))
    );
    assert_eq!(h.sim.sim().total_requests(), 0, "nothing reached Buddy");

    // A good name still works, and a branch id may hold `/`.
    let (status, body) = h
        .get_json(&format!(
            "/unified/ci-cd/repos?integrated_account_id={id}&workspace={ws}"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = h
        .get_json(&format!(
            "/unified/ci-cd/branches/no%2Fsuch?integrated_account_id={id}&workspace={ws}&repo={project}"
        ))
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn unknown_job_filter_values_name_the_allowed_ones() {
    let (h, id) = linked().await;
    let ws = h.sim.sim().workspace_domains()[0].clone();
    let project = h.sim.sim().project_names(&ws)[0].clone();
    let base =
        format!("/unified/ci-cd/jobs?integrated_account_id={id}&workspace={ws}&project={project}");
    for (filter, allowed) in [
        ("status=done", "queued, in_progress, waiting, completed"),
        (
            "conclusion=ok",
            "passed, failed, cancelled, timeout, skipped, partial",
        ),
    ] {
        let (status, body) =
            problem(h.get(&format!("{base}&{filter}")).send().await.unwrap()).await;
        assert_eq!(status, 400, "{filter}: {body}");
        assert_eq!(body["type"], "/problems/invalid-parameter");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(allowed), "{filter}: {message}");
    }
    let (status, body) = h
        .get_json(&format!("{base}&status=completed&conclusion=passed"))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_credential_with_line_breaks_is_422_before_any_call() {
    let h = Harness::start(Backend::Sqlite).await.unwrap();
    h.sim.sim().reset_request_counts();
    for token in ["abc\r\nX-Injected: 1", "abc\ndef", "abc\u{0}def"] {
        let (status, body) = problem(h.link_with(token).await).await;
        assert_eq!(status, 422, "{token:?}: {body}");
        assert_eq!(body["type"], "/problems/validation-failed");
    }
    assert_eq!(h.sim.sim().total_requests(), 0);
}

#[tokio::test]
async fn an_encoded_line_break_in_a_proxy_path_is_refused() {
    let (h, id) = linked().await;
    h.sim.sim().reset_request_counts();
    for path in [
        "/proxy/workspaces/buddy%0d%0aX-Injected:1",
        "/custom/workspaces/buddy%0D%0AX-Injected:1",
        "/proxy/workspaces/a%0ab",
    ] {
        let response = h
            .get(&format!("{path}?integrated_account_id={id}"))
            .send()
            .await
            .unwrap();
        let (status, body) = problem(response).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["type"], "/problems/invalid-path");
    }
    assert_eq!(h.sim.sim().total_requests(), 0);
}

#[tokio::test]
async fn a_path_id_that_is_not_utf8_is_problem_json() {
    let h = Harness::start(Backend::Sqlite).await.unwrap();
    for path in [
        "/integrated-account/%FF%FE",
        "/unified/ci-cd/%FF/1?integrated_account_id=x",
    ] {
        let (status, body) = problem(h.get(path).send().await.unwrap()).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["type"], "/problems/invalid-parameter");
    }
}

#[tokio::test]
async fn a_method_a_route_lacks_is_405_with_allow() {
    let h = Harness::start(Backend::Sqlite).await.unwrap();
    for (method, path, allow) in [
        (
            reqwest::Method::PUT,
            "/integrated-account",
            vec!["GET", "POST"],
        ),
        (
            reqwest::Method::PUT,
            "/integrated-account/x",
            vec!["GET", "PATCH", "DELETE"],
        ),
        (reqwest::Method::DELETE, "/api-token", vec!["GET", "POST"]),
        (
            reqwest::Method::PUT,
            "/unified/ci-cd/jobs",
            vec!["GET", "POST"],
        ),
        (reqwest::Method::POST, "/healthz", vec!["GET"]),
        (
            reqwest::Method::TRACE,
            "/proxy/workspaces?integrated_account_id=x",
            vec!["GET", "POST", "PUT", "PATCH", "DELETE"],
        ),
        (
            reqwest::Method::from_bytes(b"PROPFIND").unwrap(),
            "/custom/workspaces?integrated_account_id=x",
            vec!["GET", "POST"],
        ),
    ] {
        let response = h
            .http
            .request(method.clone(), h.url(path))
            .bearer_auth(&h.api_token)
            .send()
            .await
            .unwrap();
        let header = response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let (status, body) = problem(response).await;
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert_eq!(body["type"], "/problems/method-not-allowed");
        for m in allow {
            assert!(
                header.contains(m),
                "{method} {path}: Allow {header:?} lacks {m}"
            );
        }
    }
}

#[tokio::test]
async fn proxy_refuses_malformed_json_from_buddy_and_custom_passes_it() {
    let (h, id) = linked().await;
    let ws = h.sim.sim().workspace_domains()[0].clone();
    let path = format!("/workspaces/{ws}/projects");
    h.sim
        .sim()
        .inject(FaultSpec::new(FaultKind::MalformedJson, 1).on_path(&path));
    let response = h
        .get(&format!("/proxy{path}?integrated_account_id={id}"))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(response).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["type"], "/problems/upstream-unreachable");
    // A single object labelled JSON, too.
    let single = format!("/workspaces/{ws}");
    h.sim
        .sim()
        .inject(FaultSpec::new(FaultKind::MalformedJson, 1).on_path(&single));
    let response = h
        .get(&format!("/proxy{single}?integrated_account_id={id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(response).await.0, 502);

    h.sim
        .sim()
        .inject(FaultSpec::new(FaultKind::MalformedJson, 1).on_path(&path));
    let response = h
        .get(&format!("/custom{path}?integrated_account_id={id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "{\"url\":\"truncated\",\"items\":[{\"id\":1,",
        "/custom passes Buddy's body byte for byte"
    );
}
