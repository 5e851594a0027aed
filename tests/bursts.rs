//! Bursts of locks on real redis-server processes: the operations waiting
//! for a node go out together in few script calls, on both tokio runtimes,
//! and every acquire is answered and every release lands.

mod support;

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use fred::prelude::*;
use fred::types::CustomCommand;
use redlock::LockOptions;
use support::{eventually, everywhere, quick, Nodes};

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

/// Callers that stop waiting at every stage of their calls (while queued,
/// while their call is out, with an abandoned call ahead of theirs) must
/// leave every node's queue moving: afterwards, once what they left has
/// expired, each resource is taken on every node. A liveness check under
/// cancellation; whether a place in a queue leaks on a given path is for
/// the unit tests, since one leaked place of two does not stop a queue.
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
                    // From right after the first poll to after the answer.
                    let attempt = engine.acquire(&resources, LockOptions::default());
                    let patience = 1 + (task * 7 + round * 13) % 8;
                    if let Some(Ok(lock)) = give_up_after(patience, attempt).await {
                        let patience = 1 + (task * 3 + round * 5) % 4;
                        give_up_after(patience, lock.release()).await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    // A caller that gave up after some nodes said yes left its key there
    // until the TTL; a queue that stopped moving would never say yes again.
    for task in 0..TASKS {
        let resource = format!("r{task}");
        let key = engine.key(&resource, None).unwrap();
        eventually(ttl * 10, || async {
            let options = LockOptions::default().wait(ttl * 10);
            let lock = engine.acquire(&[resource.as_str()], options).await.unwrap();
            let held = nodes.values(&key).await;
            lock.release().await.unwrap();
            match everywhere(&held) {
                true => Ok(()),
                false => Err(format!(
                    "{resource} is still not taken on every node: {held:?}"
                )),
            }
        })
        .await;
    }
}

/// Polls `future` up to `polls` times, yielding to every other task in
/// between, and drops it if it is not done by then.
async fn give_up_after<F: Future>(polls: usize, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    for _ in 0..polls {
        let poll = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await;
        if let Poll::Ready(output) = poll {
            return Some(output);
        }
        tokio::task::yield_now().await;
    }
    None
}

/// `TASKS` tasks each take and release a resource of their own `ROUNDS`
/// times, all at once, then every node is checked.
async fn burst(n: usize) {
    let nodes = Nodes::start(n);
    let engine = nodes.engine("t", quick()).await;
    let before = nodes.script_calls().await;

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
    for (node, (after, before)) in nodes.script_calls().await.iter().zip(before).enumerate() {
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
                vec!["redlock_{t}:*"],
            )
            .await
            .unwrap();
        assert!(left.is_empty(), "node {node} still holds {left:?}");
        let _ = client.quit().await;
    }
}
