//! A held lock: its validity, extension, release, and the guard users hold.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fred::types::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::context::LockContext;
use crate::engine::Inner;
use crate::error::{Error, Result, Vote};
use crate::options::Settings;
use crate::quorum::{self, fan_out, Until};
use crate::resource::LockKeys;

/// The state of one held lock, shared by its guard, its contexts and the extension schedule.
pub(crate) struct Held {
    pub engine: Arc<Inner>,
    /// Read back from `keys` when first asked for (errors, display).
    resources: OnceLock<Vec<String>>,
    pub keys: LockKeys,
    pub value: Value,
    pub settings: Settings,
    pub fencing_token: u64,
    /// End of validity: after it, the lock may be someone else's.
    deadline: Mutex<Instant>,
    /// Set once the lock is known lost; `lost_signal` wakes those waiting for it.
    lost: AtomicBool,
    lost_signal: Notify,
    released: AtomicBool,
}

impl Held {
    pub fn new(
        engine: Arc<Inner>,
        keys: LockKeys,
        value: Value,
        settings: Settings,
        fencing_token: u64,
        deadline: Instant,
    ) -> Held {
        Held {
            engine,
            resources: OnceLock::new(),
            keys,
            value,
            settings,
            fencing_token,
            deadline: Mutex::new(deadline),
            lost: AtomicBool::new(false),
            lost_signal: Notify::new(),
            released: AtomicBool::new(false),
        }
    }

    /// The resources held.
    pub fn resources(&self) -> &[String] {
        self.resources.get_or_init(|| self.keys.resources())
    }

    pub fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn validity(&self) -> Duration {
        self.deadline().saturating_duration_since(Instant::now())
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire) || Instant::now() >= self.deadline()
    }

    fn mark_lost(&self) {
        self.lost.store(true, Ordering::Release);
        self.lost_signal.notify_waiters();
    }

    /// Completes when the lock is marked lost.
    pub async fn marked_lost(&self) {
        // Registered before the flag is read, so a mark in between wakes it.
        let mut marked = std::pin::pin!(self.lost_signal.notified());
        marked.as_mut().enable();
        if !self.lost.load(Ordering::Acquire) {
            marked.await;
        }
    }

    /// Completes when the lock is lost: marked lost, or its validity ran out.
    pub async fn lost(&self) {
        loop {
            let deadline = self.deadline();
            tokio::select! {
                () = self.marked_lost() => return,
                () = tokio::time::sleep_until(deadline) => {
                    // The deadline may have moved while we slept.
                    if Instant::now() >= self.deadline() {
                        self.mark_lost();
                        return;
                    }
                }
            }
        }
    }

    fn lost_error(&self, reason: impl Into<String>) -> Error {
        self.mark_lost();
        Error::LockLost {
            resources: self.resources().to_vec(),
            reason: reason.into(),
        }
    }

    /// Extends the lease to `ttl` from now on a quorum, within the remaining validity.
    pub async fn extend(&self, ttl: Duration) -> Result<Duration> {
        let lease = self.settings.lease(ttl)?;
        if self.released.load(Ordering::Acquire) {
            return Err(self.lost_error("it was released"));
        }
        let start = Instant::now();
        let old_deadline = self.deadline();
        if self.lost.load(Ordering::Acquire) || start >= old_deadline {
            return Err(self.lost_error("its validity ran out before the extension"));
        }
        let nodes = &self.engine.nodes;
        let timeout = self.settings.node_timeout.min(old_deadline - start);
        let votes = fan_out(
            nodes,
            timeout,
            Until::Decided {
                quorum: self.engine.quorum,
            },
            |node| node.extend(&self.keys, &self.value, lease.ttl_ms),
            |extended| match extended {
                1 => (Vote::Granted, 0),
                _ => (Vote::Gone, 0),
            },
        )
        .await;
        let tally = quorum::tally(&votes);
        if Instant::now() >= old_deadline {
            return Err(self.lost_error("the extension was answered after the validity ran out"));
        }
        if tally.granted >= self.engine.quorum {
            let validity = lease.validity(start.elapsed()).unwrap_or_default();
            *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) =
                start + lease.ttl - lease.drift;
            return Ok(validity);
        }
        if tally.gone > nodes.len() - self.engine.quorum {
            let votes = quorum::named(nodes, votes);
            return Err(self.lost_error(format!("a majority no longer holds it ({votes})")));
        }
        Err(Error::NotExtended {
            resources: self.resources().to_vec(),
            validity: self.validity(),
            votes: quorum::named(nodes, votes),
        })
    }

    /// Deletes our keys on every node (never a foreign value). Idempotent.
    pub async fn release(&self) -> Result<()> {
        if self.released.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let _busy = self.engine.closing.enter_anyway();
        let nodes = &self.engine.nodes;
        let mut round = std::pin::pin!(fan_out(
            nodes,
            self.settings.node_timeout,
            // Every node, so that when this returns no reachable node still
            // holds the value; but not a node that stopped answering.
            Until::AllButLate {
                quorum: self.engine.quorum,
            },
            |node| node.release(&self.keys, &self.value, true),
            quorum::any_answer,
        ));
        // The round's first poll hands each node its release, and a node runs
        // its calls in the order they were handed to it: a waiter of this
        // engine can go then, a round trip sooner, and finds the keys gone.
        let mut handoff = Some(self.engine.wakeup.releasing(self.keys.locks(), &self.value));
        let votes = std::future::poll_fn(|cx| {
            let votes = round.as_mut().poll(cx);
            if let Some(handoff) = handoff.take() {
                handoff.sent();
            }
            votes
        })
        .await;
        let tally = quorum::tally(&votes);
        if tally.granted >= self.engine.quorum {
            return Ok(());
        }
        Err(Error::QuorumUnreachable {
            resources: self.resources().to_vec(),
            quorum: self.engine.quorum,
            nodes: nodes.len(),
            answered: tally.answered,
            votes: quorum::named(nodes, votes),
        })
    }
}

