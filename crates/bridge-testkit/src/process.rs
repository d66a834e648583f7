//! Processes a test or benchmark started: alive or not, killed, memory,
//! CPU time.

/// Whether `pid` is alive (a zombie, waiting to be reaped, is not).
pub fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Kills `pid` with SIGKILL if it is still running (through the `kill`
/// command: no `unsafe` here).
pub fn kill(pid: u32) {
    if running(pid) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
}

/// Resident memory of a process, in kB.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss: u64,
    /// `VmHWM`: the peak of `VmRSS`.
    pub hwm: u64,
}

/// The memory of `pid`, or `None` if it is gone.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(Memory {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}

/// User plus system CPU time of `pid`, from `/proc/<pid>/stat` (in clock
/// ticks of 10 ms).
pub fn cpu_time(pid: u32) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let ticks = |index: usize| {
        fields
            .get(index - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    std::time::Duration::from_millis((ticks(14) + ticks(15)) * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_running_and_has_memory() {
        let me = std::process::id();
        assert!(running(me));
        let mine = memory(me).unwrap();
        assert!(mine.rss > 0 && mine.hwm >= mine.rss);
        assert!(!running(u32::MAX));
        assert!(memory(u32::MAX).is_none());
    }
}
