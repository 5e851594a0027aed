//! Fencing tokens protect a store from a holder that paused past its lock.
//!
//! ```text
//! cargo run --example fenced_store                    # in-process node
//! REDLOCK_NODES=redis://..,redis://.. cargo run --example fenced_store
//! ```

#[path = "../shared/engine.rs"]
mod engine;
mod store;

use std::time::Duration;

use redlock::LockOptions;
use store::FencedStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = engine::from_env("fencing").await?;
    let store = FencedStore::default();
    let ttl = LockOptions::default().ttl(Duration::from_millis(500));

    let a = engine.acquire(&["invoice-7"], ttl.clone()).await?;
    println!("A holds the lock with token {}", a.fencing_token());
    store.write("invoice-7", a.fencing_token(), "draft by A")?;
    println!("A wrote; now A pauses (GC, swap, SIGSTOP) for 1 s, past its lock's validity");
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("A's lock lost: {}", a.is_lost());

    let b = engine.acquire(&["invoice-7"], ttl).await?;
    println!("B holds the lock with token {}", b.fencing_token());
    store.write("invoice-7", b.fencing_token(), "final by B")?;
    println!("B wrote");

    match store.write("invoice-7", a.fencing_token(), "late write by A") {
        Ok(()) => println!("A's late write went through: this must not happen"),
        Err(rejected) => println!("A wakes and writes: {rejected}"),
    }
    println!(
        "store holds: {:?}",
        store.read("invoice-7").unwrap_or_default()
    );
    b.release().await?;
    Ok(())
}
