mod common;

use std::time::Duration;

use chrono::Utc;
use cigate_store::{
    AttemptOutcome, DeliveryAttempt, DeliveryStatus, EventFilter, NewEvent, NewWebhook, Store,
    StoreError, WebhookFormat, WebhookPatch,
};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(60);

async fn default_env(store: &Store) -> String {
    store.ensure_environment("default").await.unwrap().id
}

fn hook(env: &str, types: &[&str]) -> NewWebhook {
    NewWebhook {
        environment_id: env.to_owned(),
        target_url: "https://hooks.example.com/in".into(),
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
        format: WebhookFormat::Cigate,
        tenant_id: None,
        integrated_account_id: None,
        workflow: None,
        is_active: true,
    }
}

fn event(env: &str, ty: &str, tenant: Option<&str>) -> NewEvent {
    NewEvent {
        environment_id: env.to_owned(),
        event_type: ty.to_owned(),
        integrated_account_id: Some("acc-1".into()),
        tenant_id: tenant.map(Into::into),
        workflow: None,
        payload: json!({ "n": ty }),
        only_webhook: None,
        except_webhook: None,
        order_key: Some("job:acc-1:exec-1".into()),
    }
}

fn attempt(status: u16) -> DeliveryAttempt {
    DeliveryAttempt {
        at: Utc::now(),
        response_status: Some(status),
        latency_ms: 3,
        error: None,
    }
}

