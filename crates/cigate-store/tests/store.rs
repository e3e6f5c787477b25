mod common;

use std::time::Duration;

use cigate_store::{
    AccountFilter, AccountPatch, AccountStatus, AuthMethod, Begin, Credential, IdempotencyKey,
    KeyConfig, Keyring, MasterKey, NewAccount, Secret, Store, StoreError, StoredResponse,
};
use serde_json::json;
use sha2::{Digest, Sha256};

/// A lease no idempotency test outlives unless it means to.
const LEASE: Duration = Duration::from_secs(600);

fn api_key(value: &str) -> Credential {
    Credential::ApiKey {
        api_key: Secret::new(value),
    }
}

fn new_account(environment_id: &str, tenant: &str, secret: &str) -> NewAccount {
    NewAccount {
        environment_id: environment_id.to_string(),
        tenant_id: Some(tenant.to_string()),
        integration: "buddy".into(),
        status: AccountStatus::Active,
        context: json!({ "base_url": "https://api.buddy.works", "scopes": ["WORKSPACE"] }),
        last_error: None,
        credential: api_key(secret),
    }
}

async fn default_env(store: &Store) -> String {
    store.ensure_environment("default").await.unwrap().id
}

both_backends!(migrations_are_idempotent, |ctx| {
    let store = ctx.connect(KeyConfig::File(ctx.key_file())).await.unwrap();
    assert!(matches!(
        store.ready().await,
        Err(StoreError::NotMigrated(_))
    ));
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store.ready().await.unwrap();
    assert_eq!(store.backend(), ctx.backend);

    let envs = store.list_environments().await.unwrap();
    assert_eq!(envs.len(), 1);
    assert_eq!(envs[0].name, "default");
    let again = store.ensure_environment("default").await.unwrap();
    assert_eq!(again, envs[0]);
    assert_eq!(
        store.get_environment(&again.id).await.unwrap(),
        Some(again.clone())
    );
    assert_eq!(store.get_environment("nope").await.unwrap(), None);
    let staging = store.ensure_environment("staging").await.unwrap();
    assert_ne!(staging.id, again.id);
    assert_eq!(store.list_environments().await.unwrap().len(), 2);
    assert!(matches!(
        store.ensure_environment("bad name").await,
        Err(StoreError::InvalidInput(_))
    ));

    // A second process on the same database migrates as a no-op.
    let second = ctx.connect(KeyConfig::File(ctx.key_file())).await.unwrap();
    second.migrate().await.unwrap();
    second.ready().await.unwrap();
    store.close().await;
    second.close().await;
});

both_backends!(api_tokens, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    let (token, plaintext) = store.create_api_token(&env, Some("ci")).await.unwrap();
    assert!(plaintext.expose().starts_with("cgt_"));
    assert!(plaintext.expose().len() >= 4 + 43);
    assert!(!format!("{token:?}").contains(plaintext.expose()));

    let found = store
        .authenticate(plaintext.expose())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, token.id);
    assert_eq!(found.environment_id, env);
    assert!(found.last_used_at.is_some());
    assert_eq!(store.authenticate("cgt_wrong").await.unwrap(), None);
    assert_eq!(store.authenticate("").await.unwrap(), None);

    let raw = ctx.raw().await;
    let hashes = raw.strings("SELECT token_hash FROM api_tokens").await;
    assert_eq!(
        hashes,
        vec![hex::encode(Sha256::digest(plaintext.expose().as_bytes()))]
    );
    raw.close().await;
    let bytes = ctx.all_stored_bytes().await;
    assert!(!contains(&bytes, plaintext.expose().as_bytes()));

    let other = store.ensure_environment("other").await.unwrap().id;
    let listed = store.list_api_tokens(&env).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(store.list_api_tokens(&other).await.unwrap().is_empty());
    assert!(!store.delete_api_token(&other, &token.id).await.unwrap());
    assert!(store.delete_api_token(&env, &token.id).await.unwrap());
    assert!(!store.delete_api_token(&env, &token.id).await.unwrap());
    assert_eq!(store.authenticate(plaintext.expose()).await.unwrap(), None);

    assert!(matches!(
        store.create_api_token("no-such-env", None).await,
        Err(StoreError::NotFound)
    ));
    store.close().await;
});

