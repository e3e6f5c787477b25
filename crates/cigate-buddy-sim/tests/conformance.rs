//! Conformance against the shapes of Buddy's documented samples, over real HTTP.

mod common;

use chrono::Duration;
use cigate_buddy_sim::TokenSpec;
use common::{first_message, sim, sim_with, Api, TOKEN};
use reqwest::Method;
use serde_json::{json, Value};

const WS: &str = "/workspaces/acme";

async fn first_project(api: &Api, github: bool) -> String {
    let list = api.json(&format!("{WS}/projects")).await;
    for p in list["projects"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap().to_string();
        let d = api.json(&format!("{WS}/projects/{name}")).await;
        if d["allow_pull_requests"].as_bool().unwrap() == github {
            return name;
        }
    }
    panic!("no project with github={github}");
}

#[tokio::test]
async fn auth_rules_and_error_body() {
    let h = sim().await;
    let api = Api::new(&h);
    let no_token = api
        .client
        .get(format!("{}/workspaces", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    assert!(no_token.headers().contains_key("x-rate-limit-remaining"));
    let body: Value = no_token.json().await.unwrap();
    assert!(!first_message(&body).is_empty());

    let bad = Api::with_token(&h, "00000000-0000-4000-8000-000000000000");
    assert_eq!(bad.get("/workspaces").await.status(), 401);

    let query = api
        .client
        .get(format!("{}/workspaces?access_token={TOKEN}", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), 200);

    let short = h.sim().issue_token(TokenSpec {
        expires_in: Some(60),
        ..TokenSpec::default()
    });
    let short_api = Api::with_token(&h, &short);
    assert_eq!(short_api.get("/workspaces").await.status(), 200);
    h.sim().advance(Duration::seconds(61));
    assert_eq!(short_api.get("/workspaces").await.status(), 401);
    h.shutdown().await;
}

#[tokio::test]
async fn scopes_hierarchy_aliases_and_workspace_restrictions() {
    let h = sim().await;
    let sim = h.sim();
    let info = Api::with_token(
        &h,
        &sim.issue_token(TokenSpec::with_scopes(&["WORKSPACE", "EXECUTION_INFO"])),
    );
    let project = first_project(&info, true).await;
    let pipelines = info
        .json(&format!("{WS}/projects/{project}/pipelines"))
        .await;
    let pid = pipelines["pipelines"][0]["id"].as_u64().unwrap();
    let run_path = format!("{WS}/projects/{project}/pipelines/{pid}/executions");
    let denied = info.send(Method::POST, &run_path, json!({})).await;
    assert_eq!(denied.status(), 403);
    assert!(!first_message(&denied.json().await.unwrap()).is_empty());
    // Repository reads need REPOSITORY_READ.
    assert_eq!(
        info.get(&format!("{WS}/projects/{project}/repository/branches"))
            .await
            .status(),
        403
    );

    let alias = Api::with_token(
        &h,
        &sim.issue_token(TokenSpec::with_scopes(&["PROJECT_READ", "PIPELINE_RUN"])),
    );
    assert_eq!(alias.get(&format!("{WS}/projects")).await.status(), 200);
    assert_eq!(
        alias.get(&run_path).await.status(),
        200,
        "PIPELINE_RUN implies read"
    );
    assert_eq!(
        alias
            .send(Method::POST, &run_path, json!({}))
            .await
            .status(),
        201
    );
    assert_eq!(alias.get("/workspaces").await.status(), 403);

    let restricted = Api::with_token(
        &h,
        &sim.issue_token(TokenSpec {
            workspace_restrictions: vec!["globex".into()],
            ..TokenSpec::default()
        }),
    );
    assert_eq!(restricted.get(WS).await.status(), 403);

    sim.set_api_enabled("acme", false);
    let disabled = Api::new(&h).get(WS).await;
    assert_eq!(disabled.status(), 403);
    assert_eq!(
        first_message(&disabled.json().await.unwrap()),
        "API is disabled in this workspace."
    );
    h.shutdown().await;
}

#[tokio::test]
async fn workspaces_members_and_user() {
    let h = sim().await;
    let api = Api::new(&h);
    let list = api.json("/workspaces").await;
    assert_eq!(list["url"], format!("{}/workspaces", api.base));
    let ws = &list["workspaces"][0];
    for k in ["url", "html_url", "id", "name", "domain"] {
        assert!(!ws[k].is_null(), "{k}");
    }
    let detail = api.json(WS).await;
    assert!(detail["owner_id"].is_u64());
    assert_eq!(detail["frozen"], false);
    assert!(detail["create_date"].as_str().unwrap().ends_with('Z'));

    let members = api.json(&format!("{WS}/members")).await;
    let m = &members["members"][0];
    let id = m["id"].as_u64().unwrap();
    assert_eq!(
        m["url"],
        format!("{}/workspaces/acme/member/{id}", api.base)
    );
    assert!(m["html_url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/acme/profile/{id}")));
    assert!(
        members.get("page").is_none(),
        "no counters outside executions"
    );
    let one = api.json(&format!("{WS}/members/{id}")).await;
    assert_eq!(one["id"], id);

    let user = api.json("/user").await;
    for k in [
        "url",
        "html_url",
        "id",
        "name",
        "avatar_url",
        "workspaces_url",
    ] {
        assert!(!user[k].is_null(), "{k}");
    }
    let token = api.json("/user/token").await;
    assert!(token["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "EXECUTION_RUN"));
    assert!(token["expires_at"].is_null());
    h.shutdown().await;
}

#[tokio::test]
async fn projects_crud_and_media_type() {
    let h = sim().await;
    let api = Api::new(&h);
    let resp = api.get(&format!("{WS}/projects")).await;
    assert_eq!(resp.headers()["x-buddy-media-type"], "buddy.v1.0.0");
    let list: Value = resp.json().await.unwrap();
    let short = list["projects"][0].as_object().unwrap();
    let mut keys: Vec<&str> = short.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["display_name", "html_url", "name", "status", "url"]);

    let created = api
        .send(
            Method::POST,
            &format!("{WS}/projects"),
            json!({"display_name": "Fraud Detection"}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_string();
    let body: Value = created.json().await.unwrap();
    assert_eq!(body["name"], "fraud-detection");
    assert_eq!(location, body["url"].as_str().unwrap());
    for k in [
        "http_repository",
        "ssh_repository",
        "default_branch",
        "status",
        "allow_pull_requests",
        "create_date",
        "created_by",
        "access",
    ] {
        assert!(body.get(k).is_some(), "{k}");
    }
    assert!(
        body["fetch_submodules_env_key"].is_null(),
        "empty fields are null, not omitted"
    );

    let patched = api
        .send(
            Method::PATCH,
            &format!("{WS}/projects/fraud-detection"),
            json!({"display_name": "Fraud"}),
        )
        .await;
    assert_eq!(patched.status(), 200);
    assert_eq!(
        patched.json::<Value>().await.unwrap()["display_name"],
        "Fraud"
    );
    let deleted = api
        .send(
            Method::DELETE,
            &format!("{WS}/projects/fraud-detection"),
            json!({}),
        )
        .await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(
        api.get(&format!("{WS}/projects/fraud-detection"))
            .await
            .status(),
        404
    );
    let bad = api
        .send(Method::POST, &format!("{WS}/projects"), json!({}))
        .await;
    assert_eq!(bad.status(), 400);
    h.shutdown().await;
}

#[tokio::test]
async fn repository_endpoints() {
    let h = sim().await;
    let api = Api::new(&h);
    let gh = first_project(&api, true).await;
    let plain = first_project(&api, false).await;
    let repo = format!("{WS}/projects/{gh}/repository");
    let branches = api.json(&format!("{repo}/branches")).await;
    assert!(branches["branches"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["default"] == true));
    let main = api.json(&format!("{repo}/branches/main")).await;
    let rev = main["commit"]["revision"].as_str().unwrap();
    assert_eq!(rev.len(), 40);
    assert!(rev.chars().all(|c| c.is_ascii_hexdigit()));
    let feature = api
        .json(&format!("{repo}/branches/feature%2Fnew-checkout"))
        .await;
    assert_eq!(feature["name"], "feature/new-checkout");
    let commits = api.json(&format!("{repo}/commits?per_page=5")).await;
    let list = commits["commits"].as_array().unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(list[0]["revision"], rev, "newest first");
    for k in [
        "revision",
        "author_date",
        "commit_date",
        "message",
        "author",
        "committer",
        "url",
        "html_url",
    ] {
        assert!(!list[0][k].is_null(), "{k}");
    }
    let one = api.json(&format!("{repo}/commits/{rev}")).await;
    assert_eq!(one["revision"], rev);
    let tags = api.json(&format!("{repo}/tags")).await;
    assert!(!tags["tags"].as_array().unwrap().is_empty());
    let pulls = api.json(&format!("{repo}/pulls")).await;
    let pr = &pulls["pull_requests"][0];
    assert_eq!(pr["name"], "pull/3");
    assert!(pr["github_html_url"]
        .as_str()
        .unwrap()
        .starts_with("https://github.com/"));
    assert_eq!(pr.as_object().unwrap().len(), 3);
    assert_eq!(api.json(&format!("{repo}/pulls/3")).await["name"], "pull/3");
    let none = api
        .json(&format!("{WS}/projects/{plain}/repository/pulls"))
        .await;
    assert_eq!(none["pull_requests"], json!([]));
    let readme = api.json(&format!("{repo}/contents/README.md")).await;
    assert_eq!(readme["content_type"], "FILE");
    assert_eq!(readme["encoding"], "base64");
    h.shutdown().await;
}

#[tokio::test]
async fn pipelines_and_actions() {
    let h = sim().await;
    let api = Api::new(&h);
    let project = first_project(&api, true).await;
    let list = api
        .json(&format!("{WS}/projects/{project}/pipelines"))
        .await;
    let pl = &list["pipelines"][0];
    assert!(pl.get("on").is_none(), "current model has no `on`");
    for k in [
        "id",
        "name",
        "identifier",
        "refs",
        "events",
        "trigger_conditions",
        "last_execution_status",
        "last_execution_revision",
        "priority",
        "create_date",
        "project",
        "creator",
    ] {
        assert!(pl.get(k).is_some(), "{k}");
    }
    let pid = pl["id"].as_u64().unwrap();
    let v11 = api
        .client
        .get(format!(
            "{}{WS}/projects/{project}/pipelines/{pid}",
            api.base
        ))
        .bearer_auth(TOKEN)
        .header("X-Buddy-Media-Type", "buddy.v1.1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(v11.headers()["x-buddy-media-type"], "buddy.v1.1.0");
    let v11: Value = v11.json().await.unwrap();
    assert_eq!(v11["on"], "EVENT");

    let actions = api
        .json(&format!("{WS}/projects/{project}/pipelines/{pid}/actions"))
        .await;
    let aid = actions["actions"][0]["id"].as_u64().unwrap();
    assert_eq!(
        api.json(&format!(
            "{WS}/projects/{project}/pipelines/{pid}/actions/{aid}"
        ))
        .await["id"],
        aid
    );

    let created = api
        .send(
            Method::POST,
            &format!("{WS}/projects/{project}/pipelines"),
            json!({"name": "Canary", "refs": ["refs/heads/main"]}),
        )
        .await;
    assert_eq!(created.status(), 201);
    assert!(created.headers().contains_key("location"));
    let body: Value = created.json().await.unwrap();
    assert_eq!(body["last_execution_status"], "INITIAL");
    assert!(body["last_execution_revision"].is_null());
    let new_id = body["id"].as_u64().unwrap();
    let path = format!("{WS}/projects/{project}/pipelines/{new_id}");
    assert_eq!(
        api.send(Method::PATCH, &path, json!({"name": "Canary 2"}))
            .await
            .json::<Value>()
            .await
            .unwrap()["name"],
        "Canary 2"
    );
    assert_eq!(
        api.send(Method::DELETE, &path, json!({})).await.status(),
        204
    );
    h.shutdown().await;
}

#[tokio::test]
async fn executions_list_get_and_action_logs() {
    let h = sim().await;
    let api = Api::new(&h);
    let project = first_project(&api, true).await;
    let pid = api
        .json(&format!("{WS}/projects/{project}/pipelines"))
        .await["pipelines"][0]["id"]
        .as_u64()
        .unwrap();
    let base = format!("{WS}/projects/{project}/pipelines/{pid}/executions");
    let list = api.json(&base).await;
    assert_eq!(list["page"], 1);
    assert_eq!(list["page_size"], 20);
    assert_eq!(list["total_element_count"], 50);
    assert_eq!(list["total_page_count"], 3);
    assert_eq!(list["element_count"], 20);
    let items = list["executions"].as_array().unwrap();
    assert_eq!(items[0]["id"], 50, "newest first");
    assert_eq!(items[19]["id"], 31);
    let e = &items[0];
    assert!(e.get("triggeredOn").is_some() && e.get("triggered_on").is_none());
    assert!(
        e["html_url"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .len()
            == 24
    );
    for k in [
        "start_date",
        "finish_date",
        "priority",
        "refresh",
        "status",
        "comment",
        "branch",
        "to_revision",
        "creator",
        "action_executions",
    ] {
        assert!(e.get(k).is_some(), "{k}");
    }
    let beyond = api.json(&format!("{base}?page=99")).await;
    assert_eq!(beyond["executions"], json!([]));

    let detail = api.json(&format!("{base}/50")).await;
    assert_eq!(detail["id"], 50);
    let ae = &detail["action_executions"][0];
    let hex = ae["action_execution_id"].as_str().unwrap();
    assert_eq!(hex.len(), 24);
    let current = api
        .json(&format!("{base}/50/action_executions/{hex}"))
        .await;
    assert!(current["log"].is_array());
    assert_eq!(current["progress"], 100);
    let action_id = ae["action"]["id"].as_u64().unwrap();
    let legacy = api.json(&format!("{base}/50/action/{action_id}")).await;
    assert_eq!(legacy["action_execution_id"], hex);

    // Pipeline summary stays in sync with the newest execution.
    let pl = api
        .json(&format!("{WS}/projects/{project}/pipelines/{pid}"))
        .await;
    assert_eq!(pl["last_execution_status"], detail["status"]);
    assert_eq!(
        pl["last_execution_revision"],
        detail["to_revision"]["revision"]
    );
    assert_eq!(api.get(&format!("{base}/51")).await.status(), 404);
    h.shutdown().await;
}

#[tokio::test]
async fn deterministic_seed() {
    let a = sim().await;
    let b = sim().await;
    let pa = Api::new(&a).json(&format!("{WS}/projects")).await;
    let pb = Api::new(&b).json(&format!("{WS}/projects")).await;
    let names = |v: &Value| {
        v["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&pa), names(&pb));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn base_path_prefix() {
    let h = sim_with(|c| c.base_path = "/api".into()).await;
    assert!(h.base_url().ends_with("/api"));
    let api = Api::new(&h);
    let list = api.json("/workspaces").await;
    assert!(list["workspaces"][0]["url"]
        .as_str()
        .unwrap()
        .contains("/api/workspaces/"));
    h.shutdown().await;
}

#[tokio::test]
async fn big_seed_starts() {
    let h = sim_with(|c| {
        c.seed = "workspaces=1,projects=100,pipelines=10,executions=1000,seed=7"
            .parse()
            .unwrap()
    })
    .await;
    let api = Api::new(&h);
    let sim = h.sim();
    let projects = sim.project_names("acme");
    assert_eq!(projects.len(), 100);
    let pid = sim.pipeline_ids("acme", &projects[99])[9];
    assert_eq!(sim.execution_count("acme", &projects[99], pid), 1000);
    let page = api
        .json(&format!(
            "{WS}/projects/{}/pipelines/{pid}/executions?page=20&per_page=50",
            projects[99]
        ))
        .await;
    assert_eq!(page["executions"].as_array().unwrap().len(), 50);
    assert_eq!(page["executions"][49]["id"], 1);
    h.shutdown().await;
}
