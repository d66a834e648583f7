//! The lines benchmarks print, all in one format.

use std::time::Duration;

use crate::process::Memory;

/// CPU model, cores and kernel, for the record.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("machine: {model}, {cores} cores, Linux {}", kernel.trim())
}

/// Events per second.
pub fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// Prints `what`, the rate, and how many in how long.
pub fn report_rate(what: &str, count: usize, elapsed: Duration) {
    println!(
        "{what:<44} {:>9.0} /s  ({count} in {:.2} s)",
        rate(count, elapsed),
        elapsed.as_secs_f64()
    );
}

/// Prints `what` with the p50, p99 and maximum of `samples` in microseconds.
pub fn report_latency(what: &str, samples: &[Duration]) {
    if samples.is_empty() {
        println!("{what:<44} no samples");
        return;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what:<44} p50 {:>7.1} us  p99 {:>7.1} us  max {:>8.1} us  (n = {})",
        micros(at(0.50)),
        micros(at(0.99)),
        micros(at(1.0)),
        sorted.len()
    );
}

/// A duration in microseconds.
pub fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// Prints `what` with a process's resident memory and its peak.
pub fn report_memory(what: &str, memory: Memory) {
    let mib = |kb: u64| kb as f64 / 1024.0;
    println!(
        "{what:<44} VmRSS {:>5.1} MiB ({} kB)  VmHWM {:>5.1} MiB ({} kB)",
        mib(memory.rss),
        memory.rss,
        mib(memory.hwm),
        memory.hwm
    );
}