both_backends!(tenant_isolation, |ctx| {
    let store = ctx.store().await;
    let a = store.ensure_environment("a").await.unwrap().id;
    let b = store.ensure_environment("b").await.unwrap().id;
    let acct = store
        .create_account(new_account(&b, "t1", "secret-b"))
        .await
        .unwrap();

    assert_eq!(store.get_account(&a, &acct.id).await.unwrap(), None);
    assert!(store
        .list_accounts(&a, &AccountFilter::default(), None, 100)
        .await
        .unwrap()
        .is_empty());
    let patch = AccountPatch {
        tenant_id: Some(Some("stolen".into())),
        ..Default::default()
    };
    assert_eq!(
        store.update_account(&a, &acct.id, patch).await.unwrap(),
        None
    );
    assert_eq!(store.credential(&a, &acct.id).await.unwrap(), None);
    assert!(!store.delete_account(&a, &acct.id).await.unwrap());

    let still = store.get_account(&b, &acct.id).await.unwrap().unwrap();
    assert_eq!(still.tenant_id.as_deref(), Some("t1"));
    assert_eq!(
        store.credential(&b, &acct.id).await.unwrap(),
        Some(api_key("secret-b"))
    );
    store.close().await;
});

both_backends!(accounts_crud_and_pages, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let tenant = if i % 2 == 0 { "even" } else { "odd" };
        let acct = store
            .create_account(new_account(&env, tenant, &format!("pat-{i}")))
            .await
            .unwrap();
        assert_eq!(acct.authentication_method, AuthMethod::ApiKey);
        assert_eq!(acct.status, AccountStatus::Active);
        assert_eq!(acct.created_at, acct.updated_at);
        let json = serde_json::to_value(&acct).unwrap();
        assert_eq!(json["status"], "active");
        assert_eq!(json["authentication_method"], "api_key");
        assert!(!json.to_string().contains("pat-"));
        ids.push(acct.id);
    }
    // Round trip through the database gives the same value.
    let first = store.get_account(&env, &ids[0]).await.unwrap().unwrap();
    assert_eq!(first.context["base_url"], "https://api.buddy.works");

    // Keyset pages cover everything once, in creation order.
    let all = AccountFilter::default();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_accounts(&env, &all, after.as_deref(), 3)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|a| a.page_key());
        seen.extend(page.into_iter().map(|a| a.id));
    }
    let mut sorted_ids = seen.clone();
    sorted_ids.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(sorted_ids, expected);
    assert_eq!(seen.len(), 7);

    // A bare account id works as the position too, even after that account is gone
    // (page keys), and filters combine.
    let page = store
        .list_accounts(&env, &all, Some(&seen[2]), 100)
        .await
        .unwrap();
    assert_eq!(page.len(), 4);
    let even = AccountFilter {
        tenant_id: Some("even".into()),
        status: Some(AccountStatus::Active),
        integration: Some("buddy".into()),
    };
    assert_eq!(
        store
            .list_accounts(&env, &even, None, 100)
            .await
            .unwrap()
            .len(),
        4
    );
    let reauth = AccountFilter {
        status: Some(AccountStatus::NeedsReauth),
        ..Default::default()
    };
    assert!(store
        .list_accounts(&env, &reauth, None, 100)
        .await
        .unwrap()
        .is_empty());

    // Patch.
    let patched = store
        .update_account(
            &env,
            &ids[1],
            AccountPatch {
                tenant_id: Some(None),
                context: Some(json!({ "base_url": "https://api.eu.buddy.works" })),
                status: Some(AccountStatus::NeedsReauth),
                last_error: Some(Some("401 from Buddy".into())),
                last_forbidden_error: Some(Some("403 on /workspaces".into())),
                credential: Some(Credential::OAuth2 {
                    access_token: Secret::new("at-new"),
                    refresh_token: Some(Secret::new("rt-new")),
                    expires_at: None,
                }),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(patched.tenant_id, None);
    assert_eq!(patched.status, AccountStatus::NeedsReauth);
    assert_eq!(patched.authentication_method, AuthMethod::Oauth2);
    assert_eq!(patched.last_error.as_deref(), Some("401 from Buddy"));
    assert_eq!(
        patched.last_forbidden_error.as_deref(),
        Some("403 on /workspaces")
    );
    assert!(patched.updated_at >= patched.created_at);
    assert_eq!(
        store
            .list_accounts(&env, &reauth, None, 100)
            .await
            .unwrap()
            .len(),
        1
    );
    match store.credential(&env, &ids[1]).await.unwrap().unwrap() {
        Credential::OAuth2 {
            access_token,
            refresh_token,
            ..
        } => {
            assert_eq!(access_token.expose(), "at-new");
            assert_eq!(refresh_token.unwrap().expose(), "rt-new");
        }
        other => panic!("unexpected credential {other:?}"),
    }
    let cleared = store
        .update_account(
            &env,
            &ids[1],
            AccountPatch {
                last_error: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cleared.last_error, None);
    assert_eq!(cleared.status, AccountStatus::NeedsReauth);

    // Secrets never go into the context.
    let mut bad = new_account(&env, "x", "pat");
    bad.context = json!({ "base_url": "u", "api_key": "leak" });
    assert!(matches!(
        store.create_account(bad).await,
        Err(StoreError::InvalidInput(_))
    ));
    let bad_patch = AccountPatch {
        context: Some(json!({ "oauth": { "refresh_token": "leak" } })),
        ..Default::default()
    };
    assert!(matches!(
        store.update_account(&env, &ids[0], bad_patch).await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store
            .create_account(new_account("no-such-env", "x", "pat"))
            .await,
        Err(StoreError::NotFound)
    ));

    // Delete takes the credential with it.
    assert!(store.delete_account(&env, &ids[0]).await.unwrap());
    assert_eq!(store.get_account(&env, &ids[0]).await.unwrap(), None);
    assert_eq!(store.credential(&env, &ids[0]).await.unwrap(), None);
    let raw = ctx.raw().await;
    assert_eq!(
        raw.count("SELECT COUNT(*) FROM account_credentials").await,
        6
    );
    raw.close().await;
    store.close().await;
});

both_backends!(credentials_are_encrypted_and_bound_to_the_account, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    let secret = "buddy-pat-7f3a9c1e0b2d4e6f";
    let a = store
        .create_account(new_account(&env, "t", secret))
        .await
        .unwrap();
    let b = store
        .create_account(new_account(&env, "t", "other-pat"))
        .await
        .unwrap();
    assert_eq!(
        store.credential(&env, &a.id).await.unwrap(),
        Some(api_key(secret))
    );

    let bytes = ctx.all_stored_bytes().await;
    assert!(!bytes.is_empty());
    assert!(!contains(&bytes, secret.as_bytes()));

    let raw = ctx.raw().await;
    let row_a = raw.cred_row(&a.id).await;
    assert_eq!(row_a.0, store.key_ids()[0]);
    assert_eq!(row_a.1.len(), 12);

    // A ciphertext moved to another account fails to open.
    let row_b = raw.cred_row(&b.id).await;
    raw.set_cred_row(&b.id, &row_a).await;
    assert!(matches!(
        store.credential(&env, &b.id).await,
        Err(StoreError::Crypto(_))
    ));
    raw.set_cred_row(&b.id, &row_b).await;
    assert_eq!(
        store.credential(&env, &b.id).await.unwrap(),
        Some(api_key("other-pat"))
    );

    // A flipped bit fails too, with a message that names no secret.
    let mut tampered = row_a.clone();
    let last = tampered.2.len() - 1;
    tampered.2[last] ^= 0x01;
    raw.set_cred_row(&a.id, &tampered).await;
    match store.credential(&env, &a.id).await {
        Err(err @ StoreError::Crypto(_)) => assert!(!err.to_string().contains(secret)),
        other => panic!("expected a crypto error, got {other:?}"),
    }
    raw.set_cred_row(&a.id, &row_a).await;
    raw.close().await;
    store.close().await;
});

