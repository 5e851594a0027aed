//! The safety checker: every worker records its holds on one monotonic
//! clock; the checker asserts that no two holds of a resource overlap and
//! that fencing tokens increase in the order the holds began.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redlock::Redlock;
use tokio::time::Instant;

/// One hold of a resource, from the moment the holder's code started to
/// the moment it stopped (returned, or was dropped on loss).
#[derive(Clone, Debug)]
pub struct Hold {
    pub resource: String,
    pub token: u64,
    pub began: Instant,
    pub ended: Instant,
    pub worker: usize,
}

/// Collects holds from many workers.
#[derive(Clone, Default)]
pub struct Checker {
    holds: Arc<Mutex<Vec<Hold>>>,
}

/// A hold in progress: recorded when dropped, so that a function dropped
/// because its lock was lost still ends its hold at the moment it stopped.
pub struct Recording {
    checker: Checker,
    hold: Option<Hold>,
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(mut hold) = self.hold.take() {
            hold.ended = Instant::now();
            self.checker.holds.lock().unwrap().push(hold);
        }
    }
}

/// What a check found.
#[derive(Debug)]
pub struct Summary {
    /// Holds per resource.
    pub holds: BTreeMap<String, usize>,
}

impl Summary {
    pub fn total(&self) -> usize {
        self.holds.values().sum()
    }
}

impl Checker {
    /// Starts recording a hold; keep the value alive for the whole critical section.
    pub fn begin(&self, resource: &str, token: u64, worker: usize) -> Recording {
        let now = Instant::now();
        Recording {
            checker: self.clone(),
            hold: Some(Hold {
                resource: resource.to_owned(),
                token,
                began: now,
                ended: now,
                worker,
            }),
        }
    }

    /// Holds recorded so far.
    pub fn holds(&self) -> Vec<Hold> {
        self.holds.lock().unwrap().clone()
    }

    /// Panics, naming the two holds, on an overlap or a token that does not increase.
    pub fn check(&self) -> Summary {
        self.check_with(true)
    }

    /// Panics on an overlap only: for faults outside the fencing claim
    /// (a node that lost its data), where tokens may repeat.
    pub fn check_exclusion(&self) -> Summary {
        self.check_with(false)
    }

    fn check_with(&self, tokens: bool) -> Summary {
        let mut by_resource: BTreeMap<String, Vec<Hold>> = BTreeMap::new();
        for hold in self.holds() {
            by_resource
                .entry(hold.resource.clone())
                .or_default()
                .push(hold);
        }
        let mut summary = Summary {
            holds: BTreeMap::new(),
        };
        for (resource, mut holds) in by_resource {
            holds.sort_by_key(|h| h.began);
            for pair in holds.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                assert!(
                    a.ended <= b.began,
                    "holds of {resource:?} overlap by {:?}: {a:?} and {b:?}",
                    a.ended - b.began
                );
                assert!(
                    !tokens || a.token < b.token,
                    "fencing tokens of {resource:?} do not increase: {a:?} then {b:?}"
                );
            }
            summary.holds.insert(resource, holds.len());
        }
        summary
    }
}

/// `workers` tasks spread over `engines` each lock `resource` `rounds`
/// times, and under the lock make a non-atomic increment of `counter` that
/// takes about 1 ms; every hold goes to `checker`.
pub async fn contend(
    engines: &[Redlock],
    workers: usize,
    rounds: usize,
    resource: &str,
    checker: &Checker,
    counter: &Arc<AtomicU64>,
) {
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let engine = engines[worker % engines.len()].clone();
        let (checker, counter, resource) = (checker.clone(), counter.clone(), resource.to_owned());
        tasks.push(tokio::spawn(async move {
            let (checker, counter, resource) = (&checker, &counter, resource.as_str());
            for _ in 0..rounds {
                engine
                    .lock(resource, |ctx| async move {
                        let _hold = checker.begin(resource, ctx.fencing_token(), worker);
                        let seen = counter.load(Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        counter.store(seen + 1, Ordering::SeqCst);
                    })
                    .await
                    .expect("a contended lock is acquired within its wait bound");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}
