//! One provision document applied to a fresh workspace, again, changed, as a dry run,
//! broken halfway and corrected, over real HTTP against the simulator.

mod common;

use common::{Backend, Harness};
use serde_json::{json, Value};

const SECRET: &str = "s3cr3t-deploy-token";

fn document(api_url: &str, second_workflow_yaml: &str) -> Value {
    json!({
        "name": "shop-onboarding",
        "repos": [{
            "name": "shop-api", "display_name": "Shop API",
            "workflows": [
                { "name": "Build", "refs": ["refs/heads/main"], "trigger": "push" },
                { "yaml": second_workflow_yaml }
            ],
            "variables": [ { "key": "API_URL", "value": api_url } ]
        }],
        "variables": [
            { "key": "SHOP_DEPLOY_TOKEN", "value": SECRET, "encrypted": true },
            { "key": "REGION", "value": "eu" }
        ]
    })
}

const GOOD_YAML: &str = "- pipeline: deploy\n  name: Deploy\n  refs:\n  - refs/heads/main\n  actions:\n  - action: Ship\n    type: BUILD\n";
const BAD_YAML: &str = "- pipeline: deploy\n  name: Deploy\n  actions: nope\n";

struct Ctx {
    h: Harness,
    q: String,
}

impl Ctx {
    async fn apply(&self, doc: &Value, extra: &str) -> (u16, Value) {
        let response = self
            .h
            .post(&format!("/unified/ci-cd/provision?{}{extra}", self.q))
            .json(doc)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert!(
            !text.contains(SECRET),
            "a secret value in an answer: {text}"
        );
        (status, serde_json::from_str(&text).unwrap())
    }

    /// Buddy write calls (POST, PATCH, DELETE) since the counters were reset.
    fn writes(&self) -> u64 {
        let sim = self.h.sim.sim();
        ["POST", "PATCH", "DELETE"]
            .iter()
            .map(|m| sim.request_count(Some(m), "/workspaces"))
            .sum()
    }
}

fn actions(answer: &Value) -> Vec<(String, String, String)> {
    answer["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_owned(),
                s["key"].as_str().unwrap().to_owned(),
                s["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn count(answer: &Value, action: &str) -> usize {
    actions(answer)
        .iter()
        .filter(|(_, _, a)| a == action)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_is_applied_declaratively() {
    let h = Harness::start(Backend::Sqlite).await.unwrap();
    let account = h.link().await;
    let ws = h.sim.sim().workspace_domains()[0].clone();
    let c = Ctx {
        q: format!("integrated_account_id={account}&workspace={ws}"),
        h,
    };
    let doc = document("https://api.shop.example", GOOD_YAML);

    // A dry run on a fresh workspace plans six creations and writes nothing.
    c.h.sim.sim().reset_request_counts();
    let (status, plan) = c.apply(&doc, "&dry_run=true").await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(count(&plan, "create"), 6, "{plan}");
    assert_eq!(c.writes(), 0);

    // Applied: exactly those objects.
    let (status, first) = c.apply(&doc, "").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(actions(&first), actions(&plan));
    assert!(
        first["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["id"].is_string()),
        "{first}"
    );
    assert_eq!(c.writes(), 6);
    let workflows =
        c.h.buddy_json(&format!("/workspaces/{ws}/projects/shop-api/pipelines"))
            .await;
    let names: Vec<&str> = workflows["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"Build") && names.contains(&"Deploy"));

    // Again: no write call at all.
    c.h.sim.sim().reset_request_counts();
    let (status, again) = c.apply(&doc, "").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(count(&again, "unchanged"), 6, "{again}");
    assert_eq!(c.writes(), 0);

    // One value changed: only that variable is updated; the dry run says the same.
    let changed = document("https://api.shop.example/v2", GOOD_YAML);
    c.h.sim.sim().reset_request_counts();
    let (_, plan) = c.apply(&changed, "&dry_run=true").await;
    assert_eq!(c.writes(), 0);
    let (status, applied) = c.apply(&changed, "").await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(actions(&applied), actions(&plan));
    let updated: Vec<_> = actions(&applied)
        .into_iter()
        .filter(|(_, _, a)| a == "update")
        .collect();
    assert_eq!(
        updated,
        [(
            "variable".to_owned(),
            "repo/shop-api/API_URL".to_owned(),
            "update".to_owned()
        )]
    );
    assert_eq!(c.writes(), 1);

    // Pruning removes what this document created and no longer names.
    let mut fewer = changed.clone();
    fewer["variables"] =
        json!([{ "key": "SHOP_DEPLOY_TOKEN", "value": SECRET, "encrypted": true }]);
    let (status, pruned) = c.apply(&fewer, "&prune=true").await;
    assert_eq!(status, 200, "{pruned}");
    assert_eq!(count(&pruned, "delete"), 1, "{pruned}");
    let vars = c.h.buddy_json(&format!("/workspaces/{ws}/variables")).await;
    assert!(!vars.to_string().contains("\"REGION\""), "{vars}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_halfway_is_finished_by_applying_again() {
    let h = Harness::start(Backend::Sqlite).await.unwrap();
    let account = h.link().await;
    let ws = h.sim.sim().workspace_domains()[0].clone();
    let c = Ctx {
        q: format!("integrated_account_id={account}&workspace={ws}"),
        h,
    };
    // The second workflow is invalid: the run stops there with Buddy's reason.
    let (status, failed) = c.apply(&document("https://a.example", BAD_YAML), "").await;
    assert_eq!(status, 422, "{failed}");
    assert_eq!(failed["type"], "/problems/upstream-rejected");
    let detail = failed["detail"].as_str().unwrap();
    assert!(
        detail.contains("workflow") && detail.contains("actions"),
        "{detail}"
    );

    // Corrected: completes, and the repo and first workflow are not made twice.
    let (status, done) = c.apply(&document("https://a.example", GOOD_YAML), "").await;
    assert_eq!(status, 200, "{done}");
    let acts = actions(&done);
    assert_eq!(
        acts[0],
        ("repo".into(), "shop-api".into(), "unchanged".into()),
        "{done}"
    );
    assert_eq!(
        acts[1],
        (
            "workflow".into(),
            "shop-api/Build".into(),
            "unchanged".into()
        ),
        "{done}"
    );
    assert_eq!(acts[2].2, "create");
    let pipelines =
        c.h.buddy_json(&format!("/workspaces/{ws}/projects/shop-api/pipelines"))
            .await;
    assert_eq!(pipelines["pipelines"].as_array().unwrap().len(), 2);
    let projects = c.h.buddy_json(&format!("/workspaces/{ws}/projects")).await;
    let shops = projects["projects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "shop-api")
        .count();
    assert_eq!(shops, 1);

    // A YAML document works the same; bad documents are refused before any call.
    let yaml_doc = "name: yaml-doc\nvariables:\n- key: FROM_YAML\n  value: \"1\"\n";
    let response =
        c.h.post(&format!("/unified/ci-cd/provision?{}", c.q))
            .header("content-type", "application/yaml")
            .body(yaml_doc)
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), 200);
    for bad in [
        json!({"repos": []}),
        json!({"name": "x", "colour": 1}),
        json!({"name": " "}),
    ] {
        let (status, body) = c.apply(&bad, "").await;
        assert!(status == 400 || status == 422, "{bad}: {status} {body}");
    }
}