both_backends!(wrong_or_missing_key_fails_at_connect, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    store
        .create_account(new_account(&env, "t", "pat"))
        .await
        .unwrap();
    store.close().await;

    // A different key from the environment.
    let wrong = MasterKey::generate().to_base64();
    let err = ctx
        .connect(KeyConfig::Env(wrong.expose().to_string()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Key(_)), "{err:?}");
    assert!(!err.to_string().contains(wrong.expose()));

    // A wrong key file; then no key file at all (not silently replaced).
    let file = std::fs::read_to_string(ctx.key_file()).unwrap();
    std::fs::write(ctx.key_file(), MasterKey::generate().to_base64().expose()).unwrap();
    let err = ctx
        .connect(KeyConfig::File(ctx.key_file()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Key(_)), "{err:?}");
    std::fs::remove_file(ctx.key_file()).unwrap();
    let err = ctx
        .connect(KeyConfig::File(ctx.key_file()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Key(_)), "{err:?}");
    assert!(err.to_string().contains("does not exist"));
    assert!(!ctx.key_file().exists());

    // Malformed keys are rejected up front.
    for bad in ["", "not-base64!!", "AAAA"] {
        assert!(matches!(
            ctx.connect(KeyConfig::Env(bad.into())).await,
            Err(StoreError::Key(_))
        ));
    }

    // The right key, given through the environment, works.
    std::fs::write(ctx.key_file(), &file).unwrap();
    let ring = Keyring::parse(&file).unwrap();
    let env_value = ring.current().to_base64();
    let store = ctx
        .connect(KeyConfig::Env(env_value.expose().to_string()))
        .await
        .unwrap();
    assert_eq!(store.key_ids(), ring.key_ids());
    store.close().await;
});

