//! Automatic extension of a lock while its function runs.
//!
//! One task per engine keeps the schedule of every lock it extends and
//! wakes when the earliest is due, so a long-held lock costs an entry in a
//! map, not a task and a timer of its own. A lock joins the schedule when
//! its first extension falls due (see [`keep`]): most locks are
//! released before that and never take the schedule's lock. Each extension
//! that falls due runs as a short task, so a slow node delays no other lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use crate::error::Error;
use crate::lock::Held;
use crate::options::OnLoss;

/// Shortest pause between two failed extension attempts.
const MIN_RETRY: Duration = Duration::from_millis(1);

/// The task wakes at least this seldom when nothing is due.
const MIN_IDLE: Duration = Duration::from_secs(1);

/// The extension schedule of one engine.
pub(crate) struct KeepAlive {
    schedule: Mutex<Schedule>,
    /// Wakes the task when a lock falls due before the task's next wake.
    earlier: Notify,
    /// How long the task sleeps with nothing due: a quarter of the default
    /// TTL (at least [`MIN_IDLE`]), so that a lock of that TTL, due at half
    /// of it, need not wake the task early.
    idle: Duration,
}

struct Schedule {
    /// The locks waiting for their next extension, earliest first.
    due: BTreeMap<(Instant, u64), Arc<Held>>,
    /// Where each registered lock is.
    slots: HashMap<u64, Slot>,
    next_id: u64,
    /// When the task wakes next.
    wake_at: Instant,
    task: Option<JoinHandle<()>>,
}

enum Slot {
    /// In `due`, at this time.
    Due(Instant),
    /// Its extension is running.
    Extending(AbortHandle),
}

/// A lock on the schedule; dropping it ends the lock's extensions, also
/// when the call that owns it is cancelled or its function panics.
pub(crate) struct Registration<'a> {
    keep_alive: &'a KeepAlive,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut schedule = self.keep_alive.schedule();
        match schedule.slots.remove(&self.id) {
            Some(Slot::Due(at)) => {
                schedule.due.remove(&(at, self.id));
            }
            Some(Slot::Extending(extension)) => extension.abort(),
            None => {}
        }
    }
}

impl KeepAlive {
    /// A schedule for an engine whose default TTL is `default_ttl`.
    pub fn new(default_ttl: Duration) -> Arc<KeepAlive> {
        let idle = (default_ttl / 4).max(MIN_IDLE);
        Arc::new(KeepAlive {
            schedule: Mutex::new(Schedule {
                due: BTreeMap::new(),
                slots: HashMap::new(),
                next_id: 0,
                wake_at: Instant::now() + idle,
                task: None,
            }),
            earlier: Notify::new(),
            idle,
        })
    }

    /// Ends the task (the engine is gone).
    pub fn stop(&self) {
        if let Some(task) = self.schedule().task.take() {
            task.abort();
        }
    }

