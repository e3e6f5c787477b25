mod common;

use std::time::Duration;

use cigate_store::{NewLinkToken, NewOAuthState, Secret, Store};
use serde_json::json;

async fn default_env(store: &Store) -> String {
    store.ensure_environment("default").await.unwrap().id
}

fn link(env: &str, ttl: Duration) -> NewLinkToken {
    NewLinkToken {
        environment_id: env.to_owned(),
        tenant_id: Some("acme".into()),
        integrated_account_id: None,
        redirect_uri: Some("https://app.example.com/done".into()),
        context: json!({ "plan": "pro" }),
        ttl,
    }
}

both_backends!(link_tokens_are_single_use_and_hashed, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    let (record, token) = store
        .create_link_token(link(&env, Duration::from_secs(3600)))
        .await
        .unwrap();
    assert!(token.expose().starts_with("clt_"));
    assert!(record.expires_at > record.created_at);
    let found = store.link_token(token.expose()).await.unwrap().unwrap();
    assert_eq!(found, record);
    assert_eq!(found.context, json!({ "plan": "pro" }));
    assert!(store.link_token("clt_nope").await.unwrap().is_none());
    assert_eq!(
        store.link_token_by_id(&record.id).await.unwrap(),
        Some(record.clone())
    );

    // Only the hash is kept.
    let raw = ctx.raw().await;
    let stored = raw.strings("SELECT token_hash FROM link_tokens").await;
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].contains(token.expose()));
    raw.close().await;

    // Spent exactly once, even by concurrent callers.
    let attempts = futures_join(&store, &record.id).await;
    assert_eq!(attempts.iter().filter(|won| **won).count(), 1);
    let used = store.link_token(token.expose()).await.unwrap().unwrap();
    assert!(used.used_at.is_some());
    assert!(!store.use_link_token(&record.id).await.unwrap());

    // Secret-looking context is refused.
    let mut bad = link(&env, Duration::from_secs(60));
    bad.context = json!({ "api_token": "x" });
    assert!(store.create_link_token(bad).await.is_err());
    store.close().await;
});

async fn futures_join(store: &Store, id: &str) -> Vec<bool> {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let id = id.to_owned();
        tasks.push(tokio::spawn(async move {
            store.use_link_token(&id).await.unwrap()
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

both_backends!(expired_link_tokens_cannot_be_used, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    let (record, token) = store
        .create_link_token(link(&env, Duration::from_millis(1)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let found = store.link_token(token.expose()).await.unwrap().unwrap();
    assert!(found.is_expired(chrono::Utc::now()));
    assert!(!store.use_link_token(&record.id).await.unwrap());
    assert!(store.purge_expired().await.unwrap() >= 1);
    assert!(store.link_token(token.expose()).await.unwrap().is_none());
    store.close().await;
});

both_backends!(oauth_states_are_single_use_and_expire, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    let (record, _) = store
        .create_link_token(link(&env, Duration::from_secs(3600)))
        .await
        .unwrap();
    let new_state = |ttl| NewOAuthState {
        environment_id: env.clone(),
        link_token_id: Some(record.id.clone()),
        base_url: Some("https://api.buddy.works".into()),
        code_verifier: Secret::new("verifier-plaintext-0123456789"),
        ttl,
    };
    let state = store
        .create_oauth_state(new_state(Duration::from_secs(600)))
        .await
        .unwrap();
    let raw = ctx.raw().await;
    let stored = raw
        .strings("SELECT state_hash || ' ' || code_verifier FROM oauth_states")
        .await;
    assert!(!stored[0].contains(state.expose()));
    assert!(!stored[0].contains("verifier-plaintext"));
    raw.close().await;

    let taken = store
        .take_oauth_state(state.expose())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.environment_id, env);
    assert_eq!(taken.link_token_id.as_deref(), Some(record.id.as_str()));
    assert_eq!(
        taken.code_verifier.expose(),
        "verifier-plaintext-0123456789"
    );
    assert!(!taken.is_expired(chrono::Utc::now()));
    // A second use finds nothing.
    assert!(store
        .take_oauth_state(state.expose())
        .await
        .unwrap()
        .is_none());
    assert!(store.take_oauth_state("unknown").await.unwrap().is_none());

    let short = store
        .create_oauth_state(new_state(Duration::from_millis(1)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let taken = store
        .take_oauth_state(short.expose())
        .await
        .unwrap()
        .unwrap();
    assert!(taken.is_expired(chrono::Utc::now()));
    store.close().await;
});

both_backends!(account_events_and_environment_integrations, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    let event = store
        .record_account_event(
            &env,
            "acc-1",
            "integrated_account:authentication_error",
            json!({"reason": "invalid_grant"}),
        )
        .await
        .unwrap();
    store
        .record_account_event(&env, "acc-2", "integrated_account:active", json!({}))
        .await
        .unwrap();
    let one = store
        .list_account_events(&env, Some("acc-1"), 10)
        .await
        .unwrap();
    assert_eq!(one, vec![event]);
    assert_eq!(
        store
            .list_account_events(&env, None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(store
        .record_account_event(&env, "acc-1", "x", json!({"access_token": "t"}))
        .await
        .is_err());

    assert!(store
        .environment_integration(&env, "buddy")
        .await
        .unwrap()
        .is_none());
    let config = json!({ "oauth": { "client_id": "cid", "scopes": ["WORKSPACE"] } });
    store
        .put_environment_integration(
            &env,
            "buddy",
            config.clone(),
            Some(Secret::new("client-secret-plain")),
        )
        .await
        .unwrap();
    let got = store
        .environment_integration(&env, "buddy")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.config, config);
    assert_eq!(got.secret.unwrap().expose(), "client-secret-plain");
    let bytes = ctx.all_stored_bytes().await;
    assert!(!bytes.windows(19).any(|w| w == b"client-secret-plain"));
    assert!(store
        .put_environment_integration(&env, "buddy", json!({"client_secret": "x"}), None)
        .await
        .is_err());
    store.close().await;
});