both_backends!(key_rotation_on_a_populated_store, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    let old_id = store.key_ids()[0].clone();
    let mut accounts = Vec::new();
    for i in 0..130 {
        let acct = store
            .create_account(new_account(&env, "t", &format!("pat-{i}")))
            .await
            .unwrap();
        accounts.push((acct.id, format!("pat-{i}")));
    }
    // Another process that started before the rotation.
    let other = ctx.connect(KeyConfig::File(ctx.key_file())).await.unwrap();

    let report = store.rotate_keys(None).await.unwrap();
    assert_ne!(report.current_key_id, old_id);
    assert_eq!(report.previous_key_ids, vec![old_id.clone()]);
    assert_eq!(report.reencrypted, 130);
    assert_eq!(report.retired_key_ids, vec![old_id.clone()]);
    assert_eq!(store.key_ids(), vec![report.current_key_id.clone()]);
    let file = Keyring::parse(&std::fs::read_to_string(ctx.key_file()).unwrap()).unwrap();
    assert_eq!(file.key_ids(), vec![report.current_key_id.clone()]);

    let raw = ctx.raw().await;
    let key_ids = raw
        .strings("SELECT DISTINCT key_id FROM account_credentials")
        .await;
    assert_eq!(key_ids, vec![report.current_key_id.clone()]);
    for (id, secret) in &accounts {
        assert_eq!(
            store.credential(&env, id).await.unwrap(),
            Some(api_key(secret))
        );
        // The older process reloads the key file when it meets the new key id.
        assert_eq!(
            other.credential(&env, id).await.unwrap(),
            Some(api_key(secret))
        );
    }
    // ...and encrypts its next write under the new key.
    let patch = AccountPatch {
        credential: Some(api_key("pat-rewritten")),
        ..Default::default()
    };
    other
        .update_account(&env, &accounts[0].0, patch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.cred_row(&accounts[0].0).await.0, report.current_key_id);

    // A restart with the rotated key file works; the old key alone no longer does.
    let restarted = ctx.connect(KeyConfig::File(ctx.key_file())).await.unwrap();
    assert_eq!(
        restarted.credential(&env, &accounts[1].0).await.unwrap(),
        Some(api_key(&accounts[1].1))
    );

    // Rotating again with a given key.
    let given = MasterKey::generate();
    let report2 = restarted.rotate_keys(Some(given.clone())).await.unwrap();
    assert_eq!(report2.current_key_id, given.id());
    assert_eq!(report2.reencrypted, 130);
    assert!(matches!(
        restarted.rotate_keys(Some(given.clone())).await,
        Err(StoreError::Key(_))
    ));
    raw.close().await;
    for s in [store, other, restarted] {
        s.close().await;
    }
});

