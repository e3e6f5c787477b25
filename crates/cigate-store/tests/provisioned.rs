mod common;

use cigate_store::{AccountStatus, Credential, NewAccount, Provisioned, Secret};
use serde_json::json;

both_backends!(what_a_document_applied_is_remembered, |ctx| {
    let store = ctx.store().await;
    let env = store.ensure_environment("default").await.unwrap().id;
    let account = store
        .create_account(NewAccount {
            environment_id: env,
            tenant_id: None,
            integration: "buddy".into(),
            status: AccountStatus::Active,
            context: json!({}),
            last_error: None,
            credential: Credential::ApiKey {
                api_key: Secret::new("pat"),
            },
        })
        .await
        .unwrap()
        .id;
    let object = |id: &str, fingerprint: &str, created: bool| Provisioned {
        kind: "repo".into(),
        object_key: "[\"shop-api\"]".into(),
        upstream_id: id.into(),
        fingerprint: fingerprint.into(),
        created,
    };
    store
        .record_provisioned(&account, "doc", &object("shop-api", "f1", true))
        .await
        .unwrap();
    // A later update keeps "created by this document".
    store
        .record_provisioned(&account, "doc", &object("shop-api", "f2", false))
        .await
        .unwrap();
    let all = store.provisioned(&account, "doc").await.unwrap();
    assert_eq!(all, vec![object("shop-api", "f2", true)]);
    // Another document's memory is its own.
    assert!(store
        .provisioned(&account, "other")
        .await
        .unwrap()
        .is_empty());
    store
        .forget_provisioned(&account, "doc", "repo", "[\"shop-api\"]")
        .await
        .unwrap();
    assert!(store.provisioned(&account, "doc").await.unwrap().is_empty());
});
