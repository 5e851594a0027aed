//! Bursts of locks on real redis-server processes: the operations waiting
//! for a node go out together in few script calls, on both tokio runtimes,
//! and every acquire is answered and every release lands.

mod support;

use std::time::Duration;

use fred::prelude::*;
use fred::types::CustomCommand;
use redlock::LockOptions;
use support::{quick, Nodes};

const TASKS: usize = 200;
const ROUNDS: usize = 5;

#[tokio::test(flavor = "current_thread")]
async fn a_burst_on_one_node_is_batched_and_leaves_nothing_behind() {
    burst(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_three_nodes_is_batched_and_leaves_nothing_behind() {
    burst(3).await;
}

/// Callers that stop waiting at every stage of their calls (before a call
/// is sent, while it is queued, while it is out) must leave every node's
/// queue moving: afterwards, each resource is taken on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_giving_up_midway_leave_every_queue_moving() {
    let nodes = Nodes::start(3);
    let ttl = Duration::from_secs(1);
    let engine = nodes.engine("t", quick().ttl(ttl)).await;

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let resource = format!("r{task}");
                let resources = [resource.as_str()];
                for round in 0..ROUNDS * 4 {
                    // 0 to 490 µs: from before the first poll to after the answer.
                    let patience =
                        Duration::from_micros(((task * 7 + round * 13) % 50) as u64 * 10);
                    let attempt = engine.acquire(&resources, LockOptions::default());
                    if let Ok(Ok(lock)) = tokio::time::timeout(patience, attempt).await {
                        let release = lock.release();
                        let _ = tokio::time::timeout(patience, release).await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    // What the callers left behind expires within the TTL; the wait covers it.
    for task in 0..TASKS {
        let resource = format!("r{task}");
        let key = engine.key(&resource, None).unwrap();
        let options = LockOptions::default().wait(ttl * 10);
        let lock = engine.acquire(&[resource.as_str()], options).await.unwrap();
        let held = nodes.values(&key).await;
        assert!(
            held.iter().all(Option::is_some),
            "{resource} was not taken on every node: {held:?}"
        );
        lock.release().await.unwrap();
    }
}

/// `TASKS` tasks each take and release a resource of their own `ROUNDS`
/// times, all at once, then every node is checked.
async fn burst(n: usize) {
    let nodes = Nodes::start(n);
    let engine = nodes.engine("t", quick()).await;
    let before = script_calls(&nodes).await;

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let resource = format!("r{task}");
                for _ in 0..ROUNDS {
                    let lock = engine
                        .acquire(&[resource.as_str()], LockOptions::default())
                        .await
                        .expect("a free resource is taken");
                    assert!(lock.fencing_token() > 0);
                    lock.release().await.expect("released");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    // An acquire and a release per round, on every node.
    let operations = 2 * TASKS * ROUNDS;
    for (node, (after, before)) in script_calls(&nodes).await.iter().zip(before).enumerate() {
        let calls = after - before;
        assert!(
            calls * 4 <= operations,
            "node {node}: {calls} script calls for {operations} operations: not batched"
        );
    }
    for (node, server) in nodes.servers.iter().enumerate() {
        let client = server.client().await;
        let left: Vec<String> = client
            .custom(
                CustomCommand::new_static("KEYS", None, false),
                vec!["redlock_t:*"],
            )
            .await
            .unwrap();
        assert!(left.is_empty(), "node {node} still holds {left:?}");
        let _ = client.quit().await;
    }
}

/// How many `EVALSHA` calls each node has run so far.
async fn script_calls(nodes: &Nodes) -> Vec<usize> {
    let mut calls = Vec::new();
    for server in &nodes.servers {
        let client = server.client().await;
        let stats: String = client
            .custom(
                CustomCommand::new_static("INFO", None, false),
                vec!["commandstats"],
            )
            .await
            .unwrap();
        let _ = client.quit().await;
        let count = stats
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
            .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap());
        calls.push(count);
    }
    calls
}
