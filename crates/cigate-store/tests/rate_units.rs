mod common;

both_backends!(a_window_holds_its_limit_across_takers, |ctx| {
    let store = ctx.store().await;
    let mut taken = Vec::new();
    for _ in 0..5 {
        taken.push(store.take_rate_unit("acct", 100, 3).await.unwrap());
    }
    assert_eq!(taken, [Some(1), Some(2), Some(3), None, None]);
    // Another window and another account start from nothing.
    assert_eq!(store.take_rate_unit("acct", 110, 3).await.unwrap(), Some(1));
    assert_eq!(
        store.take_rate_unit("other", 100, 3).await.unwrap(),
        Some(1)
    );
    // Units counted without taking fill the window too.
    store.count_rate_unit("acct", 110).await.unwrap();
    store.count_rate_unit("acct", 110).await.unwrap();
    assert_eq!(store.take_rate_unit("acct", 110, 3).await.unwrap(), None);
    assert_eq!(store.prune_rate_units(110).await.unwrap(), 2);
    assert_eq!(store.take_rate_unit("acct", 100, 3).await.unwrap(), Some(1));
});

both_backends!(concurrent_takers_never_exceed_the_limit, |ctx| {
    let store = ctx.store().await;
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.take_rate_unit("acct", 7, 5).await.unwrap() })
        })
        .collect();
    let mut granted = Vec::new();
    for t in tasks {
        if let Some(n) = t.await.unwrap() {
            granted.push(n);
        }
    }
    granted.sort_unstable();
    assert_eq!(granted, [1, 2, 3, 4, 5]);
});
