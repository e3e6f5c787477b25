mod common;

use std::time::Duration;

use chrono::{Duration as Span, Utc};
use cigate_core::events::JobState;
use cigate_store::{
    AccountStatus, Credential, NewAccount, NewEvent, NewWebhook, Secret, Store, StoreError,
    WebhookFormat,
};
use serde_json::json;

async fn account(store: &Store) -> (String, String) {
    let env = store.ensure_environment("default").await.unwrap().id;
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

fn state(status: &str) -> JobState {
    JobState {
        status: Some(status.into()),
        ..JobState::default()
    }
}

fn one_event(env: &str, account: &str) -> impl Fn(Option<&JobState>) -> Vec<NewEvent> {
    let env = env.to_owned();
    let account = account.to_owned();
    move |previous| {
        vec![NewEvent {
            environment_id: env.clone(),
            event_type: if previous.is_none() {
                "record:created".into()
            } else {
                "record:updated".into()
            },
            integrated_account_id: Some(account.clone()),
            tenant_id: None,
            workflow: None,
            payload: json!({ "before": previous.and_then(|p| p.status.clone()) }),
            only_webhook: None,
            except_webhook: None,
            order_key: None,
        }]
    }
}

both_backends!(a_change_seen_twice_is_recorded_once, |ctx| {
    let store = ctx.store().await;
    let (env, account) = account(&store).await;
    let mut hook = NewWebhook {
        environment_id: env.clone(),
        target_url: "https://hooks.example.com/in".into(),
        event_types: vec!["record:*".into()],
        format: WebhookFormat::Cigate,
        tenant_id: None,
        integrated_account_id: None,
        workflow: None,
        is_active: true,
    };
    store.create_webhook(hook.clone()).await.unwrap();
    hook.is_active = false;
    store.create_webhook(hook).await.unwrap();

    let t0 = Utc::now();
    let build = one_event(&env, &account);
    let (events, queued) = store
        .observe_job(&account, "ws/p/1/7", t0, &state("queued"), &build)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "record:created");
    assert_eq!(queued, 1, "the active subscription only");

    // The same state again (a provider retrying its webhook, a poll): nothing.
    let t1 = t0 + Span::seconds(1);
    let (events, _) = store
        .observe_job(&account, "ws/p/1/7", t1, &state("queued"), &build)
        .await
        .unwrap();
    assert!(events.is_empty());

    let t2 = t0 + Span::seconds(3);
    let (events, _) = store
        .observe_job(&account, "ws/p/1/7", t2, &state("completed"), &build)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload, json!({ "before": "queued" }));

    // A read taken before the last recorded one is stale: it never moves the job back.
    let (events, _) = store
        .observe_job(&account, "ws/p/1/7", t1, &state("in_progress"), &build)
        .await
        .unwrap();
    assert!(events.is_empty());
    let (known, _) = store
        .job_state(&account, "ws/p/1/7")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(known, state("completed"));

    // Concurrent observers of one change: exactly one records it.
    let store2 = store.clone();
    let t3 = t0 + Span::seconds(5);
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = store2.clone();
            let account = account.clone();
            let build = one_event(&env, &account);
            tokio::spawn(async move {
                store
                    .observe_job(&account, "ws/p/1/8", t3, &state("in_progress"), &build)
                    .await
                    .unwrap()
                    .0
                    .len()
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(total, 1);

    assert!(matches!(
        store
            .observe_job("no-such-account", "k", t3, &state("queued"), &build)
            .await,
        Err(StoreError::NotFound)
    ));
});

both_backends!(event_sources_keep_their_secret_and_poll_lease, |ctx| {
    let store = ctx.store().await;
    let (_, account) = account(&store).await;
    assert!(store.event_source(&account).await.unwrap().is_none());
    let made = store.ensure_event_source(&account).await.unwrap();
    let again = store.ensure_event_source(&account).await.unwrap();
    assert_eq!(made.hook_token.expose(), again.hook_token.expose());
    assert_eq!(made.hook_secret.expose(), again.hook_secret.expose());
    assert_ne!(made.hook_token.expose(), made.hook_secret.expose());
    assert!(made.hook_token.expose().len() >= 40);
    assert!(matches!(
        store.ensure_event_source("nope").await,
        Err(StoreError::NotFound)
    ));

    let now = Utc::now() + Span::seconds(1);
    let due = store.poll_candidates(now, now, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].account_id, account);

    let ttl = Duration::from_secs(60);
    assert!(store
        .try_poll_lease(&account, "a", ttl)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .try_poll_lease(&account, "b", ttl)
        .await
        .unwrap()
        .is_none());
    assert!(
        store
            .poll_candidates(now, now, 10)
            .await
            .unwrap()
            .is_empty(),
        "a held account is not due"
    );
    let markers = json!({ "ws/p/1": "completed" });
    assert!(!store
        .finish_poll(&account, "b", Some(&markers))
        .await
        .unwrap());
    assert!(store
        .finish_poll(&account, "a", Some(&markers))
        .await
        .unwrap());
    let source = store.event_source(&account).await.unwrap().unwrap();
    assert_eq!(source.markers, markers);
    assert!(source.polled_at.is_some());
    let earlier = Utc::now() - Span::seconds(30);
    assert!(store
        .poll_candidates(earlier, earlier, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.poll_candidates(now, now, 10).await.unwrap().len(), 1);

    // With a registered provider webhook the account is due on the slower schedule.
    store
        .record_hooks(&account, &json!([{ "workspace": "ws", "id": 1 }]), None)
        .await
        .unwrap();
    assert!(store
        .poll_candidates(now, earlier, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.poll_candidates(now, now, 10).await.unwrap().len(), 1);
    // A webhook found silent goes back to the fast schedule, and keeps what it knows.
    store
        .record_hooks(
            &account,
            &json!([{ "workspace": "ws", "id": 1 }]),
            Some("silent"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.poll_candidates(now, earlier, 10).await.unwrap().len(),
        1
    );
    store
        .record_hooks(&account, &json!([{ "workspace": "ws", "id": 1 }]), None)
        .await
        .unwrap();
    store.note_hook_seen(&account).await.unwrap();
    let window = Duration::from_secs(30);
    assert!(
        !store.claim_hooks(&account, window).await.unwrap(),
        "registered just now"
    );
    assert!(store
        .claim_hooks(&account, Duration::from_millis(0))
        .await
        .unwrap());
    let source = store.event_source(&account).await.unwrap().unwrap();
    assert!(source.hook_seen_at.is_some());
    assert_eq!(source.hooks, json!([{ "workspace": "ws", "id": 1 }]));
});