both_backends!(key_rotation_with_env_keys, |ctx| {
    let old = MasterKey::generate();
    let store = ctx
        .connect(KeyConfig::Env(old.to_base64().expose().to_string()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let env = default_env(&store).await;
    let acct = store
        .create_account(new_account(&env, "t", "pat-env"))
        .await
        .unwrap();
    store.close().await;

    // The operator deploys `new,old`, then rotates.
    let new = MasterKey::generate();
    let value = format!("{},{}", new.to_base64().expose(), old.to_base64().expose());
    let store = ctx.connect(KeyConfig::Env(value)).await.unwrap();
    // Until the rotation, writes stay under the store's current key, so instances not
    // yet redeployed (old key only) keep reading everything.
    let during = store
        .create_account(new_account(&env, "t", "pat-during"))
        .await
        .unwrap();
    let raw = ctx.raw().await;
    assert_eq!(raw.cred_row(&during.id).await.0, old.id());
    let not_redeployed = ctx
        .connect(KeyConfig::Env(old.to_base64().expose().to_string()))
        .await
        .unwrap();
    assert_eq!(
        not_redeployed.credential(&env, &during.id).await.unwrap(),
        Some(api_key("pat-during"))
    );
    not_redeployed.close().await;
    assert!(matches!(
        store.rotate_keys(Some(MasterKey::generate())).await,
        Err(StoreError::Key(_))
    ));
    let report = store.rotate_keys(None).await.unwrap();
    assert_eq!(report.current_key_id, new.id());
    assert_eq!(report.previous_key_ids, vec![old.id().to_string()]);
    assert_eq!(report.reencrypted, 2);
    assert!(report.retired_key_ids.is_empty());
    assert_eq!(raw.cred_row(&during.id).await.0, new.id());
    raw.close().await;
    store.close().await;

    // Now the new key alone suffices and the old one alone is refused.
    let store = ctx
        .connect(KeyConfig::Env(new.to_base64().expose().to_string()))
        .await
        .unwrap();
    assert_eq!(
        store.credential(&env, &acct.id).await.unwrap(),
        Some(api_key("pat-env"))
    );
    store.close().await;
    assert!(matches!(
        ctx.connect(KeyConfig::Env(old.to_base64().expose().to_string()))
            .await,
        Err(StoreError::Key(_))
    ));
});

both_backends!(idempotency_records, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    let acct = store
        .create_account(new_account(&env, "t", "pat"))
        .await
        .unwrap();
    let key = IdempotencyKey {
        environment_id: env.clone(),
        account_id: Some(acct.id.clone()),
        method: "POST".into(),
        path: "/unified/ci-cd/jobs".into(),
        key: "k-1".into(),
    };
    let hour = Duration::from_secs(3600);
    assert_eq!(
        store
            .begin_idempotent(&key, "h1", hour, LEASE)
            .await
            .unwrap(),
        Begin::Started
    );
    assert_eq!(
        store
            .begin_idempotent(&key, "h1", hour, LEASE)
            .await
            .unwrap(),
        Begin::InProgress
    );
    assert_eq!(
        store
            .begin_idempotent(&key, "h2", hour, LEASE)
            .await
            .unwrap(),
        Begin::Mismatch
    );

    let response = StoredResponse {
        status: 201,
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"id":"42"}"#.to_vec(),
    };
    assert!(store.finish_idempotent(&key, &response).await.unwrap());
    assert!(!store.finish_idempotent(&key, &response).await.unwrap());
    assert_eq!(
        store
            .begin_idempotent(&key, "h1", hour, LEASE)
            .await
            .unwrap(),
        Begin::Replay(response.clone())
    );
    assert_eq!(
        store
            .begin_idempotent(&key, "h2", hour, LEASE)
            .await
            .unwrap(),
        Begin::Mismatch
    );

    // The same key elsewhere (other path, no account, other environment) is independent.
    let other_path = IdempotencyKey {
        path: "/unified/ci-cd/jobs/1/cancel".into(),
        ..key.clone()
    };
    assert_eq!(
        store
            .begin_idempotent(&other_path, "h9", hour, LEASE)
            .await
            .unwrap(),
        Begin::Started
    );
    let no_account = IdempotencyKey {
        account_id: None,
        ..key.clone()
    };
    assert_eq!(
        store
            .begin_idempotent(&no_account, "h9", hour, LEASE)
            .await
            .unwrap(),
        Begin::Started
    );

    // Abandon frees an in-progress key, not a finished one.
    assert!(store.abandon_idempotent(&other_path).await.unwrap());
    assert_eq!(
        store
            .begin_idempotent(&other_path, "h8", hour, LEASE)
            .await
            .unwrap(),
        Begin::Started
    );
    assert!(!store.abandon_idempotent(&key).await.unwrap());

    // Expiry: an expired record is replaced, and purged.
    let short = IdempotencyKey {
        key: "k-short".into(),
        ..key.clone()
    };
    let ttl = Duration::from_millis(50);
    assert_eq!(
        store
            .begin_idempotent(&short, "h1", ttl, LEASE)
            .await
            .unwrap(),
        Begin::Started
    );
    assert_eq!(
        store
            .begin_idempotent(&short, "h1", ttl, LEASE)
            .await
            .unwrap(),
        Begin::InProgress
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        store
            .begin_idempotent(&short, "h2", ttl, LEASE)
            .await
            .unwrap(),
        Begin::Started
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(store.purge_expired().await.unwrap(), 1);
    assert_eq!(
        store
            .begin_idempotent(&key, "h1", hour, LEASE)
            .await
            .unwrap(),
        Begin::Replay(response)
    );

    // Deleting the account drops its records.
    assert!(store.delete_account(&env, &acct.id).await.unwrap());
    let raw = ctx.raw().await;
    assert_eq!(
        raw.count("SELECT COUNT(*) FROM idempotency_records").await,
        1
    );
    raw.close().await;
    store.close().await;
});

both_backends!(idempotency_leases, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    let key = IdempotencyKey {
        environment_id: env.clone(),
        account_id: None,
        method: "POST".into(),
        path: "/unified/ci-cd/jobs".into(),
        key: "leased".into(),
    };
    let hour = Duration::from_secs(3600);
    let lease = Duration::from_millis(300);
    assert_eq!(
        store
            .begin_idempotent(&key, "h1", hour, lease)
            .await
            .unwrap(),
        Begin::Started
    );
    // Renewed while its request runs: still in progress after two lease lengths.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(store.renew_idempotent(&key, "h1", lease).await.unwrap());
        assert_eq!(
            store
                .begin_idempotent(&key, "h1", hour, lease)
                .await
                .unwrap(),
            Begin::InProgress
        );
    }
    // Another request's hash cannot renew it.
    assert!(!store.renew_idempotent(&key, "h2", lease).await.unwrap());
    // Its holder stops renewing (the process died): the key is orphaned, for every
    // resend, and is never handed out to run again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..2 {
        assert_eq!(
            store
                .begin_idempotent(&key, "h1", hour, lease)
                .await
                .unwrap(),
            Begin::Orphaned
        );
    }
    // A different request under the key is still a mismatch, not an orphan.
    assert_eq!(
        store
            .begin_idempotent(&key, "h2", hour, lease)
            .await
            .unwrap(),
        Begin::Mismatch
    );
    // A holder that was only slow and records its answer late: resends replay it.
    let response = StoredResponse {
        status: 201,
        headers: vec![],
        body: b"{}".to_vec(),
    };
    assert!(store.finish_idempotent(&key, &response).await.unwrap());
    assert!(!store.renew_idempotent(&key, "h1", lease).await.unwrap());
    assert_eq!(
        store
            .begin_idempotent(&key, "h1", hour, lease)
            .await
            .unwrap(),
        Begin::Replay(response)
    );
    // A record written before leases existed counts as held for a minute from its
    // creation, then as orphaned.
    let legacy = IdempotencyKey {
        key: "legacy".into(),
        ..key.clone()
    };
    assert_eq!(
        store
            .begin_idempotent(&legacy, "h1", hour, lease)
            .await
            .unwrap(),
        Begin::Started
    );
    let raw = ctx.raw().await;
    let sql = "UPDATE idempotency_records SET lease_expires_at = NULL \
               WHERE idempotency_key = 'legacy'";
    assert_eq!(raw.execute(sql).await, 1);
    assert_eq!(
        store
            .begin_idempotent(&legacy, "h1", hour, lease)
            .await
            .unwrap(),
        Begin::InProgress
    );
    raw.close().await;
    store.close().await;
});

