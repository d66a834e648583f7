//! Processes a test or benchmark started: alive or not, killed, memory.

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
