//! A gateway on a fresh store (SQLite file, or its own PostgreSQL schema) in front of a
//! fresh Buddy simulator, both on ephemeral ports.
#![allow(dead_code)]

pub mod log_watch;

use std::sync::Mutex;

use cigate_buddy_sim::{SimConfig, SimHandle, TokenSpec};
use cigate_server::{RunningServer, ServerConfig};
use serde_json::{json, Value};

pub const OAUTH_CLIENT_ID: &str = "cigate-test-app";
pub const OAUTH_CLIENT_SECRET: &str = "cigate-test-secret";

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Harness {
    pub sim: SimHandle,
    pub server: RunningServer,
    pub api_token: String,
    pub buddy_token: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub config: ServerConfig,
    /// Secrets the test handled beyond the harness's own, checked against the log when
    /// the harness is dropped (see [`log_watch`]).
    secrets: Mutex<Vec<(String, String)>>,
}

/// What the test OAuth app asks for unless a test wants more.
pub const OAUTH_SCOPES: &[&str] = &[
    "WORKSPACE",
    "EXECUTION_INFO",
    "REPOSITORY_READ",
    "TOKEN_INFO",
];

pub fn postgres_url() -> Option<String> {
    std::env::var("CIGATE_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

pub fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

impl Harness {
    /// `None` (after saying so) when the backend is not available here.
    pub async fn start(backend: Backend) -> Option<Harness> {
        Self::start_with(backend, SimConfig::default()).await
    }

    pub async fn start_with(backend: Backend, sim_config: SimConfig) -> Option<Harness> {
        Self::start_configured(backend, sim_config, |_| {}).await
    }

    /// Like [`Self::start_with`], with the server's configuration adjusted first.
    pub async fn start_configured(
        backend: Backend,
        sim_config: SimConfig,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> Option<Harness> {
        log_watch::log();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = match backend {
            Backend::Sqlite => ServerConfig::for_database(format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("cigate.db").display()
            )),
            Backend::Postgres => {
                let Some(url) = postgres_url() else {
                    eprintln!("skipping PostgreSQL run: CIGATE_TEST_POSTGRES_URL is not set");
                    return None;
                };
                let mut config = ServerConfig::for_database(url);
                config.database_schema = Some(format!("cigate_test_{}", random_suffix()));
                config.key_file = Some(dir.path().join("cigate.key"));
                config
            }
        };
        config.allow_private_upstreams = true;
        // Polling calls Buddy on its own; tests that count calls must not see it, and
        // those about events turn it on.
        config.event_poll_interval = std::time::Duration::ZERO;
        configure(&mut config);
        let sim = cigate_buddy_sim::start(sim_config)
            .await
            .expect("simulator starts");
        let buddy_token = sim.sim().issue_token(TokenSpec::all_scopes());
        let store = cigate_server::store::open(&config)
            .await
            .expect("store opens");
        let env = store
            .ensure_environment("default")
            .await
            .expect("environment");
        let (_, api_token) = store
            .create_api_token(&env.id, Some("test"))
            .await
            .expect("token");
        let state = cigate_server::build_state(config.clone(), store)
            .await
            .expect("state");
        let server = cigate_server::start(state).await.expect("server starts");
        Some(Harness {
            sim,
            server,
            api_token: api_token.expose().to_owned(),
            buddy_token,
            http: reqwest::Client::new(),
            dir,
            config,
            secrets: Mutex::default(),
        })
    }

    /// Adds a secret the test handled (a link token, a webhook secret, a variable's
    /// value) to those the log must not hold.
    pub fn secret(&self, kind: &str, value: &str) {
        let mut secrets = self.secrets.lock().unwrap();
        secrets.push((kind.to_owned(), value.to_owned()));
    }

    /// Every secret this harness's scenario handled so far.
    pub fn secrets(&self) -> Vec<(String, String)> {
        let mut all = vec![("the API token".to_owned(), self.api_token.clone())];
        all.extend(
            self.sim
                .sim()
                .issued_secrets()
                .into_iter()
                .map(|s| ("a credential Buddy issued".to_owned(), s)),
        );
        if let Ok(key) = std::fs::read_to_string(self.dir.path().join("cigate.key")) {
            all.push(("the master key".to_owned(), key.trim().to_owned()));
        }
        all.extend(self.secrets.lock().unwrap().iter().cloned());
        all
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.base_url(), path)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(&self.api_token)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(&self.api_token)
    }

    /// The server's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Links the simulator's account with `token`; returns the response.
    pub async fn link_with(&self, token: &str) -> reqwest::Response {
        self.post("/integrated-account")
            .json(&json!({
                "tenant_id": "acme",
                "integration": "buddy",
                "context": { "api_key": token, "base_url": self.sim.base_url() },
            }))
            .send()
            .await
            .expect("request")
    }

    /// Links the simulator's account; returns its id.
    pub async fn link(&self) -> String {
        let response = self.link_with(&self.buddy_token.clone()).await;
        assert_eq!(
            response.status(),
            201,
            "link answered {:?}",
            response.text().await
        );
        let body: Value = response.json().await.expect("json");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Registers an OAuth app in the simulator and configures it for the environment;
    /// returns the configuration as the API answered it.
    pub async fn configure_oauth(&self) -> Value {
        self.configure_oauth_with(OAUTH_SCOPES).await
    }

    /// [`Harness::configure_oauth`] asking Buddy for `scopes`.
    pub async fn configure_oauth_with(&self, scopes: &[&str]) -> Value {
        self.sim.sim().register_oauth_client(
            OAUTH_CLIENT_ID,
            OAUTH_CLIENT_SECRET,
            &[&self.url("/oauth/callback")],
        );
        let response = self
            .http
            .put(self.url("/environment-integration/buddy"))
            .bearer_auth(&self.api_token)
            .json(&json!({ "oauth": { "client_id": OAUTH_CLIENT_ID, "client_secret": OAUTH_CLIENT_SECRET,
                "scopes": scopes } }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }

    /// GET straight to the simulator with the linked Buddy token: what Buddy holds.
    pub async fn buddy_json(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.sim.base_url()))
            .bearer_auth(&self.buddy_token)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json")
    }

    /// GET returning status and JSON body.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.get(path).send().await.expect("request");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }
}

/// Stopping the gateway with the harness. Having `Drop` also makes `async move` bodies
/// capture the whole harness rather than the fields they name, so the temporary
/// directory (database, key file) lives as long as the test body.
impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
        if !std::thread::panicking() {
            log_watch::check(&self.secrets());
        }
    }
}

/// Runs an async test body once per backend.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                if let Some(h) = Harness::start(Backend::Sqlite).await {
                    ($body)(h).await;
                }
            }
            #[tokio::test]
            async fn postgres() {
                if let Some(h) = Harness::start(Backend::Postgres).await {
                    ($body)(h).await;
                }
            }
        }
    };
}
