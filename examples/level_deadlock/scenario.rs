//! The connection-pool deadlock that `lock_isolate` prevents, on a real
//! SQLite database with one connection per pool.
//!
//! Task B takes the lock, then needs a connection. Task A holds the only
//! connection of its level and waits for the lock. With `lock`, B looks for a
//! connection at A's level: neither can go on. With `lock_isolate`, B runs one
//! level up and uses that level's pool.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redlock::{current_level, LevelPools, Redlock};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Which lock method task B uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// `Redlock::lock`: B stays at A's level.
    Lock,
    /// `Redlock::lock_isolate`: B runs one level up.
    LockIsolate,
}

/// What happened.
#[derive(Debug)]
pub struct Outcome {
    /// Both tasks finished within the patience.
    pub completed: bool,
    /// Timestamped lines describing the run.
    pub log: Vec<String>,
    /// The levels that got a pool.
    pub levels: Vec<u32>,
    /// `(task, level)` of every row written.
    pub rows: Vec<(String, i64)>,
}

/// A database of its own per level, one connection each.
pub fn pools(db: &Path, patience: Duration) -> Arc<LevelPools<SqlitePool>> {
    let options = SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    Arc::new(LevelPools::new(move |_level| {
        SqlitePoolOptions::new()
            .max_connections(1)
            // Longer than the patience: the deadlock is detected by the caller's timeout.
            .acquire_timeout(patience * 4)
            .connect_lazy_with(options.clone())
    }))
}

/// Runs tasks A and B against `db`, giving up after `patience`.
pub async fn run(engine: &Redlock, db: &Path, flavour: Flavour, patience: Duration) -> Outcome {
    let pools = pools(db, patience);
    let started = Instant::now();
    let log = Arc::new(Mutex::new(Vec::new()));
    let say = {
        let log = log.clone();
        move |line: String| {
            let line = format!(
                "{:>7.1} ms  {line}",
                started.elapsed().as_secs_f64() * 1000.0
            );
            log.lock().unwrap().push(line);
        }
    };
    sqlx::query("CREATE TABLE IF NOT EXISTS writes (task TEXT NOT NULL, level INTEGER NOT NULL)")
        .execute(&pools.at(0))
        .await
        .expect("create the table");
    sqlx::query("DELETE FROM writes")
        .execute(&pools.at(0))
        .await
        .expect("empty the table");

    let (b_locked_tx, b_locked) = oneshot::channel::<()>();
    let (a_connected_tx, a_connected) = oneshot::channel::<()>();

    let task_b = async {
        let body = |_ctx| async {
            say(format!("B holds the lock, at level {}", current_level()));
            b_locked_tx.send(()).unwrap();
            a_connected.await.unwrap();
            say(format!(
                "B needs a connection from the level-{} pool",
                current_level()
            ));
            let mut conn = pools.get().acquire().await.expect("a connection for B");
            sqlx::query("INSERT INTO writes VALUES ('B', ?)")
                .bind(i64::from(current_level()))
                .execute(&mut *conn)
                .await
                .expect("B's write");
            say(format!(
                "B wrote its row at level {}, releases the lock",
                current_level()
            ));
        };
        match flavour {
            Flavour::Lock => engine.lock("report", body).await,
            Flavour::LockIsolate => engine.lock_isolate("report", body).await,
        }
        .expect("B's lock");
    };
    let task_a = async {
        b_locked.await.unwrap();
        let mut conn = pools.get().acquire().await.expect("a connection for A");
        say(format!(
            "A holds the only level-{} connection and waits for the lock",
            current_level()
        ));
        a_connected_tx.send(()).unwrap();
        engine
            .lock("report", |_ctx| async {
                sqlx::query("INSERT INTO writes VALUES ('A', ?)")
                    .bind(i64::from(current_level()))
                    .execute(&mut *conn)
                    .await
                    .expect("A's write");
                say("A got the lock and wrote its row".to_owned());
            })
            .await
            .expect("A's lock");
    };

    let completed = tokio::time::timeout(patience, async { tokio::join!(task_a, task_b) })
        .await
        .is_ok();
    if !completed {
        say(format!(
            "DEADLOCK: nothing moved for {patience:?}. A holds the only connection and waits for the lock; \
             B holds the lock and waits for a connection. Both were cancelled."
        ));
    }
    let rows = sqlx::query_as::<_, (String, i64)>("SELECT task, level FROM writes ORDER BY rowid")
        .fetch_all(&pools.at(0))
        .await
        .expect("read the rows");
    let levels = pools.levels();
    for level in &levels {
        pools.at(*level).close().await;
    }
    let log = log.lock().unwrap().clone();
    Outcome {
        completed,
        log,
        levels,
        rows,
    }
}
