#![allow(dead_code)]

use cigate_buddy_sim::{start, SimConfig, SimHandle, TimeMode};
use reqwest::{Client, Response};
use serde_json::Value;

pub const TOKEN: &str = "7f3e4a2b-1c5d-4e6f-8a9b-0c1d2e3f4a5b";

pub async fn sim_with(f: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut config = SimConfig {
        tokens: vec![TOKEN.to_string()],
        time: TimeMode::Manual,
        ..SimConfig::default()
    };
    f(&mut config);
    start(config).await.expect("simulator starts")
}

pub async fn sim() -> SimHandle {
    sim_with(|_| {}).await
}

pub struct Api {
    pub base: String,
    pub token: String,
    pub client: Client,
}

impl Api {
    pub fn new(h: &SimHandle) -> Self {
        Self {
            base: h.base_url(),
            token: TOKEN.to_string(),
            client: Client::new(),
        }
    }

    pub fn with_token(h: &SimHandle, token: &str) -> Self {
        Self {
            token: token.to_string(),
            ..Self::new(h)
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request")
    }

    pub async fn json(&self, path: &str) -> Value {
        let resp = self.get(path).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().await.expect("json")
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> Response {
        self.client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }
}

pub fn first_message(v: &Value) -> &str {
    v["errors"][0]["message"]
        .as_str()
        .expect("errors[0].message")
}
