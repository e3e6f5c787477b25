mod common;

use std::time::Duration;

use cigate_store::{
    AccountStatus, Credential, KeyConfig, Keyring, MasterKey, NewAccount, NewLinkToken,
    NewOAuthState, Secret, Store, StoreError,
};
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
        .strings("SELECT state_hash || ' ' || key_id FROM oauth_states")
        .await;
    assert!(!stored[0].contains(state.expose()));
    raw.close().await;
    let bytes = ctx.all_stored_bytes().await;
    assert!(!bytes
        .windows(b"verifier-plaintext".len())
        .any(|w| w == b"verifier-plaintext"));

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

/// Every table holding sealed values, by the key ids in it (raw SQL, not the store's view).
async fn raw_key_ids(ctx: &common::Ctx) -> Vec<(String, Vec<String>)> {
    let raw = ctx.raw().await;
    let mut out = Vec::new();
    for table in [
        "account_credentials",
        "environment_integrations",
        "oauth_states",
        "webhook_secrets",
        "event_sources",
    ] {
        let ids = raw
            .strings(&format!(
                "SELECT DISTINCT key_id FROM {table} WHERE key_id IS NOT NULL ORDER BY key_id"
            ))
            .await;
        out.push((table.to_owned(), ids));
    }
    raw.close().await;
    out
}

fn only(key_id: &str) -> Vec<(String, Vec<String>)> {
    [
        "account_credentials",
        "environment_integrations",
        "oauth_states",
        "webhook_secrets",
        "event_sources",
    ]
    .into_iter()
    .map(|t| (t.to_owned(), vec![key_id.to_owned()]))
    .collect()
}

fn verifier_state(env: &str, verifier: &str) -> NewOAuthState {
    NewOAuthState {
        environment_id: env.to_owned(),
        link_token_id: None,
        base_url: None,
        code_verifier: Secret::new(verifier),
        ttl: Duration::from_secs(600),
    }
}

/// One of each sealed secret under the store's current key: a credential, two
/// environments' OAuth client secrets, an OAuth state in flight.
async fn seal_one_of_each(store: &Store) -> (String, String, Secret) {
    let env = default_env(store).await;
    let staging = store.ensure_environment("staging").await.unwrap().id;
    let account = store
        .create_account(NewAccount {
            environment_id: env.clone(),
            tenant_id: None,
            integration: "buddy".into(),
            status: AccountStatus::Active,
            context: json!({}),
            last_error: None,
            credential: Credential::ApiKey {
                api_key: Secret::new("pat-sealed"),
            },
        })
        .await
        .unwrap();
    for (e, secret) in [(&env, "secret-default"), (&staging, "secret-staging")] {
        store
            .put_environment_integration(
                e,
                "buddy",
                json!({ "oauth": { "client_id": "cid" } }),
                Some(Secret::new(secret)),
            )
            .await
            .unwrap();
    }
    let state = store
        .create_oauth_state(verifier_state(&env, "verifier-in-flight"))
        .await
        .unwrap();
    store
        .create_webhook(cigate_store::NewWebhook {
            environment_id: env.clone(),
            target_url: "https://hooks.example.com/in".into(),
            event_types: vec!["*".into()],
            format: cigate_store::WebhookFormat::Cigate,
            tenant_id: None,
            integrated_account_id: None,
            workflow: None,
            is_active: true,
        })
        .await
        .unwrap();
    store.ensure_event_source(&account.id).await.unwrap();
    (env, account.id, state)
}

async fn client_secret(store: &Store, env: &str) -> String {
    store
        .environment_integration(env, "buddy")
        .await
        .unwrap()
        .unwrap()
        .secret
        .unwrap()
        .expose()
        .to_owned()
}

