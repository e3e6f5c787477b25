//! Every secret a scenario handles, with logging at `trace` for every crate (cigate's,
//! hyper's, reqwest's, sqlx's): none of them appears in the log.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Backend, Harness};
use serde_json::{json, Value};

/// The log, kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_at_trace() {
    let log = Captured::default();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(log.clone())
        .with_ansi(false)
        .init();

    let h = Harness::start(Backend::Sqlite).await.unwrap();
    let mut secrets = vec![h.api_token.clone(), h.buddy_token.clone()];
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
    secrets.push(link["link_token"].as_str().unwrap().to_owned());
    let hook: Value = h
        .post("/webhook")
        .json(&json!({ "target_url": "https://hooks.example.com/in" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    secrets.push(hook["secret"].as_str().unwrap().to_owned());
    h.configure_oauth().await;
    secrets.push(common::OAUTH_CLIENT_SECRET.to_owned());
    let value = "v4riable-secret-value";
    let ws = h.sim.sim().workspace_domains()[0].clone();
    let response = h
        .post(&format!("/unified/ci-cd/variables?{q}&workspace={ws}"))
        .json(&json!({ "key": "LOG_CHECK", "value": value, "encrypted": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    secrets.push(value.to_owned());

    let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    assert!(text.len() > 10_000, "the log is nearly empty: is trace on?");
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a secret in the log ({} chars)",
            secret.len()
        );
    }
}