/// A held lock, from [`Redlock::acquire`](crate::Redlock::acquire).
///
/// The guard does not extend itself: call [`extend`](Lock::extend) before
/// [`validity`](Lock::validity) runs out, or use [`Redlock::lock`](crate::Redlock::lock),
/// which does. Dropping an unreleased guard releases it in the background.
pub struct Lock {
    held: Arc<Held>,
}

impl Lock {
    pub(crate) fn new(held: Held) -> Lock {
        Lock {
            held: Arc::new(held),
        }
    }

    pub(crate) fn held(&self) -> &Arc<Held> {
        &self.held
    }

    /// The resources this lock holds.
    pub fn resources(&self) -> &[String] {
        self.held.resources()
    }

    /// Time left before the lock may expire on the nodes (zero once lost).
    pub fn validity(&self) -> Duration {
        self.held.validity()
    }

    /// True once the validity has run out or an extension found the lock gone.
    pub fn is_lost(&self) -> bool {
        self.held.is_lost()
    }

    /// The fencing token: larger than the token of every earlier holder of
    /// any of these resources, while a majority of nodes keeps its data.
    /// Pass it to the protected store, which should reject any write with a
    /// token lower than the highest it has seen. 0 when fencing is off.
    pub fn fencing_token(&self) -> u64 {
        self.held.fencing_token
    }

    /// A context for code that runs under this lock.
    pub fn context(&self) -> LockContext {
        LockContext::new(self.held.clone())
    }

    /// Extends the lock to `ttl` from now, on a quorum, before its validity runs out.
    ///
    /// Returns the new validity; [`Error::LockLost`] when the lock is gone (and
    /// stays gone); [`Error::NotExtended`] when too few nodes answered but the
    /// lock is still valid, so a retry may succeed.
    pub async fn extend(&self, ttl: Duration) -> Result<Duration> {
        self.held.extend(ttl).await
    }

    /// Releases the lock on every node, bounded by the per-node timeout.
    /// Returns when every node answered, or soon after a quorum did (twice
    /// the time that took, at least 50 ms): a node that stopped answering
    /// does not hold it up, and its release still goes out.
    ///
    /// An error means fewer than a quorum of nodes confirmed; the keys then
    /// expire at their TTL on the nodes that did not answer.
    pub async fn release(self) -> Result<()> {
        self.held.release().await
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.held.released.load(Ordering::Acquire) {
            return;
        }
        // Outside a runtime the keys expire at their TTL.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let held = self.held.clone();
            // Counted now: `Redlock::close` waits for it, though the task
            // has not run yet.
            let busy = held.engine.closing.enter_owned();
            runtime.spawn(async move {
                let _ = held.release().await;
                drop(busy);
            });
        }
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The full value would let a reader of the logs release the lock.
        let value = self.held.value.as_str().unwrap_or_default();
        f.debug_struct("Lock")
            .field("resources", &self.held.resources())
            .field("value", &format_args!("{}…", &value[..value.len().min(6)]))
            .field("validity", &self.validity())
            .finish()
    }
}