both_backends!(
    events_fan_out_to_matching_subscriptions_in_one_write,
    |ctx| {
        let store = ctx.store().await;
        let env = default_env(&store).await;
        let (jobs, secret) = store.create_webhook(hook(&env, &["job:*"])).await.unwrap();
        assert!(secret.expose().starts_with("whsec_"));
        let mut acme = hook(&env, &["*"]);
        acme.tenant_id = Some("acme".into());
        let (acme, _) = store.create_webhook(acme).await.unwrap();
        let mut off = hook(&env, &["*"]);
        off.is_active = false;
        store.create_webhook(off).await.unwrap();
        assert!(matches!(
            store.create_webhook(hook(&env, &["job:finished"])).await,
            Err(StoreError::InvalidInput(_))
        ));

        let (_, n) = store
            .record_event(event(&env, "job:completed", Some("acme")))
            .await
            .unwrap();
        assert_eq!(n, 2, "job:* and the acme subscription");
        let (_, n) = store
            .record_event(event(&env, "job:started", Some("other")))
            .await
            .unwrap();
        assert_eq!(n, 1, "the acme filter excludes another tenant");
        let (_, n) = store
            .record_event(event(&env, "integrated_account:created", None))
            .await
            .unwrap();
        assert_eq!(n, 0, "a filter on tenant excludes events without one");
        let mut test = event(&env, "test", None);
        test.only_webhook = Some(jobs.id.clone());
        assert_eq!(store.record_event(test).await.unwrap().1, 1);

        let all = store
            .list_events(&env, &EventFilter::default(), None, 100)
            .await
            .unwrap();
        assert_eq!(all.len(), 4);
        let filter = EventFilter {
            event_type: Some("job:started".into()),
            ..Default::default()
        };
        let started = store.list_events(&env, &filter, None, 100).await.unwrap();
        assert_eq!(started.len(), 1);
        let page = store
            .list_events(&env, &EventFilter::default(), Some(&all[1].page_key()), 100)
            .await
            .unwrap();
        assert_eq!(page, all[2..]);
        assert_eq!(
            store
                .list_deliveries(&jobs.id, None, 100)
                .await
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            store
                .list_deliveries(&acme.id, None, 100)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(store
            .list_events("other-env", &EventFilter::default(), None, 100)
            .await
            .unwrap()
            .is_empty());
    }
);

both_backends!(one_delivery_in_flight_per_key_in_event_order, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    let (a, _) = store.create_webhook(hook(&env, &["job:*"])).await.unwrap();
    for ty in ["job:queued", "job:started", "job:completed"] {
        store.record_event(event(&env, ty, None)).await.unwrap();
    }
    let first = store.claim_deliveries("w1", 10, LEASE).await.unwrap();
    assert_eq!(first.len(), 1, "only the oldest of a key is claimable");
    assert_eq!(first[0].event.event_type, "job:queued");
    assert_eq!(first[0].webhook.id, a.id);
    assert_eq!(first[0].secrets.len(), 1);
    assert!(store
        .claim_deliveries("w2", 10, LEASE)
        .await
        .unwrap()
        .is_empty());

    let d = &first[0].delivery;
    let next = Utc::now() - chrono::Duration::seconds(1);
    assert!(store
        .finish_attempt(d, "w1", attempt(500), AttemptOutcome::Retry(next))
        .await
        .unwrap());
    assert!(
        !store
            .finish_attempt(d, "w1", attempt(200), AttemptOutcome::Delivered)
            .await
            .unwrap(),
        "the lease is gone after finishing"
    );
    let again = store.claim_deliveries("w2", 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].delivery.id, d.id,
        "a retry keeps its id and its place"
    );
    assert_eq!(again[0].delivery.attempts.len(), 1);
    assert!(store
        .finish_attempt(
            &again[0].delivery,
            "w2",
            attempt(204),
            AttemptOutcome::Delivered
        )
        .await
        .unwrap());
    let second = store.claim_deliveries("w1", 10, LEASE).await.unwrap();
    assert_eq!(second[0].event.event_type, "job:started");

    let listed = store.list_deliveries(&a.id, None, 100).await.unwrap();
    assert_eq!(listed[0].status, DeliveryStatus::Delivered);
    assert_eq!(listed[0].attempts.len(), 2);
    assert_eq!(listed[0].attempts[0].response_status, Some(500));
    assert!(matches!(
        store.redeliver(&a.id, &second[0].delivery.id).await,
        Err(StoreError::Conflict(_))
    ));
    let redone = store
        .redeliver(&a.id, &listed[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(redone.status, DeliveryStatus::Pending);
    assert_eq!(redone.round_attempts, 0);
    assert_eq!(store.redeliver(&a.id, "nope").await.unwrap(), None);
});

both_backends!(a_retrying_delivery_holds_back_only_its_own_key, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    store.create_webhook(hook(&env, &["*"])).await.unwrap();
    for (ty, key) in [
        ("job:queued", Some("job:1")),
        ("job:queued", Some("job:2")),
        ("job:started", Some("job:1")),
        ("job:started", Some("job:2")),
        ("test", None),
        ("test", None),
    ] {
        let mut e = event(&env, ty, None);
        e.order_key = key.map(Into::into);
        e.payload = json!({ "n": ty, "key": key });
        store.record_event(e).await.unwrap();
    }
    let claimed = |batch: &[cigate_store::ClaimedDelivery]| {
        let mut seen: Vec<String> = batch
            .iter()
            .map(|c| format!("{} {}", c.event.event_type, c.event.payload["key"]))
            .collect();
        seen.sort();
        seen
    };
    let first = store.claim_deliveries("w1", 10, LEASE).await.unwrap();
    assert_eq!(
        claimed(&first),
        [
            "job:queued \"job:1\"",
            "job:queued \"job:2\"",
            "test null",
            "test null"
        ],
        "each key's oldest delivery, and every keyless one"
    );
    // Job 1's first delivery is refused and retried in an hour; job 2's goes through.
    let later = Utc::now() + chrono::Duration::seconds(3600);
    for c in &first {
        let outcome = if c.event.payload["key"] == "job:1" {
            (attempt(503), AttemptOutcome::Retry(later))
        } else {
            (attempt(200), AttemptOutcome::Delivered)
        };
        assert!(store
            .finish_attempt(&c.delivery, "w1", outcome.0, outcome.1)
            .await
            .unwrap());
    }
    let next = store.claim_deliveries("w2", 10, LEASE).await.unwrap();
    assert_eq!(
        claimed(&next),
        ["job:started \"job:2\""],
        "job 2 goes on; job 1's second event waits for its first"
    );
});

