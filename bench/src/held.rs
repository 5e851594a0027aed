//! held-many: thousands of locks held at once, kept alive by automatic
//! extension; measures extension traffic, memory and lost locks.

use std::time::Duration;

use fred::prelude::*;
use fred::types::InfoKind;
use redlock::{Error, LockOptions, Redlock};
use tokio::sync::{mpsc, watch};

/// The TTL of the held locks: short, so that extension runs many times.
const HELD_TTL: Duration = Duration::from_secs(4);

pub async fn held_many(n: usize, count: usize, duration: Duration) {
    let nodes = crate::support::Nodes::start(n);
    let engine = Redlock::builder()
        .app("bench")
        .nodes(nodes.urls())
        .defaults(LockOptions::default().ttl(HELD_TTL))
        .build()
        .await
        .unwrap();
    let rss_before = rss_mb();
    let (acquired_tx, mut acquired) = mpsc::unbounded_channel();
    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let (engine, acquired_tx, mut stop) = (engine.clone(), acquired_tx.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            engine
                .lock(&format!("held-{i}"), |ctx| async move {
                    let _ = acquired_tx.send(());
                    let _ = stop.wait_for(|s| *s).await;
                    ctx.is_lost()
                })
                .await
        }));
    }
    for _ in 0..count {
        acquired.recv().await.unwrap();
    }
    let before = script_calls(&nodes).await;
    tokio::time::sleep(duration).await;
    let after = script_calls(&nodes).await;
    let rss_during = rss_mb();
    let rss_peak = status_mb("VmHWM:");
    stop_tx.send(true).unwrap();
    let mut lost = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(false) => {}
            Ok(true) | Err(Error::LockLost { .. }) => lost += 1,
            Err(e) => panic!("held-many: {e}"),
        }
    }
    let secs = duration.as_secs_f64();
    let per_node: Vec<String> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| format!("{:.1}", (a - b) as f64 / secs))
        .collect();
    println!(
        "held-many N={n}: {count} locks, TTL {HELD_TTL:?}, held {duration:?}: script calls/s per node [{}] \
         (unbatched would be {:.0}/s), RSS {rss_before:.1} MB -> {rss_during:.1} MB \
         (process peak {rss_peak:.1} MB), lost locks: {lost}",
        per_node.join(", "),
        count as f64 / (HELD_TTL.as_secs_f64() / 2.0),
    );
}

/// EVALSHA calls served so far by each node.
async fn script_calls(nodes: &crate::support::Nodes) -> Vec<u64> {
    let mut calls = Vec::new();
    for server in &nodes.servers {
        let client = server.client().await;
        let info: String = client.info(Some(InfoKind::CommandStats)).await.unwrap();
        let count = info
            .lines()
            .find(|l| l.starts_with("cmdstat_evalsha:"))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|l| l.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        calls.push(count);
        let _ = client.quit().await;
    }
    calls
}

/// The resident set size of this process, in MB.
fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

/// A size field of `/proc/self/status` (e.g. `VmHWM:`, the peak RSS), in MB.
fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
