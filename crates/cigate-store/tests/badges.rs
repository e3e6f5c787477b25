mod common;

use cigate_store::{
    AccountStatus, Credential, NewAccount, NewBadge, Secret, Store, StoreError, BADGE_PREFIX,
};
use serde_json::json;

async fn account(store: &Store, environment: &str) -> (String, String) {
    let env = store.ensure_environment(environment).await.unwrap().id;
    let account = store
        .create_account(NewAccount {
            environment_id: env.clone(),
            tenant_id: Some("acme".into()),
            integration: "buddy".into(),
            status: AccountStatus::Active,
            context: json!({}),
            last_error: None,
            credential: Credential::ApiKey {
                api_key: Secret::new("pat"),
            },
        })
        .await
        .unwrap();
    (env, account.id)
}

fn new_badge(env: &str, account: &str) -> NewBadge {
    NewBadge {
        environment_id: env.into(),
        account_id: account.into(),
        workspace: "acme".into(),
        repo: "website".into(),
        workflow: None,
        branch: "main".into(),
        label: Some("ci".into()),
    }
}

both_backends!(
    a_badge_is_found_by_its_id_and_in_its_environment_only,
    |ctx| {
        let store = ctx.store().await;
        let (env, acct) = account(&store, "default").await;
        let (other_env, _) = account(&store, "staging").await;
        let badge = store.create_badge(new_badge(&env, &acct)).await.unwrap();
        let random = badge.id.strip_prefix(BADGE_PREFIX).expect("prefix");
        assert_eq!(random.len(), 43, "32 bytes of base64url: {}", badge.id);
        assert!(random
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(badge.account_id, acct);
        assert_eq!(badge.environment_id, env);
        assert_eq!(badge.label.as_deref(), Some("ci"));
        assert_eq!(badge.workflow, None);

        assert_eq!(store.badge(&badge.id).await.unwrap().as_ref(), Some(&badge));
        assert_eq!(
            store.badge_in(&env, &badge.id).await.unwrap().as_ref(),
            Some(&badge)
        );
        assert_eq!(store.badge_in(&other_env, &badge.id).await.unwrap(), None);
        assert!(!store.delete_badge(&other_env, &badge.id).await.unwrap());
        assert_eq!(
            store.badge(&format!("{BADGE_PREFIX}guess")).await.unwrap(),
            None
        );

        let second = store.create_badge(new_badge(&env, &acct)).await.unwrap();
        assert_ne!(second.id, badge.id);
        assert!(store.delete_badge(&env, &badge.id).await.unwrap());
        assert!(!store.delete_badge(&env, &badge.id).await.unwrap());
        assert_eq!(store.badge(&badge.id).await.unwrap(), None);
        assert!(store.badge(&second.id).await.unwrap().is_some());
    }
);

both_backends!(a_badge_needs_an_account_of_its_environment, |ctx| {
    let store = ctx.store().await;
    let (env, acct) = account(&store, "default").await;
    let (other_env, _) = account(&store, "staging").await;
    assert!(matches!(
        store.create_badge(new_badge(&other_env, &acct)).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.create_badge(new_badge(&env, "no-such-account")).await,
        Err(StoreError::NotFound)
    ));
});

both_backends!(deleting_the_account_deletes_its_badges, |ctx| {
    let store = ctx.store().await;
    let (env, acct) = account(&store, "default").await;
    let badge = store.create_badge(new_badge(&env, &acct)).await.unwrap();
    assert!(store.delete_account(&env, &acct).await.unwrap());
    assert_eq!(store.badge(&badge.id).await.unwrap(), None);
});