both_backends!(refresh_leases, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    let acct = store
        .create_account(new_account(&env, "t", "pat"))
        .await
        .unwrap();
    let long = Duration::from_secs(60);
    assert!(store.try_acquire_lease(&acct.id, "a", long).await.unwrap());
    assert!(!store.try_acquire_lease(&acct.id, "b", long).await.unwrap());
    assert!(store.try_acquire_lease(&acct.id, "a", long).await.unwrap());
    assert!(!store.release_lease(&acct.id, "b").await.unwrap());
    assert!(store.release_lease(&acct.id, "a").await.unwrap());
    assert!(store
        .try_acquire_lease(&acct.id, "b", Duration::from_millis(50))
        .await
        .unwrap());
    assert!(!store.try_acquire_lease(&acct.id, "a", long).await.unwrap());
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(store.try_acquire_lease(&acct.id, "a", long).await.unwrap());
    assert!(!store.try_acquire_lease(&acct.id, "b", long).await.unwrap());

    // Concurrent contenders: exactly one wins.
    let other = store
        .create_account(new_account(&env, "t", "pat2"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let id = other.id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .try_acquire_lease(&id, &format!("h{i}"), long)
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if t.await.unwrap() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    assert!(matches!(
        store.try_acquire_lease("no-such-account", "a", long).await,
        Err(StoreError::NotFound)
    ));
    store.close().await;
});

#[tokio::test]
async fn sqlite_file_is_created_with_wal_and_key_file_is_private() {
    let ctx = common::Ctx::sqlite();
    let store = ctx.store().await;
    assert!(ctx.dir.path().join("data/cigate.db").exists());
    let raw = ctx.raw().await;
    assert_eq!(
        raw.strings("PRAGMA journal_mode").await,
        vec!["wal".to_string()]
    );
    raw.close().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ctx.key_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    store.close().await;
}

#[tokio::test]
async fn invalid_urls_are_refused() {
    let opts = cigate_store::StoreOptions::new(KeyConfig::Keys(Keyring::generate()));
    for url in ["mysql://x", "", "postgres://[bad"] {
        assert!(matches!(
            Store::connect(url, opts.clone()).await,
            Err(StoreError::InvalidUrl(_))
        ));
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

both_backends!(rotation_while_another_process_writes, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let acct = store
            .create_account(new_account(&env, "t", &format!("pat-{i}")))
            .await
            .unwrap();
        ids.push(acct.id);
    }
    // Another process sharing the database and key file keeps writing credentials and
    // creating accounts while the rotation runs.
    let other = ctx.connect(KeyConfig::File(ctx.key_file())).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (other, env, ids, stop) = (other.clone(), env.clone(), ids.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 20 {
                let id = &ids[n % ids.len()];
                let patch = AccountPatch {
                    credential: Some(api_key(&format!("rewritten-{n}"))),
                    ..Default::default()
                };
                other
                    .update_account(&env, id, patch)
                    .await
                    .unwrap()
                    .unwrap();
                other
                    .create_account(new_account(&env, "w", &format!("new-{n}")))
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = store.rotate_keys(None).await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(writes >= 20);

    let raw = ctx.raw().await;
    let key_ids = raw
        .strings("SELECT DISTINCT key_id FROM account_credentials")
        .await;
    assert_eq!(key_ids, vec![report.current_key_id.clone()]);
    raw.close().await;
    // A process started afresh (new key file only) reads every credential.
    let fresh = ctx.connect(KeyConfig::File(ctx.key_file())).await.unwrap();
    let all = fresh
        .list_accounts(&env, &AccountFilter::default(), None, 1000)
        .await
        .unwrap();
    assert_eq!(all.len(), 40 + writes);
    for acct in all {
        assert!(fresh.credential(&env, &acct.id).await.unwrap().is_some());
    }
    for s in [store, other, fresh] {
        s.close().await;
    }
});

both_backends!(signing_keys_are_shared_and_follow_rotation, |ctx| {
    let store = ctx.store().await;
    let a = store.signing_key("cursor").await.unwrap();
    assert_eq!(a.len(), 32);
    assert_ne!(a, store.signing_key("webhook").await.unwrap());
    let other = ctx.connect(KeyConfig::File(ctx.key_file())).await.unwrap();
    assert_eq!(other.signing_key("cursor").await.unwrap(), a);
    store.rotate_keys(None).await.unwrap();
    let b = store.signing_key("cursor").await.unwrap();
    assert_ne!(a, b);
    assert_eq!(other.signing_key("cursor").await.unwrap(), b);
    store.close().await;
    other.close().await;
});
