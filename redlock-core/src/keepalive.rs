//! Automatic extension of a lock while its function runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::lock::Held;

/// Shortest pause between two failed extension attempts.
const MIN_RETRY: Duration = Duration::from_millis(1);

/// Extends `held` each time half of its TTL has passed, until it is lost.
///
/// A failed extension is retried while validity remains; when it runs out,
/// or a majority says the lock is gone, the lock is marked lost and this
/// task ends, which wakes every [`LockContext::lost`](crate::LockContext::lost).
pub(crate) async fn keep_alive(held: Arc<Held>) {
    let ttl = held.settings.lease.ttl;
    loop {
        let renew_at = held
            .deadline()
            .checked_sub(ttl / 2)
            .unwrap_or_else(Instant::now);
        tokio::time::sleep_until(renew_at).await;
        loop {
            match held.extend(ttl).await {
                Ok(_) => break,
                Err(Error::NotExtended { validity, .. }) => {
                    let pause = held.settings.retry_delay.min(validity / 4).max(MIN_RETRY);
                    tokio::time::sleep(pause).await;
                }
                Err(_) => return,
            }
        }
    }
}

/// Aborts the task when dropped, so the keep-alive stops with the call that owns it,
/// also when that call is cancelled or its function panics.
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
