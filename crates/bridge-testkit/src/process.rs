//! Processes a test or benchmark started: alive or not, killed, memory,
//! CPU time, the members of a process group.

/// Whether `pid` is alive (a zombie, waiting to be reaped, is not).
pub fn running(pid: u32) -> bool {
    stat_fields(pid).first().is_some_and(|state| state != "Z")
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

/// The fields of `/proc/<pid>/stat` after the command, from the state on
/// (field 3 of proc(5) is index 0); empty if the process is gone.
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Field `number` of `/proc/<pid>/stat` (numbered as in proc(5), from 3),
/// as a number; 0 if the process is gone.
fn stat_number(fields: &[String], number: usize) -> u64 {
    fields
        .get(number - 3)
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of `pid`, from `/proc/<pid>/stat` (in clock
/// ticks of 10 ms).
pub fn cpu_time(pid: u32) -> std::time::Duration {
    let fields = stat_fields(pid);
    // utime and stime are fields 14 and 15.
    let ticks = stat_number(&fields, 14) + stat_number(&fields, 15);
    std::time::Duration::from_millis(ticks * 10)
}

/// The processes of process group `group` (those alive now).
pub fn group_members(group: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        // The process group is field 5.
        .filter(|pid| stat_number(&stat_fields(*pid), 5) == u64::from(group))
        .collect()
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

    #[test]
    fn a_child_in_a_group_of_its_own_is_found_in_it() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let members = group_members(pid);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(members, [pid]);
        assert!(!group_members(std::process::id()).contains(&pid));
    }
}
