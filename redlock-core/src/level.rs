//! Data-source levels: the level a task runs at, so that locked code can pick
//! a connection pool of its own level (see [`Redlock::lock_isolate`](crate::Redlock::lock_isolate)).
//!
//! The level is task-local: a future runs at the level of the
//! [`at_level`] scope around it, or at level 0. A task started with
//! `tokio::spawn` does **not** inherit the level of the task that spawned it
//! (task-locals belong to one task): wrap its future in [`inherit_level`] to
//! carry the level over.

use std::future::Future;

use crate::error::{Error, Result};
use crate::options::invalid;

tokio::task_local! {
    static LEVEL: u32;
}

/// The data-source level of the current task: 0 outside any [`at_level`] scope.
pub fn current_level() -> u32 {
    LEVEL.try_with(|level| *level).unwrap_or(0)
}

/// Runs `future` at data-source `level`.
pub async fn at_level<F: Future>(level: u32, future: F) -> F::Output {
    LEVEL.scope(level, future).await
}

/// Wraps `future` so that it runs at the current task's level wherever it is
/// polled, e.g. in a task of its own: `tokio::spawn(inherit_level(work))`.
pub fn inherit_level<F: Future>(future: F) -> impl Future<Output = F::Output> {
    at_level(current_level(), future)
}

/// The level one above the current one.
pub(crate) fn next_level() -> Result<u32> {
    current_level().checked_add(1).ok_or_else(|| -> Error {
        invalid(
            "level",
            "the data-source level is already u32::MAX; isolate fewer nested locks".to_owned(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn levels_nest_and_default_to_zero() {
        assert_eq!(current_level(), 0);
        at_level(1, async {
            assert_eq!(current_level(), 1);
            at_level(2, async { assert_eq!(current_level(), 2) }).await;
            assert_eq!(current_level(), 1);
            let spawned = tokio::spawn(async { current_level() }).await.unwrap();
            assert_eq!(spawned, 0, "a spawned task starts at level 0");
            let carried = tokio::spawn(inherit_level(async { current_level() }))
                .await
                .unwrap();
            assert_eq!(carried, 1);
        })
        .await;
    }
}
