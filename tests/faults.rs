//! Node failures: killed, paused and restarted redis-server processes.

mod support;

use std::time::Duration;

use fred::prelude::*;
use fred::types::CustomCommand;
use redlock::{Error, LockOptions, Redlock, Vote};
use support::{eventually, gone, quick, spawn_acquire, wait_until_seen_down, Nodes};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_of_killed_nodes_does_not_stop_locking() {
    for (n, down) in [(3, 1), (5, 2)] {
        let mut nodes = Nodes::start(n);
        let engine = nodes.engine("t", quick()).await;
        let rival = nodes.engine("t", quick()).await;
        for server in &mut nodes.servers[..down] {
            server.kill();
        }
        let value = engine.lock("m", |_| async { 7 }).await.unwrap();
        assert_eq!(value, 7, "{n} nodes, {down} down");

        // Exclusion still holds on the survivors.
        let lock = engine
            .acquire(&["m"], LockOptions::default())
            .await
            .unwrap();
        support::held_off(&rival, &["m"]).await;
        lock.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_wait_still_gives_up_on_an_unreachable_quorum() {
    let mut nodes = Nodes::start(3);
    let ttl = Duration::from_secs(1);
    let engine = nodes.engine("t", quick().ttl(ttl).wait_forever()).await;
    for server in &mut nodes.servers[1..] {
        server.kill();
    }
    let started = Instant::now();
    let err = engine.lock("q", |_| async {}).await.unwrap_err();
    assert!(matches!(err, Error::QuorumUnreachable { .. }), "{err}");
    assert!(
        started.elapsed() >= ttl,
        "gave the nodes one TTL to come back"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_majority_times_out_and_recovers_after_resume() {
    let mut nodes = Nodes::start(3);
    let engine = nodes
        .engine("t", quick().node_timeout(Duration::from_millis(100)))
        .await;
    for server in &mut nodes.servers[..2] {
        server.pause();
    }
    let started = Instant::now();
    let err = engine
        .acquire(
            &["p"],
            LockOptions::default().wait(Duration::from_millis(500)),
        )
        .await
        .unwrap_err();
    let Error::QuorumUnreachable { votes, .. } = &err else {
        panic!("{err}");
    };
    assert!(
        votes
            .0
            .iter()
            .filter(|v| matches!(v.vote, Vote::TimedOut(_)))
            .count()
            == 2,
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    for server in &mut nodes.servers[..2] {
        server.resume();
    }
    let lock = engine
        .acquire(&["p"], LockOptions::default().wait(Duration::from_secs(10)))
        .await
        .expect("locking works again once the nodes answer");
    lock.release().await.unwrap();
    // Commands the paused nodes queued from failed attempts were followed by
    // their releases: nothing is left locked.
    let key = engine.key("p", None).unwrap();
    nodes.values_when(&key, gone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_does_not_wait_for_a_node_that_is_down_and_reaches_it_when_it_returns() {
    let mut nodes = Nodes::start_persistent(3);
    // A node timeout far above the release's bound below.
    let node_timeout = Duration::from_secs(30);
    let options = quick()
        .ttl(Duration::from_secs(120))
        .node_timeout(node_timeout);
    let engine = nodes.engine("t", options.clone()).await;
    let lock = engine.acquire(&["d"], options.clone()).await.unwrap();
    nodes.servers[0].kill();
    wait_until_seen_down(&engine, "d", 0).await;

    // Two live nodes answer in milliseconds; the client gives up on the
    // down one after about 10 s, and the node timeout is 30 s.
    tokio::time::timeout(Duration::from_secs(2), lock.release())
        .await
        .expect("the release does not wait for the node that is down")
        .expect("released on the two others");

    // The node comes back with the lock's key (appendfsync always); the
    // release it missed is sent once the engine reconnects. It stays down
    // 12 s, longer than the client keeps a call handed to it meanwhile (it
    // gives up after about 10 s): the release waits in the engine's queue.
    let key = engine.key("d", None).unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    nodes.servers[0].restart();
    nodes.wait_until_node_takes_part(&engine, 0).await;
    nodes.values_when(&key, gone).await;
}

/// The releases a down node misses wait for it, but at most `node_backlog`
/// of them, so a long outage under load costs bounded memory: the newest
/// reach the node when it returns, the oldest are left to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_releases_a_down_node_misses_are_bounded_and_the_newest_reach_it() {
    const BACKLOG: usize = 50;
    const LOCKS: usize = 600;
    // At most one call by a dropped release and one batch are out to the
    // node when it dies (batches take at most 256 operations).
    const OUT: usize = 1 + 256;
    let mut nodes = Nodes::start_persistent(3);
    let options = quick().ttl(Duration::from_secs(120));
    let engine = Redlock::builder()
        .app("t")
        .nodes(nodes.urls())
        .defaults(options.clone())
        .node_backlog(BACKLOG)
        .build()
        .await
        .unwrap();
    let resources: Vec<String> = (0..LOCKS).map(|i| format!("b{i}")).collect();
    let mut locks = Vec::new();
    for resource in &resources {
        locks.push(engine.acquire(&[resource], options.clone()).await.unwrap());
    }
    nodes.servers[0].kill();
    for lock in locks {
        lock.release().await.expect("released on the two others");
    }

    nodes.servers[0].restart();
    let keys: Vec<String> = resources
        .iter()
        .map(|r| engine.key(r, None).unwrap())
        .collect();
    let node = nodes.servers[0].client().await;
    let (older, newest) = keys.split_at(LOCKS - BACKLOG);
    let left = |keys: &[String]| {
        let node = node.clone();
        let keys = keys.to_vec();
        async move { node.exists::<usize, _>(keys).await.unwrap() }
    };
    // The node restarted without the script: the calls on their way find
    // it missing and are sent again, in no set order.
    eventually(Duration::from_secs(30), || async {
        match left(newest).await {
            0 => Ok(()),
            n => Err(format!("{n} of the newest releases never reached the node")),
        }
    })
    .await;
    let kept = left(older).await;
    assert!(
        kept >= LOCKS - BACKLOG - OUT,
        "{kept} of the {} oldest keys left: more releases waited than the backlog",
        LOCKS - BACKLOG
    );
}

/// A node down does not make a held lock a split vote: a waiter still
/// waits for the release (or its retry delay) between attempts, instead of
/// retrying every few round trips, and does not clean up its failed
/// attempts on the nodes that refused them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_does_not_hammer_the_nodes_left_when_one_is_down() {
    let mut nodes = Nodes::start(3);
    let options = quick().ttl(Duration::from_secs(60));
    let engine = nodes.engine("t", options.clone()).await;
    let holder = engine.acquire(&["h"], options.clone()).await.unwrap();
    nodes.servers[0].kill();
    let waiter = options
        .retry_delay(Duration::from_millis(200))
        .retry_jitter(Duration::from_millis(50))
        .wait(Duration::from_secs(1));
    let before = nodes.script_calls().await;
    let err = engine.acquire(&["h"], waiter).await.unwrap_err();
    let after = nodes.script_calls().await;
    let Error::NotAcquired { attempts, .. } = &err else {
        panic!("held on the two others: {err}");
    };
    let attempts = *attempts as usize;
    // One attempt at the start and one per retry delay: about 6. Retrying
    // every few round trips made about 175.
    assert!(attempts <= 12, "{attempts} attempts in 1 s: {err}");
    // Each attempt asks both live nodes; its clean-up goes to the one it
    // did not wait for (a quorum of refusals decides without it), not to
    // the one that refused.
    let calls: usize = (1..3).map(|node| after[node] - before[node]).sum();
    assert!(
        calls <= 3 * attempts,
        "{calls} script calls on the live nodes for {attempts} attempts"
    );
    holder.release().await.expect("released on the two others");
}

/// A node that stops answering (paused, or cut off without a reset) costs
/// each release a short wait after the others answered, not the node
/// timeout: `lock` calls do not each take that long more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_answering_does_not_hold_up_every_release() {
    let mut nodes = Nodes::start(3);
    let options = quick()
        .ttl(Duration::from_secs(60))
        .node_timeout(Duration::from_secs(5));
    let engine = nodes.engine("t", options.clone()).await;
    nodes.servers[0].pause();
    let resources: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
    let cycles = async {
        for resource in &resources {
            engine
                .lock_with(resource, options.clone(), |_| async {})
                .await
                .expect("two nodes of three grant it");
        }
    };
    // Each release waited out the 5 s node timeout before.
    tokio::time::timeout(Duration::from_secs(3), cycles)
        .await
        .expect("the releases did not wait for the paused node");
    for resource in &resources {
        let key = engine.key(resource, None).unwrap();
        nodes.values_when(&key, gone).await;
    }
    nodes.servers[0].resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_right_after_a_node_dies_do_not_wait_for_it() {
    let mut nodes = Nodes::start(3);
    let options = quick()
        .ttl(Duration::from_secs(120))
        .node_timeout(Duration::from_secs(30));
    let engine = nodes.engine("t", options.clone()).await;
    let held = engine.acquire(&["e"], options.clone()).await.unwrap();
    nodes.servers[0].kill();
    // The client learns of the closed connection from these calls, before
    // it reports itself disconnected: what follows must not wait for it.
    let both = async {
        for round in 0..5 {
            let lock = engine
                .acquire(&[&format!("f{round}")], options.clone())
                .await
                .expect("two nodes of three grant it");
            lock.release().await.expect("released on the two others");
        }
        held.release().await.expect("released on the two others");
    };
    tokio::time::timeout(Duration::from_secs(5), both)
        .await
        .expect("no call waited out the 30 s node timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins() {
    let mut nodes = Nodes::start(3);
    let engine = nodes.engine("t", quick()).await;
    nodes.servers[0].restart();
    // The client reconnects in the background; the node votes again once it has.
    nodes.wait_until_node_takes_part(&engine, 0).await;
}

/// A node that restarts has lost the lock script: an idle engine loads it
/// again as it reconnects, so that its next lock, however much later, does
/// not fail there first (with one node, its first attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_engine_reloads_the_script_on_a_restarted_node() {
    let mut nodes = Nodes::start(1);
    let engine = nodes.engine("t", quick()).await;
    nodes.servers[0].restart();
    let inspector = nodes.servers[0].client().await;
    eventually(Duration::from_secs(20), || async {
        let memory = CustomCommand::new_static("INFO", None, false);
        let info: String = inspector.custom(memory, vec!["memory"]).await.unwrap();
        match info.contains("number_of_cached_scripts:1") {
            true => Ok(()),
            false => Err("the script was not loaded again".to_string()),
        }
    })
    .await;
    let once = LockOptions::default().wait(Duration::ZERO);
    let lock = engine
        .acquire(&["r"], once)
        .await
        .expect("the first attempt");
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_nodes_stop_answering_is_dropped_before_its_validity_ends() {
    let mut nodes = Nodes::start(3);
    // Long enough that its drift allowance (42 ms) covers scheduling delays on a loaded machine.
    let ttl = Duration::from_secs(4);
    let engine = nodes
        .engine(
            "t",
            quick().ttl(ttl).node_timeout(Duration::from_millis(100)),
        )
        .await;
    let (tx, rx) = tokio::sync::oneshot::channel::<Instant>();
    let acquired = Instant::now();
    let servers = &mut nodes.servers;
    let result = {
        let run = engine.lock("h", |ctx| async move {
            let _report = ReportDrop(Some(tx));
            std::future::pending::<()>().await;
            drop(ctx);
        });
        // Pause a majority right after the lock is taken.
        let pause = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            for server in servers[..2].iter_mut() {
                server.pause();
            }
        };
        let (result, ()) = tokio::join!(run, pause);
        result
    };
    let dropped_at = rx.await.unwrap();
    let err = result.unwrap_err();
    assert!(matches!(err, Error::LockLost { .. }), "{err}");
    assert!(
        dropped_at < acquired + ttl,
        "dropped {:?} after acquiring, before the TTL of {ttl:?}",
        dropped_at - acquired
    );
    for server in &mut nodes.servers[..2] {
        server.resume();
    }
}

struct ReportDrop(Option<tokio::sync::oneshot::Sender<Instant>>);

impl Drop for ReportDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(Instant::now());
        }
    }
}

/// A node that lost its scripts (restarted, or `SCRIPT FLUSH`) answers the
/// calls already on their way with NOSCRIPT. They are sent again once the
/// script is loaded, and still each release must run after the acquire it
/// undoes, or the key stays there until its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_the_script_runs_each_release_after_its_acquire() {
    let nodes = Nodes::start(3);
    let engine = nodes.engine("t", quick()).await;
    let inspector = nodes.servers[0].client().await;
    for round in 0..50 {
        let flush = CustomCommand::new_static("SCRIPT", None, false);
        let _: () = inspector.custom(flush, vec!["FLUSH"]).await.unwrap();
        let tasks: Vec<_> = (0..100)
            .map(|task| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let resource = format!("r{round}-{task}");
                    engine.lock(&resource, |_| async {}).await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }
    eventually(Duration::from_secs(10), || async {
        let keys = CustomCommand::new_static("KEYS", None, false);
        let left: Vec<String> = inspector.custom(keys, vec!["redlock_{t}:*"]).await.unwrap();
        match left.is_empty() {
            true => Ok(()),
            false => Err(format!("node 0 still holds {} keys: {left:?}", left.len())),
        }
    })
    .await;
}

/// Waiting for locks while a node is down leaves nothing waiting for that
/// node, and a key still watched when it comes back is watched there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_keys_while_a_node_is_down_leaves_no_task_waiting_for_it() {
    let mut nodes = Nodes::start(3);
    let holder = nodes.engine("t", quick()).await;
    let waiter = nodes.engine("t", quick()).await;
    nodes.servers[0].kill();
    let probe = holder.acquire(&["probe"], LockOptions::default());
    let probe = probe.await.unwrap();
    wait_until_seen_down(&waiter, "probe", 0).await;
    probe.release().await.unwrap();
    let resources: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let mut held = Vec::new();
    for resource in &resources {
        let lock = holder
            .acquire(&[resource.as_str()], LockOptions::default())
            .await;
        held.push(lock.unwrap());
    }
    // One caller keeps watching k0 across the node's return.
    let long = spawn_acquire(&waiter, "k0", LockOptions::default());
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = tasks();

    // Each of these watches its key, then gives up.
    let waits: Vec<_> = resources[1..]
        .iter()
        .map(|resource| {
            let options = LockOptions::default().wait(Duration::from_millis(50));
            spawn_acquire(&waiter, resource, options)
        })
        .collect();
    for wait in waits {
        wait.await.unwrap().unwrap_err();
    }
    eventually(Duration::from_secs(10), || async {
        match tasks() {
            alive if alive <= before + 20 => Ok(()),
            alive => Err(format!(
                "{alive} tasks alive, {before} before 199 keys were watched"
            )),
        }
    })
    .await;

    nodes.servers[0].restart();
    let inspector = nodes.servers[0].client().await;
    eventually(Duration::from_secs(20), || async {
        match support::subscribers(&inspector, "redlock_{t}:~:k0").await {
            1 => Ok(()),
            _ => Err("k0 is not watched on node 0 again".to_string()),
        }
    })
    .await;
    for lock in held {
        lock.release().await.unwrap();
    }
    long.await.unwrap().unwrap().release().await.unwrap();
}

/// A release sent as its node dies, before the client has seen the
/// connection close, is sent again on the new connection: the node, back
/// with its keys, drops the lock's key then, not at its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_sent_as_its_node_dies_reaches_it_when_it_returns() {
    let mut nodes = Nodes::start_persistent(3);
    let engine = nodes.engine("t", quick()).await;
    for round in 0..8 {
        let resource = format!("dying{round}");
        let options = LockOptions::default();
        let lock = engine.acquire(&[resource.as_str()], options).await.unwrap();
        nodes.servers[0].kill();
        lock.release().await.expect("released on the two others");
        nodes.servers[0].restart();
        // The key's TTL is 30 s: only the release can remove it within the bound.
        let key = engine.key(&resource, None).unwrap();
        nodes.values_when(&key, gone).await;
    }
}

