//! One connection pool per data-source level, created on first use.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use crate::level::current_level;

/// A pool of the caller's choosing (an sqlx `Pool`, a deadpool `Pool`, ...)
/// per data-source level, so that code run by
/// [`lock_isolate`](crate::Redlock::lock_isolate) draws its connections from a
/// pool of its own.
///
/// The factory is called once per level, on first use, with the level; pass a
/// constructor that does not connect yet (sqlx's `connect_lazy_with`,
/// deadpool's builders). `P` is cloned on every [`get`](LevelPools::get), so
/// it should be a cheap handle.
///
/// ```
/// use std::sync::Arc;
/// use redlock_core::{at_level, LevelPools};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pools = LevelPools::new(|level| Arc::new(format!("pool for level {level}")));
/// assert_eq!(*pools.get(), "pool for level 0");
/// at_level(1, async { assert_eq!(*pools.get(), "pool for level 1") }).await;
/// assert_eq!(pools.levels(), [0, 1]);
/// # }
/// ```
pub struct LevelPools<P> {
    factory: Box<dyn Fn(u32) -> P + Send + Sync>,
    pools: Mutex<BTreeMap<u32, P>>,
}

impl<P: Clone> LevelPools<P> {
    /// Pools made by `factory(level)`, one per level, on first use.
    pub fn new(factory: impl Fn(u32) -> P + Send + Sync + 'static) -> Self {
        LevelPools {
            factory: Box::new(factory),
            pools: Mutex::new(BTreeMap::new()),
        }
    }

    /// The pool of the current task's level.
    pub fn get(&self) -> P {
        self.at(current_level())
    }

    /// The pool of `level`.
    pub fn at(&self, level: u32) -> P {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .entry(level)
            .or_insert_with(|| (self.factory)(level))
            .clone()
    }

    /// The levels that have a pool so far, in order.
    pub fn levels(&self) -> Vec<u32> {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.keys().copied().collect()
    }
}

impl<P> fmt::Debug for LevelPools<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("LevelPools")
            .field("levels", &pools.keys().collect::<Vec<_>>())
            .finish()
    }
}