both_backends!(leases_nobody_attempts_are_released, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    store.create_webhook(hook(&env, &["*"])).await.unwrap();
    for _ in 0..3 {
        store.record_event(event(&env, "test", None)).await.unwrap();
    }
    let claimed = store.claim_deliveries("w1", 2, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1, "one key: one at a time");
    let mut keyless = event(&env, "test", None);
    keyless.order_key = None;
    store.record_event(keyless).await.unwrap();
    let more = store.claim_deliveries("w1", 10, LEASE).await.unwrap();
    assert_eq!(more.len(), 1, "the keyless one");
    // w1 lost the answer of its second claim: only the first is being attempted.
    let busy = [claimed[0].delivery.id.as_str()];
    assert_eq!(store.release_leases("w1", &busy).await.unwrap(), 1);
    assert_eq!(store.release_leases("w1", &busy).await.unwrap(), 0);
    let again = store.claim_deliveries("w2", 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.id, more[0].delivery.id);
    assert_eq!(
        store.release_leases("w3", &[]).await.unwrap(),
        0,
        "another holder's leases are left alone"
    );
});

both_backends!(an_expired_lease_is_claimed_again_with_the_same_id, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    store.create_webhook(hook(&env, &["*"])).await.unwrap();
    store.record_event(event(&env, "test", None)).await.unwrap();
    let lost = store
        .claim_deliveries("dead", 10, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(lost.len(), 1);
    tokio::time::sleep(Duration::from_millis(80)).await;
    let taken = store.claim_deliveries("alive", 10, LEASE).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].delivery.id, lost[0].delivery.id);
    assert!(!store
        .finish_attempt(
            &lost[0].delivery,
            "dead",
            attempt(200),
            AttemptOutcome::Delivered
        )
        .await
        .unwrap());
});

both_backends!(gone_deactivates_and_rotation_keeps_the_old_secret, |ctx| {
    let store = ctx.store().await;
    let env = default_env(&store).await;
    let (h, first) = store.create_webhook(hook(&env, &["*"])).await.unwrap();
    let second = store
        .rotate_webhook_secret(&env, &h.id, Duration::from_secs(3600))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.webhook_secrets(&h.id).await.unwrap(),
        [second.clone(), first]
    );
    let third = store
        .rotate_webhook_secret(&env, &h.id, Duration::from_secs(3600))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.webhook_secrets(&h.id).await.unwrap(), [third, second]);
    assert_eq!(
        store
            .rotate_webhook_secret("elsewhere", &h.id, Duration::from_secs(1))
            .await
            .unwrap(),
        None
    );
    let report = store.rotate_keys(None).await.unwrap();
    assert_eq!(report.reencrypted_by_table.get("webhook_secrets"), Some(&2));
    assert_eq!(store.webhook_secrets(&h.id).await.unwrap().len(), 2);

    store.record_event(event(&env, "test", None)).await.unwrap();
    let claimed = store.claim_deliveries("w", 10, LEASE).await.unwrap();
    assert!(store
        .finish_attempt(
            &claimed[0].delivery,
            "w",
            attempt(410),
            AttemptOutcome::Gone
        )
        .await
        .unwrap());
    let after = store.get_webhook(&env, &h.id).await.unwrap().unwrap();
    assert!(!after.is_active);
    assert!(after.failing_since.is_some());
    let listed = store.list_deliveries(&h.id, None, 10).await.unwrap();
    assert_eq!(listed[0].status, DeliveryStatus::Failed);
    assert!(listed[0]
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("410"));

    let patched = store
        .update_webhook(
            &env,
            &h.id,
            WebhookPatch {
                is_active: Some(true),
                tenant_id: Some(Some("acme".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(patched.is_active && patched.failing_since.is_none());
    assert_eq!(patched.tenant_id.as_deref(), Some("acme"));
    assert_eq!(
        store.list_webhooks(&env, None, 10).await.unwrap(),
        [patched]
    );
    assert!(store.delete_webhook(&env, &h.id).await.unwrap());
    assert!(!store.delete_webhook(&env, &h.id).await.unwrap());
    assert!(store
        .list_deliveries(&h.id, None, 10)
        .await
        .unwrap()
        .is_empty());
});
