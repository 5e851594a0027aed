//! `lock_isolate` against a real connection pool (SQLite, one connection per
//! level), with the lock on three real redis-server nodes.

#[path = "../examples/level_deadlock/scenario.rs"]
mod scenario;
mod support;

use std::time::Duration;

use redlock::{current_level, inherit_level, IsolateOptions, LevelPools};
use scenario::Flavour;
use sqlx::sqlite::SqlitePool;
use support::{quick, Nodes};

/// A database file in a directory of its own, removed when dropped.
struct TempDb(std::path::PathBuf);

impl TempDb {
    fn new(name: &str) -> TempDb {
        let dir =
            std::env::temp_dir().join(format!("redlock-levels-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDb(dir)
    }

    fn path(&self) -> std::path::PathBuf {
        self.0.join("db.sqlite")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_deadlocks_on_the_pool_and_the_timeout_reports_it() {
    let nodes = Nodes::start(3);
    let engine = nodes.engine("levels", quick()).await;
    let db = TempDb::new("lock");
    let outcome = scenario::run(&engine, &db.path(), Flavour::Lock, Duration::from_secs(2)).await;
    assert!(!outcome.completed, "{:#?}", outcome.log);
    assert!(
        outcome.log.last().unwrap().contains("DEADLOCK"),
        "{:#?}",
        outcome.log
    );
    assert!(
        outcome.rows.is_empty(),
        "neither write happened: {:?}",
        outcome.rows
    );
    assert_eq!(outcome.levels, [0]);
    // The cancelled holder's lock was released: the resource is free again.
    let lock = engine
        .acquire(
            &["report"],
            redlock::LockOptions::default().wait(Duration::from_secs(5)),
        )
        .await
        .expect("released after the cancellation");
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_isolate_completes_with_a_pool_per_level() {
    let nodes = Nodes::start(3);
    let engine = nodes.engine("levels", quick()).await;
    let db = TempDb::new("isolate");
    let outcome = scenario::run(
        &engine,
        &db.path(),
        Flavour::LockIsolate,
        Duration::from_secs(20),
    )
    .await;
    assert!(outcome.completed, "{:#?}", outcome.log);
    assert_eq!(outcome.rows, [("B".to_owned(), 1), ("A".to_owned(), 0)]);
    assert_eq!(outcome.levels, [0, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_lock_isolate_climbs_one_level_each() {
    let nodes = Nodes::start(3);
    let engine = nodes.engine("levels", quick()).await;
    let db = TempDb::new("nested");
    let pools = scenario::pools(&db.path(), Duration::from_secs(10));
    sqlx::query("CREATE TABLE IF NOT EXISTS seen (level INTEGER NOT NULL)")
        .execute(&pools.get())
        .await
        .unwrap();

    let query = |pools: &LevelPools<SqlitePool>| {
        let pool = pools.get();
        async move {
            sqlx::query("INSERT INTO seen VALUES (?)")
                .bind(i64::from(current_level()))
                .execute(&pool)
                .await
                .unwrap();
            current_level()
        }
    };
    let (outer, inner, spawned, carried) = engine
        .lock_isolate("outer", |_| async {
            let outer = query(&pools).await;
            let (inner, spawned, carried) = engine
                .lock_isolate("inner", |_| async {
                    let inner = query(&pools).await;
                    // Task-locals stay with their task: a spawned task starts at level 0...
                    let spawned = tokio::spawn(async { current_level() }).await.unwrap();
                    // ...unless it is given the level explicitly.
                    let carried = tokio::spawn(inherit_level(async { current_level() }))
                        .await
                        .unwrap();
                    (inner, spawned, carried)
                })
                .await
                .unwrap();
            (outer, inner, spawned, carried)
        })
        .await
        .unwrap();
    assert_eq!((outer, inner), (1, 2));
    assert_eq!((spawned, carried), (0, 2));
    assert_eq!(current_level(), 0, "back at level 0 after the locks");
    assert_eq!(pools.levels(), [0, 1, 2]);

    let explicit = engine
        .lock_isolate_with("x", IsolateOptions::default().level(7), |_| async {
            current_level()
        })
        .await
        .unwrap();
    assert_eq!(explicit, 7);
    let levels: Vec<i64> = sqlx::query_scalar("SELECT level FROM seen ORDER BY rowid")
        .fetch_all(&pools.at(0))
        .await
        .unwrap();
    assert_eq!(levels, [1, 2], "each query ran on its level's pool");
}
