//! The redlock benchmark: starts its own redis-server nodes and measures, for
//! N = 1, 3 and 5 nodes, redlock against the raw-command floor and the rslock
//! peer, in the same run.
//!
//! ```text
//! cargo run --release -p redlock-bench                 # full run (a few minutes)
//! cargo run --release -p redlock-bench -- --quick      # 1 s per scenario, N = 3 only
//! cargo run --release -p redlock-bench -- --seconds 5 --nodes 1,3,5 --held 10000 --held-seconds 30
//! cargo run --release -p redlock-bench -- --current-thread   # on tokio's current-thread runtime
//! ```
//!
//! For instruction counts (client side only: valgrind does not follow the
//! redis-server children), run one system for a fixed number of operations,
//! twice, and divide the difference by the difference in operations:
//!
//! ```text
//! valgrind --tool=callgrind target/release/redlock-bench --only uncontended-serial --nodes 3 --system redlock --ops 2000
//! ```

#[path = "../../tests/support/mod.rs"]
mod support;

mod held;
mod stats;
mod systems;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redlock::{LockOptions, Redlock};
use stats::{Row, Samples};
use systems::{Flavour, Floor, System};
use tokio::time::Instant;

const LOCK_TTL: Duration = Duration::from_secs(10);

/// The uncontended scenarios run in this many rounds per system.
const ROUNDS: u32 = 20;

struct Args {
    seconds: f64,
    nodes: Vec<usize>,
    held: usize,
    held_seconds: u64,
    peer: bool,
    /// Run only this scenario (for profiling): uncontended-serial, uncontended-parallel, contended or held-many.
    only: Option<String>,
    /// Run only the system of this name, as printed (for profiling).
    system: Option<String>,
    /// Run each uncontended task for this many operations instead of `seconds`.
    ops: Option<u64>,
    /// Run on tokio's current-thread runtime instead of the 2-worker multi-thread one.
    current_thread: bool,
}

const USAGE: &str = "usage: redlock-bench [--quick] [--seconds S] [--nodes 1,3,5] [--held N] \
[--held-seconds S] [--no-peer] [--only SCENARIO] [--system NAME] [--ops N] [--current-thread]
  SCENARIO: uncontended-serial, uncontended-parallel, contended or held-many
  NAME: a system as the table prints it, e.g. redlock";

const SCENARIOS: [&str; 4] = [
    "uncontended-serial",
    "uncontended-parallel",
    "contended",
    "held-many",
];