both_backends!(
    rotation_moves_every_sealed_secret_and_retires_the_key,
    |ctx| {
        let store = ctx.store().await;
        let (env, account_id, state) = seal_one_of_each(&store).await;
        let staging = store.ensure_environment("staging").await.unwrap().id;
        let old = Keyring::parse(&std::fs::read_to_string(ctx.key_file()).unwrap()).unwrap();
        let old_id = old.current().id().to_owned();
        assert_eq!(raw_key_ids(&ctx).await, only(&old_id));
        // Another process that started before the rotation (as `cigate keys rotate` runs
        // beside the servers).
        let server = ctx.connect(KeyConfig::File(ctx.key_file())).await.unwrap();

        let report = store.rotate_keys(None).await.unwrap();
        let new_id = report.current_key_id.clone();
        assert_ne!(new_id, old_id);
        assert_eq!(report.retired_key_ids, vec![old_id.clone()]);
        assert_eq!(report.previous_key_ids, vec![old_id.clone()]);
        assert_eq!(report.reencrypted, 6);
        let by_table: Vec<(&str, u64)> = report
            .reencrypted_by_table
            .iter()
            .map(|(t, n)| (t.as_str(), *n))
            .collect();
        assert_eq!(
            by_table,
            vec![
                ("account_credentials", 1),
                ("environment_integrations", 2),
                ("event_sources", 1),
                ("oauth_states", 1),
                ("webhook_secrets", 1)
            ]
        );
        // Nothing is left under the old key, by raw SQL and by the store's own count.
        assert_eq!(raw_key_ids(&ctx).await, only(&new_id));
        for (table, by_key) in store.sealed_key_usage().await.unwrap() {
            assert_eq!(by_key.keys().collect::<Vec<_>>(), vec![&new_id], "{table}");
        }

        // The process that ran the rotation holds the new key only, and reads everything.
        assert_eq!(store.key_ids(), vec![new_id.clone()]);
        assert_eq!(client_secret(&store, &env).await, "secret-default");
        assert_eq!(client_secret(&store, &staging).await, "secret-staging");
        // The older process picks up the rotated key file.
        assert_eq!(client_secret(&server, &env).await, "secret-default");
        let taken = server
            .take_oauth_state(state.expose())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(taken.code_verifier.expose(), "verifier-in-flight");
        let source = server.event_source(&account_id).await.unwrap().unwrap();
        assert!(!source.hook_secret.expose().is_empty());

        // A restart with the old key alone is refused; with the rotated key file it reads
        // every kind of secret.
        assert!(matches!(
            ctx.connect(KeyConfig::Keys(old)).await,
            Err(StoreError::Key(_))
        ));
        let restarted = ctx.connect(KeyConfig::File(ctx.key_file())).await.unwrap();
        assert_eq!(restarted.key_ids(), vec![new_id.clone()]);
        assert_eq!(client_secret(&restarted, &staging).await, "secret-staging");
        assert_eq!(
            restarted.credential(&env, &account_id).await.unwrap(),
            Some(Credential::ApiKey {
                api_key: Secret::new("pat-sealed")
            })
        );
        for s in [store, server, restarted] {
            s.close().await;
        }
    }
);

both_backends!(sealed_writes_follow_a_rotation_by_another_process, |ctx| {
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let first = ctx
        .connect(KeyConfig::Env(old.to_base64().expose().to_owned()))
        .await
        .unwrap();
    first.migrate().await.unwrap();
    let (env, _, _) = seal_one_of_each(&first).await;
    first.close().await;

    // Both instances are redeployed with `new,old`; until the rotation they write under
    // the store's key, `old`.
    let both = format!("{},{}", new.to_base64().expose(), old.to_base64().expose());
    let rotator = ctx.connect(KeyConfig::Env(both.clone())).await.unwrap();
    let other = ctx.connect(KeyConfig::Env(both)).await.unwrap();
    other
        .put_environment_integration(&env, "buddy", json!({}), Some(Secret::new("before")))
        .await
        .unwrap();
    assert_eq!(raw_key_ids(&ctx).await, only(old.id()));

    let report = rotator.rotate_keys(None).await.unwrap();
    assert_eq!(report.current_key_id, new.id());
    assert_eq!(raw_key_ids(&ctx).await, only(new.id()));
    // `other` still believes `old` is current: its writes miss the key check, re-read
    // it and land under `new`.
    other
        .put_environment_integration(&env, "buddy", json!({}), Some(Secret::new("after")))
        .await
        .unwrap();
    other
        .create_oauth_state(verifier_state(&env, "after"))
        .await
        .unwrap();
    assert_eq!(raw_key_ids(&ctx).await, only(new.id()));
    assert_eq!(client_secret(&rotator, &env).await, "after");

    // The new key alone now suffices.
    let alone = ctx
        .connect(KeyConfig::Env(new.to_base64().expose().to_owned()))
        .await
        .unwrap();
    assert_eq!(client_secret(&alone, &env).await, "after");
    for s in [rotator, other, alone] {
        s.close().await;
    }
});

both_backends!(a_wrong_key_for_a_client_secret_fails_start_up, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    store
        .put_environment_integration(&env, "buddy", json!({}), Some(Secret::new("s")))
        .await
        .unwrap();
    store.close().await;
    // The secret's key id is rewritten to one the key file does not hold.
    let raw = ctx.raw().await;
    match &raw {
        common::Raw::Sqlite(p) => {
            sqlx::query("UPDATE environment_integrations SET key_id = 'deadbeef'")
                .execute(p)
                .await
                .unwrap();
        }
        common::Raw::Postgres(p) => {
            sqlx::query("UPDATE environment_integrations SET key_id = 'deadbeef'")
                .execute(p)
                .await
                .unwrap();
        }
    }
    raw.close().await;
    let err = ctx
        .connect(KeyConfig::File(ctx.key_file()))
        .await
        .expect_err("start-up refuses the store");
    assert!(matches!(err, StoreError::Key(_)), "{err}");
    assert!(err.to_string().contains("deadbeef"), "{err}");
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