/// Whether node `node` voted that it is waiting out its rejoin delay.
fn rejoining(err: &Error, node: usize) -> bool {
    let votes = match err {
        Error::NotAcquired { votes, .. } | Error::QuorumUnreachable { votes, .. } => votes,
        _ => return false,
    };
    matches!(&votes.0[node].vote, Vote::Failed(reason) if reason.contains("REJOINING"))
}

/// An engine over `nodes` whose nodes wait out `delay` after they lost their keys.
async fn gated(nodes: &Nodes, delay: Duration) -> Redlock {
    Redlock::builder()
        .app("t")
        .nodes(nodes.urls())
        .defaults(quick())
        .rejoin_delay(delay)
        .build()
        .await
        .unwrap()
}

/// Without a rejoin delay, a majority of nodes restarted empty hands a
/// held lock to a rival (`fault_injection`, the documented unsafe case).
/// With one, a node that lost its keys grants no lock until the delay has
/// passed on it, and a new node is one that lost them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_keys_grants_no_lock_for_the_rejoin_delay() {
    let mut nodes = Nodes::start(3);
    let holder = gated(&nodes, Duration::from_millis(1500)).await;
    let now = LockOptions::default().wait(Duration::ZERO);
    let err = holder.acquire(&["r"], now.clone()).await.unwrap_err();
    // Two refusals decide it; the third node's vote may not be awaited.
    assert!(
        (0..3).filter(|&node| rejoining(&err, node)).count() >= 2,
        "{err}"
    );
    let lock = holder
        .acquire(&["r"], LockOptions::default().wait(Duration::from_secs(20)))
        .await
        .expect("the nodes vote once the delay has passed");
    // Acquires in batches pass the gate too.
    support::many_at_once(&holder).await;

    nodes.servers[0].restart_empty();
    nodes.servers[1].restart_empty();
    let rival = gated(&nodes, Duration::from_secs(60)).await;
    for _ in 0..3 {
        let err = rival
            .acquire(&["r"], now.clone())
            .await
            .expect_err("a majority lost the lock's keys, and must not hand it out");
        // Two votes against decide it, so the third may not be awaited.
        assert!(rejoining(&err, 0) || rejoining(&err, 1), "{err}");
    }
    // The holder learns at its next extension that a majority forgot its
    // lock; no one else could take it meanwhile.
    // (Until the holder has reconnected to both, the extension is merely
    // refused.)
    eventually(Duration::from_secs(30), || async {
        match lock.extend(Duration::from_secs(30)).await {
            Err(Error::LockLost { .. }) => Ok(()),
            other => Err(format!("the holder was not told: {other:?}")),
        }
    })
    .await;
}

/// A node that restarts with its keys (`appendfsync always`) keeps the
/// gate's as well: it votes again as soon as it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_kept_its_keys_votes_again_at_once() {
    let mut nodes = Nodes::start_persistent(1);
    // This node had waited out the delay long ago.
    let inspector = nodes.servers[0].client().await;
    let _: () = inspector
        .set("redlock_{t}::rejoin", "ready", None, None, false)
        .await
        .unwrap();
    let engine = gated(&nodes, Duration::from_secs(60)).await;
    engine.lock("r", |_| async {}).await.unwrap();

    nodes.servers[0].restart();
    let lock = support::acquire_when_back(&engine, "r").await;
    lock.release().await.unwrap();
}