    fn schedule(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Extends `held` each time half of its TTL has passed, until it is
    /// lost or the registration is dropped.
    ///
    /// A failed extension is retried while validity remains; when it runs
    /// out, or a majority says the lock is gone, the lock is marked lost,
    /// which wakes every [`LockContext::lost`](crate::LockContext::lost).
    pub fn register<'a>(self: &'a Arc<Self>, held: &Arc<Held>) -> Registration<'a> {
        let mut schedule = self.schedule();
        // Started by the first lock, and again if its runtime has gone.
        if schedule.task.as_ref().is_none_or(JoinHandle::is_finished) {
            schedule.task = Some(tokio::spawn(self.clone().run()));
        }
        let id = schedule.next_id;
        schedule.next_id += 1;
        self.put(&mut schedule, id, held.clone());
        Registration {
            keep_alive: self,
            id,
        }
    }

    /// Puts `held` on the schedule, due when half of its TTL is left.
    fn put(&self, schedule: &mut Schedule, id: u64, held: Arc<Held>) {
        let due_at = held
            .deadline()
            .checked_sub(held.settings.lease.ttl / 2)
            .unwrap_or_else(Instant::now);
        if due_at < schedule.wake_at {
            schedule.wake_at = due_at;
            self.earlier.notify_one();
        }
        schedule.slots.insert(id, Slot::Due(due_at));
        schedule.due.insert((due_at, id), held);
    }

    /// The task: sleeps until the earliest lock is due, and starts the
    /// extension of every lock due by then. Aborted with its engine.
    async fn run(self: Arc<Self>) {
        loop {
            let wake_at = self.schedule().wake_at;
            tokio::select! {
                () = tokio::time::sleep_until(wake_at) => {}
                // An earlier lock came in: sleep again, until it.
                () = self.earlier.notified() => continue,
            }
            let now = Instant::now();
            let mut schedule = self.schedule();
            while let Some(entry) = schedule.due.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let ((_, id), held) = entry.remove_entry();
                let extension = tokio::spawn(self.clone().extend(id, held));
                schedule
                    .slots
                    .insert(id, Slot::Extending(extension.abort_handle()));
            }
            schedule.wake_at = match schedule.due.first_key_value() {
                Some(((at, _), _)) => *at,
                None => now + self.idle,
            };
        }
    }

    /// One extension of the lock `id`, retried while validity remains;
    /// then the lock goes back on the schedule, unless it was lost.
    async fn extend(self: Arc<Self>, id: u64, held: Arc<Held>) {
        let ttl = held.settings.lease.ttl;
        loop {
            match held.extend(ttl).await {
                Ok(_) => break,
                Err(Error::NotExtended { validity, .. }) => {
                    let pause = held.settings.retry_delay.min(validity / 4).max(MIN_RETRY);
                    tokio::time::sleep(pause).await;
                }
                // Lost, and marked so by `extend`.
                Err(_) => return,
            }
        }
        let mut schedule = self.schedule();
        // Not if its function ended meanwhile.
        if schedule.slots.contains_key(&id) {
            self.put(&mut schedule, id, held);
        }
    }
}

/// Keeps `held` alive until dropped: on the engine's extension schedule
/// from when its first extension falls due, so a lock released sooner, the
/// usual one, never touches the schedule. Completes only if the lock is
/// lost and its options say to abort.
pub(crate) async fn keep(held: &Arc<Held>) {
    let abort = matches!(held.settings.on_loss, OnLoss::Abort);
    let first_due = held
        .deadline()
        .checked_sub(held.settings.lease.ttl / 2)
        .unwrap_or_else(Instant::now);
    // Validity cannot run out before the first extension is due; only a
    // failed manual extension can mark the lock lost meanwhile.
    tokio::select! {
        () = held.marked_lost(), if abort => return,
        () = tokio::time::sleep_until(first_due) => {}
    }
    let _extended = held.engine.keep_alive.register(held);
    if abort {
        held.lost().await;
    } else {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LockOptions, Redlock};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn locks_are_scheduled_while_their_functions_run_and_not_after() {
        let engine = Redlock::builder().in_memory().build().await.unwrap();
        let ttl = Duration::from_millis(300);
        let runs: Vec<_> = (0..3)
            .map(|i| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let options = LockOptions::default().ttl(ttl);
                    engine
                        .lock_with(&format!("r{i}"), options, |ctx| async move {
                            tokio::time::sleep(ttl * 3).await;
                            ctx.is_lost()
                        })
                        .await
                })
            })
            .collect();
        // A call cancelled mid-function leaves nothing on the schedule either.
        let cancelled = tokio::time::timeout(
            ttl,
            engine.lock("cancelled", |_ctx| std::future::pending::<()>()),
        )
        .await;
        assert!(cancelled.is_err());
        for run in runs {
            assert!(!run.await.unwrap().unwrap(), "extended, not lost");
        }
        let schedule = engine.inner().keep_alive.schedule();
        assert!(schedule.slots.is_empty() && schedule.due.is_empty());
    }
}
