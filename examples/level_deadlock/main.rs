//! `lock` versus `lock_isolate` with a connection pool of one connection per
//! data-source level, on a real SQLite database file.
//!
//! ```text
//! cargo run --example level_deadlock                  # in-process lock node
//! REDLOCK_NODES=redis://..,redis://.. cargo run --example level_deadlock
//! ```

#[path = "../shared/engine.rs"]
mod engine;
mod scenario;

use std::time::Duration;

use scenario::Flavour;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = engine::from_env("levels").await?;
    let dir = std::env::temp_dir().join(format!("redlock-levels-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    for flavour in [Flavour::Lock, Flavour::LockIsolate] {
        let db = dir.join(format!("{flavour:?}.db"));
        println!(
            "== B uses {}",
            if flavour == Flavour::Lock {
                "lock"
            } else {
                "lock_isolate"
            }
        );
        let outcome = scenario::run(&engine, &db, flavour, Duration::from_secs(2)).await;
        for line in &outcome.log {
            println!("  {line}");
        }
        println!("  pools created for levels {:?}", outcome.levels);
        println!("  rows (task, level): {:?}", outcome.rows);
        println!("  completed: {}\n", outcome.completed);
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
