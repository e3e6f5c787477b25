//! Accounts, tokens and tenancy over real HTTP, against the Buddy simulator, on both stores.

mod common;

use common::{Backend, Harness};
use serde_json::{json, Value};

both_backends!(no_token_or_bad_token_is_401, |h: Harness| async move {
    let anonymous = h
        .http
        .get(h.url("/integrated-account"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["type"], "/problems/unauthorized");
    assert_eq!(body["statusCode"], 401);
    let wrong = h
        .http
        .get(h.url("/integrated-account"))
        .bearer_auth("cgt_not-a-real-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
});

both_backends!(link_read_back_and_delete, |h: Harness| async move {
    let id = h.link().await;
    let (status, account) = h.get_json(&format!("/integrated-account/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(account["status"], "active");
    assert_eq!(account["tenant_id"], "acme");
    assert_eq!(account["integration"]["name"], "buddy");
    assert_eq!(account["authentication_method"], "api_key");
    assert!(account["context"]["base_url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1"));
    assert!(
        !account.to_string().contains(&h.buddy_token),
        "the token leaked"
    );

    let (_, list) = h.get_json("/integrated-account?tenant_id=acme").await;
    assert_eq!(list["result_count"], 1);
    assert!(list["next_cursor"].is_null());
    let (_, none) = h.get_json("/integrated-account?tenant_id=other").await;
    assert_eq!(none["result_count"], 0);

    let patched: Value = h
        .http
        .patch(h.url(&format!("/integrated-account/{id}")))
        .bearer_auth(&h.api_token)
        .json(&json!({ "tenant_id": "acme-2" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["tenant_id"], "acme-2");

    let deleted = h
        .http
        .delete(h.url(&format!("/integrated-account/{id}")))
        .bearer_auth(&h.api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let (status, _) = h.get_json(&format!("/integrated-account/{id}")).await;
    assert_eq!(status, 404);
});

both_backends!(
    bad_buddy_token_is_422_and_stores_nothing,
    |h: Harness| async move {
        let response = h.link_with("00000000-0000-4000-8000-000000000000").await;
        assert_eq!(response.status(), 422);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["type"], "/problems/credential-rejected");
        assert_eq!(body["truto_is_remote_error"], true);
        assert_eq!(body["remote_status"], 401);
        let (_, list) = h.get_json("/integrated-account").await;
        assert_eq!(list["result_count"], 0);
    }
);

both_backends!(
    bad_input_is_refused_and_nothing_written,
    |h: Harness| async move {
        let send = |body: String| {
            h.post("/integrated-account")
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        let malformed = send("{\"integration\": ".into()).await.unwrap();
        assert_eq!(malformed.status(), 400);
        let body: Value = malformed.json().await.unwrap();
        assert_eq!(body["type"], "/problems/invalid-body");

        let wrong_type = send(json!({ "integration": 7 }).to_string()).await.unwrap();
        assert_eq!(wrong_type.status(), 422);

        let unknown =
            send(json!({ "integration": "jenkins", "context": { "api_key": "x" } }).to_string())
                .await
                .unwrap();
        assert_eq!(unknown.status(), 422);
        let body: Value = unknown.json().await.unwrap();
        assert!(body["detail"].as_str().unwrap().contains("jenkins"));

        let no_key = send(json!({ "integration": "buddy", "context": {} }).to_string())
            .await
            .unwrap();
        assert_eq!(no_key.status(), 422);

        let huge = send(
            json!({ "integration": "buddy", "tenant_id": "x".repeat(2 * 1024 * 1024) }).to_string(),
        )
        .await
        .unwrap();
        assert_eq!(huge.status(), 413);

        let (_, list) = h.get_json("/integrated-account").await;
        assert_eq!(list["result_count"], 0);
    }
);

both_backends!(
    private_upstreams_are_refused_by_default,
    |h: Harness| async move {
        // A second gateway on the same store, without --allow-private-upstreams.
        let mut config = h.config.clone();
        config.allow_private_upstreams = false;
        let store = cigate_server::store::open(&config).await.unwrap();
        let state = cigate_server::build_state(config, store).await.unwrap();
        let strict = cigate_server::start(state).await.unwrap();
        let response = h
            .http
            .post(format!("{}/integrated-account", strict.base_url()))
            .bearer_auth(&h.api_token)
            .json(&json!({
                "integration": "buddy",
                "context": { "api_key": h.buddy_token, "base_url": h.sim.base_url() },
            }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 422, "{body}");
        assert_eq!(h.sim.sim().total_requests(), 0, "the upstream was reached");
        strict.abort();
    }
);

both_backends!(environments_are_isolated, |h: Harness| async move {
    let id = h.link().await;
    let store = &h.server.state.store;
    let other_env = store.ensure_environment("staging").await.unwrap();
    let (_, other_token) = store.create_api_token(&other_env.id, None).await.unwrap();
    let other = |path: String| {
        h.http
            .get(h.url(&path))
            .bearer_auth(other_token.expose())
            .send()
    };
    for path in [
        format!("/integrated-account/{id}"),
        format!("/unified/ci-cd/workspaces?integrated_account_id={id}"),
    ] {
        let response = other(path.clone()).await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let list: Value = other("/integrated-account".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["result_count"], 0);
    let patch = h
        .http
        .patch(h.url(&format!("/integrated-account/{id}")))
        .bearer_auth(other_token.expose())
        .json(&json!({ "tenant_id": "stolen" }))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 404);
    let delete = h
        .http
        .delete(h.url(&format!("/integrated-account/{id}")))
        .bearer_auth(other_token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 404);
    let (status, account) = h.get_json(&format!("/integrated-account/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(account["tenant_id"], "acme");
    let (_, envs) = h.get_json("/environment").await;
    assert_eq!(envs["result_count"], 1);
    let (status, _) = h.get_json(&format!("/environment/{}", other_env.id)).await;
    assert_eq!(status, 404);
});

both_backends!(api_tokens_over_http, |h: Harness| async move {
    let created: Value = h
        .post("/api-token")
        .json(&json!({ "name": "ci" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let with_new = h
        .http
        .get(h.url("/environment"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(with_new.status(), 200);
    let (_, list) = h.get_json("/api-token").await;
    assert!(
        !list.to_string().contains(&token),
        "a token value was listed"
    );
    let deleted = h
        .http
        .delete(h.url(&format!("/api-token/{id}")))
        .bearer_auth(&h.api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let revoked = h
        .http
        .get(h.url("/environment"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 401);
});

#[tokio::test]
async fn the_database_file_never_holds_the_token() {
    let h = Harness::start(Backend::Sqlite).await.unwrap();
    h.link().await;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(h.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if bytes
            .windows(h.buddy_token.len())
            .any(|w| w == h.buddy_token.as_bytes())
        {
            found.push(path);
        }
    }
    assert!(found.is_empty(), "plaintext token found in {found:?}");
}

both_backends!(
    a_full_page_of_1000_says_that_more_follow,
    |h: Harness| async move {
        let store = &h.server.state.store;
        let env = store.ensure_environment("default").await.unwrap();
        for _ in 0..1001 {
            store
                .create_account(cigate_store::NewAccount {
                    environment_id: env.id.clone(),
                    tenant_id: Some("many".into()),
                    integration: "buddy".into(),
                    status: cigate_store::AccountStatus::Active,
                    context: json!({}),
                    last_error: None,
                    credential: cigate_store::Credential::ApiKey {
                        api_key: cigate_store::Secret::new("k"),
                    },
                })
                .await
                .unwrap();
        }
        let (status, first) = h.get_json("/integrated-account?limit=1000").await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["result"].as_array().unwrap().len(), 1000);
        let cursor = first["next_cursor"].as_str().unwrap_or_else(|| {
            panic!(
                "a full last page hides the 1001st account: {}",
                first["next_cursor"]
            )
        });
        let (_, second) = h
            .get_json(&format!(
                "/integrated-account?limit=1000&next_cursor={cursor}"
            ))
            .await;
        assert_eq!(second["result"].as_array().unwrap().len(), 1, "{second}");
        assert!(second["next_cursor"].is_null(), "{second}");
    }
);
