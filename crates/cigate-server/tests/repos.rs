//! Repos (Buddy projects) created, changed and deleted through the unified API, and the
//! Git integrations they may mirror, over real HTTP against the simulator.

mod common;

use common::{Backend, Harness};
use serde_json::{json, Value};

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn repos_are_created_from_every_git_source_changed_and_deleted() {
    let h = Harness::start(Backend::Sqlite).await.unwrap();
    let account = h.link().await;
    let ws = h.sim.sim().workspace_domains()[0].clone();
    let q = format!("integrated_account_id={account}&workspace={ws}");

    // Only Git integrations are listed.
    let (status, integrations) = h
        .get_json(&format!("/unified/ci-cd/integrations?{q}"))
        .await;
    assert_eq!(status, 200, "{integrations}");
    let list = integrations["result"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{integrations}");
    assert_eq!(list[0]["type"], "github");
    let github = list[0]["id"].as_str().unwrap().to_owned();

    // Buddy-hosted Git.
    let (status, hosted) = send(
        h.post(&format!("/unified/ci-cd/repos?{q}"))
            .json(&json!({"display_name": "Shop Web", "name": "shop-web"})),
    )
    .await;
    assert_eq!(status, 201, "{hosted}");
    assert_eq!(hosted["id"], "shop-web");
    assert_eq!(hosted["name"], "Shop Web");

    // Mirrored from the GitHub integration.
    let (status, mirrored) = send(h.post(&format!("/unified/ci-cd/repos?{q}")).json(&json!({
        "display_name": "Shop API", "integration": github, "external_repo": "acme/shop-api",
        "allow_pull_requests": true, "access": "public",
    })))
    .await;
    assert_eq!(status, 201, "{mirrored}");
    assert_eq!(mirrored["id"], "shop-api");
    let buddy = h
        .buddy_json(&format!("/workspaces/{ws}/projects/shop-api"))
        .await;
    assert_eq!(buddy["access"], "PUBLIC");
    assert_eq!(buddy["allow_pull_requests"], true);

    // Any Git URL: the password is sent to Buddy and never comes back.
    let response = h
        .post(&format!("/unified/ci-cd/repos?{q}"))
        .json(&json!({
            "display_name": "Legacy", "git_url": "https://git.example.com/legacy.git",
            "git_username": "ci", "git_password": "hunter2-secret",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert!(!response.text().await.unwrap().contains("hunter2-secret"));

    // Buddy's refusal comes back with its status and reason.
    let (status, refused) = send(
        h.post(&format!("/unified/ci-cd/repos?{q}")).json(&json!({
            "display_name": "Ghost", "integration": "no-such-integration", "external_repo": "acme/ghost",
        })),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["type"], "/problems/remote-error");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("Integration not found"),
        "{refused}"
    );
    let (status, taken) = send(
        h.post(&format!("/unified/ci-cd/repos?{q}"))
            .json(&json!({"display_name": "Again", "name": "shop-web"})),
    )
    .await;
    assert_eq!(status, 400, "{taken}");
    assert!(
        taken["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("already exists"),
        "{taken}"
    );
    // Our own checks come first and never reach Buddy.
    for bad in [
        json!({}),
        json!({"display_name": "x", "integration": github}),
        json!({"display_name": "x", "git_url": "file:///etc/passwd"}),
        json!({"display_name": "x", "name": "../up"}),
    ] {
        let (status, body) = send(h.post(&format!("/unified/ci-cd/repos?{q}")).json(&bad)).await;
        assert_eq!(status, 422, "{bad}: {body}");
    }

    // Changed: display name, access; the Git source cannot change.
    let (status, changed) = send(
        h.http
            .patch(h.url(&format!("/unified/ci-cd/repos/shop-web?{q}")))
            .bearer_auth(&h.api_token)
            .json(&json!({"display_name": "Shop Storefront", "access": "public"})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["name"], "Shop Storefront");
    let (status, _) = send(
        h.http
            .patch(h.url(&format!("/unified/ci-cd/repos/shop-web?{q}")))
            .bearer_auth(&h.api_token)
            .json(&json!({"integration": github, "external_repo": "acme/x"})),
    )
    .await;
    assert_eq!(status, 422);

    // Deleted.
    let (status, _) = send(
        h.http
            .delete(h.url(&format!("/unified/ci-cd/repos/shop-web?{q}")))
            .bearer_auth(&h.api_token),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = h
        .get_json(&format!("/unified/ci-cd/repos/shop-web?{q}"))
        .await;
    assert_eq!(status, 404);
    let (_, repos) = h
        .get_json(&format!("/unified/ci-cd/repos?{q}&limit=1000"))
        .await;
    let ids: Vec<&str> = repos["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"shop-api") && ids.contains(&"legacy") && !ids.contains(&"shop-web"),
        "{ids:?}"
    );
}

/// Workflows as code: created and changed from Buddy's pipeline YAML, read back as
/// YAML; a definition Buddy refuses is a 422 with its reason, and nothing is created.
#[tokio::test]
async fn workflows_are_created_changed_and_exported_as_yaml() {
    let h = Harness::start(Backend::Sqlite).await.unwrap();
    let account = h.link().await;
    let ws = h.sim.sim().workspace_domains()[0].clone();
    let repo = h.sim.sim().project_names(&ws)[0].clone();
    let q = format!("integrated_account_id={account}&workspace={ws}&repo={repo}");
    let count = |v: &Value| v["result"].as_array().map_or(0, Vec::len);
    let (_, before) = h.get_json(&format!("/unified/ci-cd/workflow?{q}")).await;

    let yaml = "- pipeline: deploy_shop\n  name: Deploy shop\n  refs:\n  - refs/heads/main\n  actions:\n  - action: Deploy\n    type: BUILD\n";
    let (status, created) = send(
        h.post(&format!("/unified/ci-cd/workflow?{q}"))
            .json(&json!({ "yaml": yaml })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "Deploy shop");
    assert_eq!(created["refs"], json!(["refs/heads/main"]));
    let id = created["id"].as_str().unwrap().to_owned();

    // Read back as YAML.
    let response = h
        .get(&format!("/unified/ci-cd/workflow/{id}?{q}&format=yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/yaml"));
    assert_eq!(response.text().await.unwrap(), yaml);

    // Changed from YAML.
    let changed_yaml = yaml.replace("Deploy shop", "Deploy shop (EU)");
    let (status, changed) = send(
        h.http
            .patch(h.url(&format!("/unified/ci-cd/workflow/{id}?{q}")))
            .bearer_auth(&h.api_token)
            .json(&json!({ "yaml": changed_yaml })),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["name"], "Deploy shop (EU)");

    // A definition Buddy refuses: 422 with Buddy's reason, nothing created.
    let (status, refused) = send(
        h.post(&format!("/unified/ci-cd/workflow?{q}"))
            .json(&json!({ "yaml": "- pipeline: broken\n  actions: nope\n" })),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["type"], "/problems/upstream-rejected");
    assert!(
        refused["detail"].as_str().unwrap().contains("actions"),
        "{refused}"
    );
    let (_, after) = h.get_json(&format!("/unified/ci-cd/workflow?{q}")).await;
    assert_eq!(count(&after), count(&before) + 1);

    // `yaml` comes alone, and `format` is json or yaml.
    let (status, _) = send(
        h.post(&format!("/unified/ci-cd/workflow?{q}"))
            .json(&json!({ "yaml": yaml, "name": "x" })),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = h
        .get_json(&format!("/unified/ci-cd/workflow/{id}?{q}&format=xml"))
        .await;
    assert_eq!(status, 400);
}

/// Self-hosted Buddy (the simulator) creates workspaces through the API.
#[tokio::test]
async fn a_workspace_is_created_on_self_hosted_buddy() {
    let h = Harness::start(Backend::Sqlite).await.unwrap();
    let account = h.link().await;
    let q = format!("integrated_account_id={account}");
    let (status, created) = send(
        h.post(&format!("/unified/ci-cd/workspaces?{q}"))
            .json(&json!({"domain": "acme-eu", "name": "Acme EU"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["id"], "acme-eu");
    let (_, list) = h.get_json(&format!("/unified/ci-cd/workspaces?{q}")).await;
    assert!(
        list["result"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == "acme-eu"),
        "{list}"
    );
    let (status, again) = send(
        h.post(&format!("/unified/ci-cd/workspaces?{q}"))
            .json(&json!({"domain": "acme-eu"})),
    )
    .await;
    assert_eq!(status, 400, "{again}");
    let (status, _) = send(
        h.post(&format!("/unified/ci-cd/workspaces?{q}"))
            .json(&json!({"domain": "-bad"})),
    )
    .await;
    assert_eq!(status, 422);
}
