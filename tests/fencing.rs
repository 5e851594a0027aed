//! Fencing tokens on real redis-server nodes: strictly increasing across
//! contention, node kills and restarts; written back when nodes disagree;
//! enforced by a protected store against a holder that paused too long.

#[path = "../examples/fenced_store/store.rs"]
mod store;
mod support;

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use redlock::LockOptions;
use support::checker::{contend, Checker};
use support::proxy::{Mode, Proxy};
use support::{engine_at, gone, quick, spawn_acquire, Nodes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_increase_across_contention_kills_and_restarts() {
    let mut nodes = Nodes::start_persistent(3);
    let engines = [
        nodes.engine("t", quick()).await,
        nodes.engine("t", quick()).await,
    ];
    let checker = Checker::default();
    let key = engines[0].key("r", None).unwrap();
    let counter = Arc::default();
    let round = || contend(&engines, 4, 10, "r", &checker, &counter);

    // Each fault waits for the last release to reach every live node: a
    // release returns once a quorum answered, and a node killed before it
    // took its part keeps the key until the TTL (30 s); two such nodes of
    // three would keep the lock from everyone for that long.
    round().await;
    nodes.values_when(&key, gone).await;
    nodes.servers[0].kill();
    round().await;
    nodes.servers[0].restart(); // comes back with its keys (appendfsync always)
    round().await;
    nodes.values_when(&key, gone).await;
    nodes.servers[1].restart();
    round().await;
    nodes.values_when(&key, gone).await;
    nodes.servers[2].kill();
    round().await;

    let summary = checker.check();
    assert_eq!(summary.total(), 200);
    let mut tokens: Vec<u64> = checker.holds().iter().map(|h| h.token).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 200, "every hold had its own token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_nodes_disagree_on_is_written_back_to_a_majority() {
    let nodes = Nodes::start(3);
    let engine = nodes.engine("t", quick()).await;
    let counter = "redlock-fence_{t}:~:w";
    for (server, value) in nodes.servers.iter().zip([100, 50, 7]) {
        let client = server.client().await;
        let _: () = client.set(counter, value, None, None, false).await.unwrap();
    }
    let lock = engine
        .acquire(&["w"], LockOptions::default())
        .await
        .unwrap();
    let token = lock.fencing_token();
    assert!(
        token > 7,
        "one more than the highest counter of the granting nodes: {token}"
    );
    let counters = nodes.values(counter).await;
    let at_least = counters
        .iter()
        .filter(|c| c.as_deref().and_then(|c| c.parse::<u64>().ok()) >= Some(token))
        .count();
    assert!(at_least >= 2, "a majority knows {token}: {counters:?}");
    lock.release().await.unwrap();

    let next = engine
        .acquire(&["w"], LockOptions::default())
        .await
        .unwrap();
    assert!(next.fencing_token() > token);
    next.release().await.unwrap();
}

/// The next holder's quorum may share only one node with this lock's
/// granting nodes, and draw its token everywhere else before this lock's
/// write-back lands. So a write-back counts only where this lock's key was
/// (there, the next holder draws after it): node x here, which A reaches
/// through a slow link it loses right after its lock is granted, while z,
/// which did not grant A's lock, answers the write-back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_back_token_reaches_a_quorum_of_the_granting_nodes() {
    let nodes = Nodes::start(3);
    let [x, y, z] = [0, 1, 2].map(|i| &nodes.servers[i]);
    let a_to_x = Proxy::start(x.port()).await;
    let b_to_x = Proxy::start(x.port()).await;
    let b_to_y = Proxy::start(y.port()).await;
    let a = engine_at("t", vec![a_to_x.url(), y.url(), z.url()], quick()).await;
    let b = engine_at("t", vec![b_to_x.url(), b_to_y.url(), z.url()], quick()).await;
    let key = a.key("w", None).unwrap();
    // y's counter is ahead, so A's token (y's) is not x's: it is written back.
    let y_client = y.client().await;
    let _: () = y_client
        .set("redlock-fence_{t}:~:w", 100, None, None, false)
        .await
        .unwrap();

    // B takes z, and waits for x, whose link holds what B sends; y is cut off.
    b_to_y.cut();
    b_to_x.set(Mode::Hold);
    let b_lock = spawn_acquire(
        &b,
        "w",
        LockOptions::default()
            .node_timeout(Duration::from_millis(4500))
            .wait(Duration::ZERO),
    );
    nodes.values_when(&key, |held| held[2].is_some()).await;

    // A: x grants (slowly), y grants, z refuses (B holds it there).
    a_to_x.set(Mode::Delay(Duration::from_millis(150)));
    let a_lock = a
        .acquire(
            &["w"],
            LockOptions::default()
                .ttl(Duration::from_secs(2))
                .node_timeout(Duration::from_secs(1))
                .wait(Duration::ZERO),
        )
        .await
        .unwrap();
    // Whatever A still had on its way to x is lost.
    a_to_x.cut();
    let a_token = a_lock.fencing_token();
    assert!(a_token > 100, "y's counter: {a_token}");
    // x keeps A's key until its TTL; then B's held call reaches x.
    let _ = a_lock.release().await;
    nodes.values_when(&key, |held| held[0].is_none()).await;
    b_to_x.set(Mode::Pass);
    let b_lock = b_lock.await.unwrap().expect("B's quorum: z and x");
    assert!(
        b_lock.fencing_token() > a_token,
        "B's token {} after A's {a_token}",
        b_lock.fencing_token()
    );
    let _ = b_lock.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_resource_locks_outrank_every_earlier_holder_of_each_resource() {
    let nodes = Nodes::start(3);
    let engine = nodes.engine("t", quick()).await;
    let mut last = 0;
    for _ in 0..5 {
        let lock = engine
            .acquire(&["a"], LockOptions::default())
            .await
            .unwrap();
        last = lock.fencing_token();
        lock.release().await.unwrap();
    }
    let both = engine
        .acquire(&["b", "a"], LockOptions::default())
        .await
        .unwrap();
    assert!(both.fencing_token() > last);
    let both_token = both.fencing_token();
    both.release().await.unwrap();
    let b = engine
        .acquire(&["b"], LockOptions::default())
        .await
        .unwrap();
    assert!(
        b.fencing_token() > both_token,
        "b's counter was raised with a's"
    );
    b.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_writing_late_is_rejected_by_the_store() {
    let nodes = Nodes::start(3);
    let engine = nodes.engine("t", quick()).await;
    let store = store::FencedStore::default();
    // The node timeout would be 15 ms (TTL / 20): too short on a loaded machine.
    let short = LockOptions::default()
        .ttl(Duration::from_millis(300))
        .node_timeout(Duration::from_millis(100));

    let a = engine.acquire(&["invoice"], short.clone()).await.unwrap();
    store.write("invoice", a.fencing_token(), "by A").unwrap();
    // A is paused past its validity (no extension happens while it sleeps).
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(a.is_lost());

    let b = engine
        .acquire(&["invoice"], short.wait(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(b.fencing_token() > a.fencing_token());
    store.write("invoice", b.fencing_token(), "by B").unwrap();

    let late = store
        .write("invoice", a.fencing_token(), "late by A")
        .unwrap_err();
    assert_eq!(late.highest, b.fencing_token());
    assert_eq!(store.read("invoice").as_deref(), Some("by B"));
    // Not what this test is about: B's keys expire within 300 ms anyway.
    let _ = b.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_can_be_turned_off() {
    let nodes = Nodes::start(1);
    let engine = nodes.engine("t", quick().fencing(false)).await;
    let token = engine
        .lock("nf", |ctx| async move { ctx.fencing_token() })
        .await
        .unwrap();
    assert_eq!(token, 0);
    assert_eq!(
        nodes.values("redlock-fence_{t}:~:nf").await,
        [None],
        "no counter key"
    );
}
