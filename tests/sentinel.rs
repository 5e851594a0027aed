//! A node given as a primary that Sentinel names, against real
//! `redis-server` processes (a primary and a Sentinel watching it).

mod support;

use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use redlock::{LockOptions, Redlock};
use support::{
    acquire_when_back, eventually, hand_over_by_message, held_off, subscribers, RedisServer,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_found_through_sentinel_is_a_lock_node() {
    let primary = RedisServer::start();
    let sentinel = RedisServer::start_sentinel("locks", primary.port());
    let through_sentinel = format!(
        "redis-sentinel://127.0.0.1:{}?sentinelServiceName=locks",
        sentinel.port()
    );
    let engine = Redlock::builder()
        .app("t")
        .nodes([through_sentinel])
        .build()
        .await
        .unwrap();
    let direct = Redlock::builder()
        .app("t")
        .nodes([primary.url()])
        .build()
        .await
        .unwrap();
    let client = primary.client().await;
    let key = engine.key("r", None).unwrap();

    // The lock is the primary's key: an engine that reaches the primary
    // directly finds it held.
    let lock = engine
        .acquire(&["r"], LockOptions::default())
        .await
        .unwrap();
    let value: Option<String> = client.get(&key).await.unwrap();
    assert!(value.is_some(), "the key is on the primary");
    held_off(&direct, &["r"]).await;
    lock.release().await.unwrap();

    // Release messages come through Sentinel's primary too: a waiter that
    // would retry only after 60 s gets the lock when it is released.
    let held = direct
        .acquire(&["r"], LockOptions::default().wait(Duration::from_secs(5)))
        .await
        .unwrap();
    let lock = hand_over_by_message(held, &engine, || subscribers(&client, &key)).await;
    lock.release().await.unwrap();
    let value: Option<String> = client.get(&key).await.unwrap();
    assert_eq!(value, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_the_node_is_the_new_primary() {
    let mut primary = RedisServer::start();
    let replica =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port().to_string()]);
    let sentinel = RedisServer::start_sentinel("locks", primary.port());
    let sentinel_client = sentinel.client().await;
    let replicas = CustomCommand::new_static("SENTINEL", ClusterHash::Random, false);
    // Sentinel learns of the replica from the primary.
    eventually(Duration::from_secs(20), || async {
        let known: Vec<Value> = sentinel_client
            .custom(replicas.clone(), vec!["REPLICAS", "locks"])
            .await
            .unwrap();
        match known.len() {
            1 => Ok(()),
            n => Err(format!("Sentinel knows {n} replicas")),
        }
    })
    .await;
    let through_sentinel = || {
        Redlock::builder()
            .app("t")
            .nodes([format!(
                "redis-sentinel://127.0.0.1:{}?sentinelServiceName=locks",
                sentinel.port()
            )])
            .build()
    };
    let (engine, rival) = (
        through_sentinel().await.unwrap(),
        through_sentinel().await.unwrap(),
    );
    engine.lock("before", |_| async {}).await.unwrap();

    primary.kill();
    // Sentinel promotes the replica, and the client follows it there.
    let lock = acquire_when_back(&engine, "after").await;
    let promoted = replica.client().await;
    let key = engine.key("after", None).unwrap();
    let value: Option<String> = promoted.get(&key).await.unwrap();
    assert!(value.is_some(), "the lock is the promoted replica's key");

    // The subscriber followed too: another engine's waiter hears the
    // release, once that engine's client is back.
    acquire_when_back(&rival, "rival-back")
        .await
        .release()
        .await
        .unwrap();
    hand_over_by_message(lock, &rival, || subscribers(&promoted, &key))
        .await
        .release()
        .await
        .unwrap();
}
