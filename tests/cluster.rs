//! A lock node that is a Redis Cluster, against real `redis-server`
//! processes joined into one.

mod support;

use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use redlock::{LockOptions, Redlock};
use support::cluster::Cluster;
use support::{acquire_when_back, every_kind_of_lock, hand_over_by_message, held_off, quick};

async fn engine_on(cluster: &Cluster) -> Redlock {
    gated_engine_on(cluster, Duration::ZERO).await
}

/// An engine over the cluster with a rejoin delay (none if zero).
async fn gated_engine_on(cluster: &Cluster, rejoin_delay: Duration) -> Redlock {
    Redlock::builder()
        .app("t")
        .nodes([cluster.url()])
        .defaults(quick())
        .rejoin_delay(rejoin_delay)
        .build()
        .await
        .expect("build an engine over the cluster")
}

/// Releases `lock` to a waiter of `rival` that only a release's message
/// can wake, and lets the waiter release it in turn.
async fn hand_over_on(cluster: &Cluster, lock: redlock::Lock, rival: &Redlock) {
    let key = rival.key(&lock.resources()[0], None).unwrap();
    let listeners = || async { cluster.subscribers(&key).await.iter().sum() };
    hand_over_by_message(lock, rival, listeners)
        .await
        .release()
        .await
        .unwrap();
}

/// Panics unless one server holds every key there is (the app's).
async fn all_keys_on_one_server(cluster: &Cluster) {
    let counts = cluster.key_counts().await;
    assert_eq!(
        counts.iter().filter(|&&n| n > 0).count(),
        1,
        "all of the app's keys on one server: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_is_a_lock_node() {
    let cluster = Cluster::start(3, 0).await;
    let engine = engine_on(&cluster).await;
    let rival = engine_on(&cluster).await;

    // Fenced, and several resources at once: each lock's keys and counters
    // share the app's hash slot.
    let one = engine
        .acquire(&["a"], LockOptions::default())
        .await
        .unwrap();
    let first_token = one.fencing_token();
    held_off(&rival, &["a", "b"]).await;
    one.release().await.unwrap();
    let all = rival
        .acquire(&["a", "b", "c"], LockOptions::default())
        .await
        .unwrap();
    assert!(all.fencing_token() > first_token);
    all_keys_on_one_server(&cluster).await;
    all.release().await.unwrap();

    // What waits for the node goes in one script call, which a cluster
    // takes only if its keys share a slot.
    support::many_at_once(&engine).await;

    // A release's message reaches a waiter that would retry only after 60 s.
    let held = engine
        .acquire(&["w"], LockOptions::default())
        .await
        .unwrap();
    hand_over_on(&cluster, held, &rival).await;

    // The rejoin gate's keys share the slot as well.
    let gated = gated_engine_on(&cluster, Duration::from_millis(500)).await;
    let wait = LockOptions::default().wait(Duration::from_secs(20));
    let lock = gated.acquire(&["g"], wait).await.unwrap();
    lock.release().await.unwrap();
    support::many_at_once(&gated).await;
    all_keys_on_one_server(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_of_its_shard_the_cluster_still_locks() {
    let mut cluster = Cluster::start(3, 1).await;
    let engine = engine_on(&cluster).await;
    let rival = engine_on(&cluster).await;
    engine.lock("before", |_| async {}).await.unwrap();
    // The app's shard: the primary holding its keys (its replica has them too).
    let (primaries, counts) = (cluster.primaries().await, cluster.key_counts().await);
    let shard = (0..cluster.servers.len())
        .find(|&i| primaries[i] && counts[i] > 0)
        .expect("a primary holds the app's keys");

    cluster.servers[shard].kill();
    // Its replica takes over, and the client follows the slot there.
    let lock = acquire_when_back(&engine, "after").await;

    // Release messages still reach another engine's waiter, once its
    // client is back too (fred reconnects all of a cluster's connections
    // when one fails).
    let back = acquire_when_back(&rival, "rival-back").await;
    back.release().await.unwrap();
    hand_over_on(&cluster, lock, &rival).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_least_privilege_acl_user_is_enough_on_a_cluster() {
    let cluster = Cluster::start(3, 0).await;
    let acl = CustomCommand::new_static("ACL", ClusterHash::Random, false);
    let grant = |rules: &'static str| async {
        for server in &cluster.servers {
            let client = server.client().await;
            let mut args = vec!["SETUSER", "locker", "on", ">locker-pw"];
            args.extend(rules.split(' '));
            let _: () = client.custom(acl.clone(), args).await.unwrap();
        }
    };
    let build = || {
        Redlock::builder()
            .app("t")
            .nodes([cluster.url().replacen(
                "redis-cluster://",
                "redis-cluster://locker:locker-pw@",
                1,
            )])
            .connect_timeout(Duration::from_secs(3))
            .build()
    };

    // What a lock user needs on a standalone node (see tests/security.rs)...
    grant(
        "~redlock_* ~redlock-fence_* resetchannels &redlock_* +@connection +eval +evalsha +script|load \
         +get +set +incr +del +pexpire +publish +subscribe +unsubscribe",
    )
    .await;
    let err = build().await.unwrap_err().to_string();
    assert!(
        err.contains("NOPERM") && err.contains("Security section"),
        "{err}"
    );
    // ...and the client's look at the cluster's state.
    grant("+cluster|info +cluster|slots").await;
    every_kind_of_lock(&build().await.unwrap()).await;
}
