//! What the locked function sees of its lock.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::lock::Held;

/// The view of a held lock given to the function run by
/// [`Redlock::lock`](crate::Redlock::lock). Cheap to clone; may be moved into spawned tasks.
///
/// ```no_run
/// # async fn demo(engine: redlock_core::Redlock) -> Result<(), redlock_core::Error> {
/// engine.lock("report", |ctx| async move {
///     for chunk in 0..100 {
///         if ctx.is_lost() {
///             return; // someone else may hold the lock now: stop writing
///         }
///         // ... work on `chunk` ...
/// #       let _ = chunk;
///     }
/// }).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LockContext {
    held: Arc<Held>,
}

impl LockContext {
    pub(crate) fn new(held: Arc<Held>) -> LockContext {
        LockContext { held }
    }

    /// True once the lock is lost: its validity ran out without an extension,
    /// or a majority of nodes no longer holds it.
    pub fn is_lost(&self) -> bool {
        self.held.is_lost()
    }

    /// Completes when the lock is lost (never, if it is released first and the context dropped).
    pub async fn lost(&self) {
        self.held.lost().await
    }

    /// Time left before the lock may expire on the nodes; extensions push it forward.
    pub fn validity(&self) -> Duration {
        self.held.validity()
    }

    /// The fencing token of this lock (see [`Lock::fencing_token`](crate::Lock::fencing_token)).
    pub fn fencing_token(&self) -> u64 {
        self.held.fencing_token
    }

    /// The resources held.
    pub fn resources(&self) -> &[String] {
        self.held.resources()
    }

    /// The Redis keys held, one per resource.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.held
            .keys
            .locks()
            .iter()
            .map(|k| k.as_str().unwrap_or_default())
    }
}

impl fmt::Debug for LockContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockContext")
            .field("resources", &self.held.resources())
            .field("validity", &self.validity())
            .field("lost", &self.is_lost())
            .finish()
    }
}
