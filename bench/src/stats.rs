//! Latency samples and the figures printed from them.

use std::time::Duration;

/// Samples of one scenario run.
#[derive(Default)]
pub struct Samples {
    pub latencies: Vec<Duration>,
    pub failures: u64,
    pub elapsed: Duration,
    /// CPU time of the nodes (summed) and of the client process.
    pub cpu: (Duration, Duration),
}

impl Samples {
    /// Adds the samples of concurrent tasks (elapsed is set once, for all).
    pub fn merge(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.failures += other.failures;
    }

    /// Adds the samples of a later run of the same scenario.
    pub fn append(&mut self, other: Samples) {
        self.elapsed += other.elapsed;
        self.cpu.0 += other.cpu.0;
        self.cpu.1 += other.cpu.1;
        self.merge(other);
    }

    pub fn ops_per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&mut self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index]
    }
}

/// One printed row.
pub struct Row {
    pub scenario: &'static str,
    pub system: &'static str,
    pub nodes: usize,
    pub ops: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub failures: u64,
    /// CPU time per operation: the nodes' (summed) and the client's.
    pub cpu_per_op: (Duration, Duration),
}

impl Row {
    pub fn from(scenario: &'static str, system: &'static str, nodes: usize, mut s: Samples) -> Row {
        Row {
            scenario,
            system,
            nodes,
            ops: s.ops_per_sec(),
            p50: s.percentile(0.50),
            p99: s.percentile(0.99),
            failures: s.failures,
            cpu_per_op: {
                let ops = s.latencies.len().max(1) as u32;
                (s.cpu.0 / ops, s.cpu.1 / ops)
            },
        }
    }

    pub fn print_header() {
        println!(
            "| N | scenario | system | ops/s | p50 | p99 | failures | CPU/op: nodes, client |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    }

    pub fn print(&self) {
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {}, {} |",
            self.nodes,
            self.scenario,
            self.system,
            self.ops,
            micros(self.p50),
            micros(self.p99),
            self.failures,
            micros(self.cpu_per_op.0),
            micros(self.cpu_per_op.1),
        );
    }
}

pub fn micros(d: Duration) -> String {
    if d >= Duration::from_millis(10) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{} µs", d.as_micros())
    }
}
