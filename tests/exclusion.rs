//! Mutual exclusion, measured: many tasks over several engines (separate
//! clients) do a non-atomic read-modify-write under one lock.

mod support;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{quick, Nodes};
use tokio::time::Instant;

const ENGINES: usize = 4;
const TASKS_PER_ENGINE: usize = 4;
const ROUNDS: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_update_is_lost_and_no_two_holders_overlap() {
    let nodes = Nodes::start(3);
    let mut engines = Vec::new();
    for _ in 0..ENGINES {
        engines.push(
            nodes
                .engine("t", quick().wait(Duration::from_secs(120)))
                .await,
        );
    }
    let counter = Arc::new(AtomicU64::new(0));
    let inside = Arc::new(AtomicUsize::new(0));
    let holds = Arc::new(Mutex::new(Vec::new()));

    let mut tasks = Vec::new();
    for engine in &engines {
        for _ in 0..TASKS_PER_ENGINE {
            let (engine, counter, inside, holds) = (
                engine.clone(),
                counter.clone(),
                inside.clone(),
                holds.clone(),
            );
            tasks.push(tokio::spawn(async move {
                for _ in 0..ROUNDS {
                    engine
                        .lock("counter", |_ctx| async {
                            let entered = Instant::now();
                            assert_eq!(
                                inside.fetch_add(1, Ordering::SeqCst),
                                0,
                                "two holders at once"
                            );
                            // Read, yield to every other task, write: loses updates without the lock.
                            let seen = counter.load(Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            tokio::time::sleep(Duration::from_micros(200)).await;
                            counter.store(seen + 1, Ordering::SeqCst);
                            inside.fetch_sub(1, Ordering::SeqCst);
                            holds.lock().unwrap().push((entered, Instant::now()));
                        })
                        .await
                        .expect("acquired within the wait bound");
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }

    let total = (ENGINES * TASKS_PER_ENGINE * ROUNDS) as u64;
    assert_eq!(counter.load(Ordering::SeqCst), total, "an update was lost");
    let mut holds = holds.lock().unwrap().clone();
    assert_eq!(holds.len() as u64, total);
    holds.sort();
    for pair in holds.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "holds overlap: {pair:?}");
    }
}