/// The command line, or what is wrong with it.
fn args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 3.0,
        nodes: vec![1, 3, 5],
        held: 10_000,
        held_seconds: 30,
        peer: true,
        only: None,
        system: None,
        ops: None,
        current_thread: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |text: String| -> Result<u64, String> {
            text.parse()
                .map_err(|_| format!("{flag} takes a whole number, not {text:?}"))
        };
        match flag.as_str() {
            "--quick" => {
                args.seconds = 1.0;
                args.nodes = vec![3];
                args.held = 2_000;
                args.held_seconds = 10;
            }
            "--seconds" => {
                let text = value()?;
                args.seconds = text
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0 && s.is_finite())
                    .ok_or(format!("--seconds takes a positive number, not {text:?}"))?;
            }
            "--nodes" => {
                args.nodes = value()?
                    .split(',')
                    .map(|n| match n.parse() {
                        Ok(n) if n > 0 => Ok(n),
                        _ => Err(format!(
                            "--nodes takes node counts such as 1,3,5, not {n:?}"
                        )),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--held" => args.held = number(value()?)? as usize,
            "--held-seconds" => args.held_seconds = number(value()?)?,
            "--no-peer" => args.peer = false,
            "--only" => {
                let scenario = value()?;
                if !SCENARIOS.contains(&scenario.as_str()) {
                    return Err(format!("--only {scenario:?}: no such scenario"));
                }
                args.only = Some(scenario);
            }
            "--system" => args.system = Some(value()?),
            "--ops" => args.ops = Some(number(value()?)?),
            "--current-thread" => args.current_thread = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = args().unwrap_or_else(|problem| {
        eprintln!("{problem}\n{USAGE}");
        std::process::exit(2);
    });
    let runtime = if args.current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    }
    .unwrap();
    // On a worker thread, as a server's request handlers run (a `block_on`
    // future runs on the calling thread, one hop away from every worker).
    runtime
        .block_on(runtime.spawn(run(args)))
        .expect("the benchmark does not panic");
}

async fn run(args: Args) {
    let budget = match args.ops {
        Some(ops) => Budget::Ops(ops),
        None => Budget::Time(Duration::from_secs_f64(args.seconds)),
    };
    let duration = Duration::from_secs_f64(args.seconds);
    println!(
        "machine: {} cores; tokio {}; {} s per scenario\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        if args.current_thread {
            "current-thread runtime"
        } else {
            "multi-thread runtime, 2 workers"
        },
        args.seconds
    );
    let mut rows = Vec::new();
    for &n in &args.nodes {
        let nodes = support::Nodes::start(n);
        let urls = nodes.urls();
        let mut systems = vec![
            System::Floor(Floor::connect(&urls, false).await),
            System::Floor(Floor::connect(&urls, true).await),
        ];
        let engine = Redlock::builder()
            .app("bench")
            .nodes(urls.clone())
            .build()
            .await
            .unwrap();
        let options = LockOptions::default().ttl(LOCK_TTL);
        systems.push(System::Ours(
            engine.clone(),
            options.clone(),
            Flavour::Guard,
        ));
        if args.peer {
            systems.push(System::Peer(rslock::LockManager::new(urls.clone())));
        }
        systems.push(System::Ours(
            engine.clone(),
            options.clone().fencing(false),
            Flavour::Unfenced,
        ));
        systems.push(System::Ours(engine, options.clone(), Flavour::Scoped));
        systems.push(System::Ours(
            gated_engine(&urls).await,
            options,
            Flavour::Gated,
        ));
        let cpu = CpuClock::new(&nodes);
        let wanted = |scenario: &str| args.only.as_deref().is_none_or(|only| scenario == only);
        let named: Vec<(&'static str, Arc<System>)> = systems
            .into_iter()
            .map(|s| (s.name(), Arc::new(s)))
            .filter(|(name, _)| args.system.as_deref().is_none_or(|s| s == *name))
            .collect();
        for (scenario, tasks) in [("uncontended-serial", 1), ("uncontended-parallel", 64)] {
            if !wanted(scenario) {
                continue;
            }
            // The systems take turns in short rounds, each round starting
            // with the next system, so that a slow spell of the machine hits
            // all of them alike and the ratios hold.
            let (rounds, slice) = match budget {
                Budget::Time(time) => (ROUNDS, Budget::Time(time / ROUNDS)),
                Budget::Ops(_) => (1, budget),
            };
            let mut totals: Vec<Samples> = named.iter().map(|_| Samples::default()).collect();
            for round in 0..rounds as usize {
                for turn in 0..named.len() {
                    let i = (round + turn) % named.len();
                    let system = named[i].1.clone();
                    let samples = cpu.measure(uncontended(system, tasks, slice)).await;
                    totals[i].append(samples);
                }
            }
            for ((name, _), total) in named.iter().zip(totals) {
                rows.push(Row::from(scenario, name, n, total));
            }
        }
        for (name, system) in &named {
            let pollable = matches!(**system, System::Peer(_)) || *name == "redlock";
            if pollable && wanted("contended") {
                let s = cpu.measure(contended(system.clone(), 8, duration)).await;
                rows.push(Row::from("contended: handoffs/s, wait", name, n, s));
            }
        }
    }
    Row::print_header();
    for row in &rows {
        row.print();
    }
    print_ratios(&rows);

    println!();
    if args.only.as_deref().is_none_or(|only| only == "held-many") {
        for &n in &args.nodes {
            held::held_many(n, args.held, Duration::from_secs(args.held_seconds)).await;
        }
    }
}

/// CPU time of the nodes, from `/proc/<pid>/task/*/schedstat` (on-CPU
/// nanoseconds, user and kernel, every thread), and of this process: what
/// one operation costs the nodes and the client, apart from the time it waits.
struct CpuClock {
    servers: Vec<u32>,
}

impl CpuClock {
    fn new(nodes: &support::Nodes) -> CpuClock {
        CpuClock {
            servers: nodes.servers.iter().filter_map(|s| s.pid()).collect(),
        }
    }

    /// Runs a scenario and records in its samples the CPU time it cost.
    async fn measure(&self, scenario: impl std::future::Future<Output = Samples>) -> Samples {
        let before = self.now();
        let mut samples = scenario.await;
        let after = self.now();
        samples.cpu = (
            after.0.saturating_sub(before.0),
            after.1.saturating_sub(before.1),
        );
        samples
    }

    /// (nodes' CPU time summed, this process's CPU time) so far.
    fn now(&self) -> (Duration, Duration) {
        let servers = self
            .servers
            .iter()
            .map(|pid| cpu_time(&pid.to_string()))
            .sum();
        (servers, own_cpu_time())
    }
}

/// This process's CPU time, including threads that have ended (the
/// blocking pool's come and go).
fn own_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to write.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn cpu_time(pid: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// How long an uncontended scenario runs.
#[derive(Clone, Copy)]
enum Budget {
    Time(Duration),
    /// This many operations per task (for instruction counts).
    Ops(u64),
}

/// `tasks` tasks each acquire and release fresh resources in a loop.
async fn uncontended(system: Arc<System>, tasks: usize, budget: Budget) -> Samples {
    let (duration, ops) = match budget {
        Budget::Time(duration) => (duration, u64::MAX),
        Budget::Ops(ops) => (Duration::from_secs(3600), ops),
    };
    drive(tasks, duration, |task, stop| {
        let system = system.clone();
        async move {
            let mut samples = Samples::default();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < ops {
                i += 1;
                let resource = format!("u-{task}-{i}");
                let t0 = Instant::now();
                match system.cycle(&resource, LOCK_TTL).await {
                    Ok(()) => samples.latencies.push(t0.elapsed()),
                    Err(_) => samples.failures += 1,
                }
            }
            samples
        }
    })
    .await
}

/// `tasks` tasks contend on one resource, each holding it about 1 ms. The
/// latency recorded is the wait for the lock; the rate counts handoffs, i.e.
/// acquisitions by another task than the previous holder (a task that
/// re-takes the lock it just released hands nothing over).
async fn contended(system: Arc<System>, tasks: usize, duration: Duration) -> Samples {
    static ROUND: AtomicU64 = AtomicU64::new(0);
    let resource: Arc<str> = format!("c-{}", ROUND.fetch_add(1, Ordering::Relaxed)).into();
    let last_holder = Arc::new(AtomicU64::new(u64::MAX));
    drive(tasks, duration, |task, stop| {
        let (system, resource, last_holder) =
            (system.clone(), resource.clone(), last_holder.clone());
        async move {
            let mut samples = Samples::default();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                match system.acquire(&resource, LOCK_TTL).await {
                    Ok(held) => {
                        if last_holder.swap(task as u64, Ordering::Relaxed) != task as u64 {
                            samples.latencies.push(t0.elapsed());
                        }
                        hold(HOLD).await;
                        system.release(held).await;
                    }
                    Err(_) => samples.failures += 1,
                }
            }
            samples
        }
    })
    .await
}

/// How long a task of the contended scenario holds the lock.
const HOLD: Duration = Duration::from_millis(1);

/// Holds for `time`, as a function working under the lock would. Not with
/// tokio's `sleep`: its timer ticks in whole milliseconds, so a 1 ms sleep
/// lasts 2.1 ms here (rounded up to the next tick, then the driver's
/// millisecond wait). A thread's sleep lasts 1.1 ms and takes no CPU.
async fn hold(time: Duration) {
    tokio::task::spawn_blocking(move || std::thread::sleep(time))
        .await
        .expect("a sleeping thread does not panic");
}

/// Runs `tasks` copies of `body` (given its task number and the stop flag),
/// each a task of its own as a server's requests are, until `duration` has
/// passed, and merges their samples.
async fn drive<F, Fut>(tasks: usize, duration: Duration, body: F) -> Samples
where
    F: Fn(usize, Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = Samples> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let runs = (0..tasks).map(|task| {
        let run = tokio::spawn(body(task, stop.clone()));
        async move { run.await.expect("a benchmark task does not panic") }
    });
    let mut runs = std::pin::pin!(futures::future::join_all(runs));
    let all = tokio::select! {
        all = &mut runs => all,
        () = tokio::time::sleep(duration) => {
            stop.store(true, Ordering::Relaxed);
            runs.await
        }
    };
    let mut total = Samples::default();
    for s in all {
        total.merge(s);
    }
    total.elapsed = started.elapsed();
    total
}

/// An engine with a rejoin delay, on nodes that waited it out long ago:
/// what the gate costs each lock once the nodes vote.
async fn gated_engine(urls: &[String]) -> Redlock {
    use fred::prelude::*;
    for url in urls {
        let client = Client::new(Config::from_url(url).unwrap(), None, None, None);
        client.init().await.unwrap();
        let _: () = client
            .set("redlock_{bench}::rejoin", "ready", None, None, false)
            .await
            .unwrap();
        client.quit().await.unwrap();
    }
    Redlock::builder()
        .app("bench")
        .nodes(urls.to_vec())
        .rejoin_delay(Duration::from_secs(30))
        .build()
        .await
        .unwrap()
}

fn print_ratios(rows: &[Row]) {
    println!("\nratios (same run):");
    let find = |n: usize, scenario: &str, system: &str| {
        rows.iter()
            .find(|r| r.nodes == n && r.scenario == scenario && r.system.starts_with(system))
    };
    let mut ns: Vec<usize> = rows.iter().map(|r| r.nodes).collect();
    ns.dedup();
    for n in ns {
        for scenario in ["uncontended-serial", "uncontended-parallel"] {
            for (ours, base, label) in [
                ("redlock", "floor", "redlock/floor"),
                (
                    "redlock",
                    "floor, script",
                    "redlock/(floor with a script acquire)",
                ),
                ("redlock, lock()", "floor", "redlock lock()/floor"),
                ("redlock, fencing off", "floor", "redlock fencing off/floor"),
                ("redlock, rejoin gate", "floor", "redlock rejoin gate/floor"),
            ] {
                if let (Some(ours), Some(base)) = (find(n, scenario, ours), find(n, scenario, base))
                {
                    println!(
                        "  N={n} {scenario}: {label} throughput {:.2}, p50 latency {:.2}, p99 {:.2}",
                        ours.ops / base.ops,
                        ours.p50.as_secs_f64() / base.p50.as_secs_f64(),
                        ours.p99.as_secs_f64() / base.p99.as_secs_f64(),
                    );
                }
            }
            if let (Some(ours), Some(peer)) =
                (find(n, scenario, "redlock"), find(n, scenario, "rslock"))
            {
                println!(
                    "  N={n} {scenario}: redlock/rslock throughput {:.2}",
                    ours.ops / peer.ops
                );
            }
        }
        if let (Some(ours), Some(peer)) = (
            find(n, "contended: handoffs/s, wait", "redlock"),
            find(n, "contended: handoffs/s, wait", "rslock"),
        ) {
            println!(
                "  N={n} contended: redlock/rslock handoffs/s {:.1}, p50 wait {:.3}",
                ours.ops / peer.ops,
                ours.p50.as_secs_f64() / peer.p50.as_secs_f64()
            );
        }
    }
}
