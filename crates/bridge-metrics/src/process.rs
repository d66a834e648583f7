//! The `process_*` metrics every Prometheus client exposes, read from
//! `/proc/self` at each scrape: CPU seconds, resident and virtual memory,
//! open file descriptors, start time. Where `/proc` cannot be read, the
//! metric is left out of that scrape.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Clock ticks per second of `/proc/<pid>/stat`'s times: `USER_HZ`, 100 on
/// every Linux architecture (as Prometheus' own `procfs` assumes).
const TICKS_PER_SECOND: f64 = 100.0;

/// The collector of the `process_*` metrics.
#[derive(Debug)]
pub struct ProcessCollector {
    /// When the process started, in seconds since the Unix epoch (taken
    /// when the collector was made, at start-up).
    started: f64,
}

impl Default for ProcessCollector {
    fn default() -> ProcessCollector {
        ProcessCollector::new()
    }
}

impl ProcessCollector {
    /// The collector; the process's start is taken to be now.
    pub fn new() -> ProcessCollector {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_secs_f64())
            .unwrap_or_default();
        ProcessCollector { started }
    }
}

/// What `/proc/self` says.
#[derive(Debug, Default, PartialEq)]
struct Sample {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    virtual_bytes: Option<i64>,
    open_fds: Option<i64>,
}

impl Sample {
    fn read() -> Sample {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| i64::try_from(entries.count()).unwrap_or(i64::MAX));
        Sample {
            open_fds,
            ..Sample::parse(&stat, &status)
        }
    }

    /// The CPU time from `stat` (fields 14 and 15, counted after the
    /// command name, which may hold spaces), the memory from `status`
    /// (`VmRSS`, `VmSize`, in kB).
    fn parse(stat: &str, status: &str) -> Sample {
        let cpu_seconds = stat.rsplit_once(')').and_then(|(_, rest)| {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |at: usize| fields.get(at)?.parse::<u64>().ok();
            // After the name: state is field 3, utime 14, stime 15.
            Some((ticks(11)? + ticks(12)?) as f64 / TICKS_PER_SECOND)
        });
        let kilobytes = |name: &str| {
            status.lines().find_map(|line| {
                let value = line.strip_prefix(name)?.strip_prefix(':')?;
                let kb: i64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
                kb.checked_mul(1024)
            })
        };
        Sample {
            cpu_seconds,
            resident_bytes: kilobytes("VmRSS"),
            virtual_bytes: kilobytes("VmSize"),
            open_fds: None,
        }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = Sample::read();
        if let Some(seconds) = sample.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            let metric = encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent",
                Some(&Unit::Seconds),
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let gauges = [
            (
                "process_resident_memory",
                "Resident memory size",
                Some(Unit::Bytes),
                sample.resident_bytes,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size",
                Some(Unit::Bytes),
                sample.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                None,
                sample.open_fds,
            ),
        ];
        for (name, help, unit, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                let metric =
                    encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?;
                gauge.encode(metric)?;
            }
        }
        let started = ConstGauge::new(self.started);
        let metric = encoder.encode_descriptor(
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Some(&Unit::Seconds),
            started.metric_type(),
        )?;
        started.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_are_read_past_a_name_with_spaces() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 1 2 3";
        let status = "Name:\tx\nVmSize:\t  2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(
            Sample::parse(stat, status),
            Sample {
                cpu_seconds: Some(3.0),
                resident_bytes: Some(1024 * 1024),
                virtual_bytes: Some(2048 * 1024),
                open_fds: None,
            }
        );
        assert_eq!(Sample::parse("", ""), Sample::default());
    }
}
