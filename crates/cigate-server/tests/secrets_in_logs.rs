//! Every secret a scenario handles, with logging at `trace` for every crate (cigate's,
//! hyper's, reqwest's, sqlx's): none of them appears in the log. Every other test built
//! on the harness makes the same check when its harness is dropped (`common::log_watch`);
//! this one registers the secrets a scenario makes through the API as well.

mod common;

use common::log_watch::{self, context, find_shaped};
use common::{Backend, Harness};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_at_trace() {
    let h = Harness::start(Backend::Sqlite).await.unwrap();
    let account = h.link().await;

    // Reads, the proxy and a write reach Buddy with the token injected.
    let q = format!("integrated_account_id={account}");
    for path in [
        format!("/unified/ci-cd/workspaces?{q}"),
        format!("/proxy/workspaces?{q}"),
        format!("/custom/workspaces?{q}"),
    ] {
        let (status, _) = h.get_json(&path).await;
        assert_eq!(status, 200, "{path}");
    }
    // A link token, a webhook secret, an OAuth client secret, a variable's value.
    let link: Value = h
        .post("/link-token")
        .json(&json!({ "tenant_id": "acme" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    h.secret("a link token", link["link_token"].as_str().unwrap());
    let hook: Value = h
        .post("/webhook")
        .json(&json!({ "target_url": "https://hooks.example.com/in" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    h.secret("a webhook secret", hook["secret"].as_str().unwrap());
    h.configure_oauth().await;
    let value = "v4riable-secret-value";
    let ws = h.sim.sim().workspace_domains()[0].clone();
    let response = h
        .post(&format!("/unified/ci-cd/variables?{q}&workspace={ws}"))
        .json(&json!({ "key": "LOG_CHECK", "value": value, "encrypted": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    h.secret("a variable's value", value);

    let text = log_watch::log().text();
    if std::env::var("CIGATE_LOG").is_err() {
        assert!(text.len() > 10_000, "the log is nearly empty: is trace on?");
    }
    let secrets = h.secrets();
    assert!(secrets.len() >= 6, "{} secrets", secrets.len());
    log_watch::check(&secrets);
}

#[test]
fn secrets_of_cigate_s_shapes_are_found() {
    let token = format!("cgt_{}", "a1B2-c3D4_".repeat(5));
    assert_eq!(
        find_shaped(&format!("x {token} y")),
        Some(("an API token", 2))
    );
    let hook = format!("secret=whsec_{}", "QUJD".repeat(10));
    assert_eq!(find_shaped(&hook), Some(("a webhook signing secret", 7)));
    // Prefixes followed by too little to be a secret (a test's malformed token).
    assert_eq!(find_shaped("Bearer cgt_wrong, clt_ whsec_not base64"), None);
    assert_eq!(context("a\nkey=SECRET rest\nb", 6, 6), "key=<secret> rest");
}

/// The check sees what is logged: a secret planted in the log fails it.
#[test]
fn a_secret_in_the_log_fails_the_check() {
    log_watch::log();
    let planted = format!("planted-{}", common::random_suffix());
    tracing::error!(credential = %planted, "a careless line");
    let kind = "a planted secret".to_owned();
    let caught = std::panic::catch_unwind(|| log_watch::check(&[(kind, planted.clone())]));
    let message = caught.expect_err("the planted secret was not found");
    let text = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(text.contains("a planted secret reached the log"), "{text}");
    assert!(
        !text.contains(&planted),
        "the report repeats the secret: {text}"
    );
}
