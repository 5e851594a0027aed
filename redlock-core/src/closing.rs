//! Closing an engine, for a process that shuts down: no new acquire,
//! waiting ones end, and the acquires and releases under way finish before
//! the connections close.
//!
//! The point is the releases. A lock call that is cancelled (its request
//! timed out, its task was aborted) or a guard that is dropped releases in
//! a task of its own; a process that exits before those tasks have run
//! leaves its keys on the nodes, and every other process waits out the TTL.

use std::ops::Deref;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use tokio::sync::Notify;

/// Whether the engine is closed, and what is under way.
#[derive(Default)]
pub(crate) struct Closing {
    closed: AtomicBool,
    /// Acquires and releases under way. With `closed`, read and written in
    /// sequentially consistent order: an operation that counts itself
    /// before `close` marks the engine closed is waited for, one that counts
    /// itself after sees the mark.
    busy: AtomicUsize,
    /// Wakes the operations that wait when the engine closes.
    closed_signal: Notify,
    /// Wakes `close` when the last operation under way ends.
    idle: Notify,
}

/// One operation under way, counted until dropped. Borrowed on the path
/// of every lock; owned (an `Arc`) by a release in a task of its own.
pub(crate) struct Busy<C: Deref<Target = Closing>>(C);

impl<C: Deref<Target = Closing>> Drop for Busy<C> {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, SeqCst) == 1 && self.0.closed.load(SeqCst) {
            self.0.idle.notify_waiters();
        }
    }
}

impl Closing {
    /// Counts an acquire, unless the engine is closed.
    pub fn enter(&self) -> Option<Busy<&Closing>> {
        let busy = self.enter_anyway();
        (!self.is_closed()).then_some(busy)
    }

    /// Counts a release: it runs, also once the engine is closed.
    pub fn enter_anyway(&self) -> Busy<&Closing> {
        self.busy.fetch_add(1, SeqCst);
        Busy(self)
    }

    /// [`enter_anyway`](Closing::enter_anyway), for a task of its own.
    pub fn enter_owned(self: &Arc<Self>) -> Busy<Arc<Closing>> {
        self.busy.fetch_add(1, SeqCst);
        Busy(self.clone())
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }

    /// Completes once the engine is closed.
    pub async fn closed(&self) {
        // Registered before the flag is read, so a close in between wakes it.
        let mut signal = pin!(self.closed_signal.notified());
        signal.as_mut().enable();
        if !self.is_closed() {
            signal.await;
        }
    }

    /// Marks the engine closed, wakes what waits, and completes once no
    /// operation is under way.
    pub async fn close(&self) {
        self.closed.store(true, SeqCst);
        self.closed_signal.notify_waiters();
        loop {
            let mut idle = pin!(self.idle.notified());
            idle.as_mut().enable();
            if self.busy.load(SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    #[tokio::test]
    async fn close_waits_for_what_was_under_way_and_refuses_what_comes_after() {
        let closing = Arc::new(Closing::default());
        let release = closing.enter_owned();
        let acquire = closing.enter().expect("open");
        let mut close = pin!(closing.close());
        assert!(poll_once(close.as_mut()).is_pending());
        assert!(closing.enter().is_none(), "closed to new acquires");
        drop(closing.enter_anyway());
        drop(acquire);
        assert!(
            poll_once(close.as_mut()).is_pending(),
            "a release is under way"
        );
        drop(release);
        tokio::time::timeout(Duration::from_secs(5), close)
            .await
            .expect("close completes once nothing is under way");
        tokio::time::timeout(Duration::from_secs(5), closing.closed())
            .await
            .expect("closed");
    }

    fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(std::task::Waker::noop()))
    }
}
