//! Crash tests: the real binaries killed with `kill -9` (SIGKILL) at random
//! moments, a bounded number of times, then restarted; afterwards, what the
//! store promised is checked.
//!
//! * `writers`: four clients, each with its own `bridge-mcp`, sending keyed
//!   messages in a loop; a killer kills a random server at random moments,
//!   and each client now and then kills its own a moment after a request
//!   (so that some die between the commit and the answer). A client whose
//!   server died starts a new one and retries with the same idempotency
//!   key until acknowledged. Every acknowledged send is stored exactly once,
//!   under the id the client got, and nothing else is stored.
//! * `consumers`: a client reading with `check_messages` (no `ack`: its
//!   server confirms on the next call) while 2,500-character messages
//!   arrive; its server killed before, during (an answer read in part, far
//!   larger than a pipe's buffer) and after answers are written. Every
//!   message is received; unmarked receipts are unique and in order; every
//!   later receipt of a message is marked `redelivered`.
//! * `fs_watcher`: `fs-watcher --state-file` (JSON lines, and with `--exec`)
//!   killed while messages arrive, and restarted. In its lines and in the
//!   commands it ran: every message, unmarked reports unique and in order,
//!   repeated ones marked.
//! * `reassignment`: `watchdog-monitor` and `reassign-tasks` (one, or both
//!   at once) killed while they move 150 tasks off the silent workers of a
//!   team, restarted until nothing is left to move; a round per team, four
//!   teams. Each task ends on exactly one healthy worker, with one open
//!   assignment, and its history (assignments, messages, audit rows) agrees
//!   with it.
//!
//! After each scenario the database passes SQLite's `integrity_check`, and
//! the audit chain verifies (`Store::verify_audit` and `bridgectl audit
//! verify`).
//!
//! The moments (and the other choices) come from a small PRNG seeded from
//! the clock. Each test prints its seed; `BRIDGE_CRASH_SEED=<seed>` replays
//! the same choices (the processes' own timing still varies, so a replay
//! is likely, not certain, to hit the same point). The kills are bounded
//! (the constants at the top of each module): the binary takes about 15 s
//! on a 2-core machine.
//!
//! `fs-watcher` and the orchestrator's binaries run in a process group of
//! their own, killed whole, as systemd kills a unit's control group: a
//! command of `--exec` does not outlive its watcher and write after the
//! next one started.

mod consumers;
mod fs_watcher;
mod reassignment;
mod server;
mod writers;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge_core::Store;
use bridge_tests::{TempDb, bin};

/// A small PRNG (SplitMix64): enough to pick moments, and no dependency.
pub struct Rng(u64);

impl Rng {
    /// The generator of one scenario: seeded from `BRIDGE_CRASH_SEED` if
    /// set, else from the clock. Prints the seed.
    pub fn for_scenario(scenario: &str) -> (Rng, u64) {
        let seed = match std::env::var("BRIDGE_CRASH_SEED") {
            Ok(text) => text
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("BRIDGE_CRASH_SEED is not a number: {text}")),
            Err(_) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("the clock is after 1970");
                // The low bits of the nanoseconds vary the most.
                (now.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
            }
        };
        eprintln!("crash scenario {scenario}: seed {seed} (replay with BRIDGE_CRASH_SEED={seed})");
        (Rng(seed), seed)
    }

    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low < high);
        low + self.bits() % (high - low)
    }

    /// An index below `n`.
    pub fn index(&mut self, n: usize) -> usize {
        self.range(0, n as u64) as usize
    }

    /// A duration of `low..high` milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(self.range(low, high))
    }

    /// A generator of its own, for a task running beside this one.
    pub fn fork(&mut self) -> Rng {
        Rng(self.bits())
    }
}

/// What a scenario must leave behind: a database that SQLite finds intact
/// (PostgreSQL's integrity is the server's) and an audit chain that
/// verifies, through the library and `bridgectl`.
pub async fn assert_sound(db: &TempDb, store: &Store, seed: u64) {
    if !db.is_postgres() {
        let mut raw = db.raw().await;
        let problems: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&mut raw)
            .await
            .expect("run integrity_check");
        assert_eq!(problems, ["ok"], "integrity_check (seed {seed})");
    }
    let report = store.verify_audit().await.expect("verify the audit trail");
    assert!(
        report.is_intact(),
        "the audit chain is broken (seed {seed}): {report:?}"
    );
    let (code, stdout, stderr) =
        bridge_tests::daemon::run("bridgectl", &db.path, &["audit", "verify"], &[]);
    assert_eq!(
        code,
        Some(0),
        "bridgectl audit verify (seed {seed}):\n{stdout}{stderr}"
    );
}

/// What a process printed on stdout: its complete lines, and a last line
/// cut short (no newline) if it was killed in the middle of one.
#[derive(Default)]
pub struct Output {
    pub lines: Vec<String>,
    pub torn: Option<String>,
}

/// One of our daemons in a process group of its own, so that `kill -9`
/// reaches it and whatever it started (as systemd kills a unit's control
/// group). Its stdout lines are gathered as they come; it is killed if
/// still running when dropped.
pub struct Group {
    child: Child,
    stdout: Arc<Mutex<Output>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
}

impl Group {
    /// Starts the workspace binary `name` with `args` on `database`, with
    /// `env` added (no inherited `BRIDGE_TOKEN` or `RUST_LOG`).
    pub fn start(name: &str, database: &Path, args: &[&str], env: &[(&str, &str)]) -> Group {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(bin::path(name));
        command
            .args(args)
            .env("BRIDGE_DB", database)
            .env_remove("BRIDGE_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start the daemon");
        let stdout = Arc::new(Mutex::new(Output::default()));
        let pipe = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&stdout);
        let reader = std::thread::spawn(move || {
            let mut pipe = BufReader::new(pipe);
            loop {
                let mut line = Vec::new();
                match pipe.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let complete = line.last() == Some(&b'\n');
                let text = String::from_utf8_lossy(&line)
                    .trim_end_matches('\n')
                    .to_owned();
                let mut output = sink.lock().unwrap();
                if complete {
                    output.lines.push(text);
                } else {
                    output.torn = Some(text);
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(read) = pipe.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        });
        Group {
            child,
            stdout,
            reader: Some(reader),
            stderr,
        }
    }

    /// The lines printed so far.
    pub fn printed(&self) -> usize {
        self.stdout.lock().unwrap().lines.len()
    }

    /// Everything on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether it has exited by itself (and its status, then).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("check the daemon")
    }

    /// `kill -9` to the whole group, unless the daemon has exited already;
    /// waits for it, then returns everything it printed. Also says whether
    /// the kill found it running.
    pub fn kill9(mut self) -> (Output, bool) {
        let killed = self.exited().is_none();
        if killed {
            // The leader is not reaped yet, so the group id is still ours.
            signal_group(self.child.id(), "KILL");
            self.child.wait().expect("wait for the daemon");
        }
        (self.finish(), killed)
    }

    /// SIGTERM to the daemon; waits up to `timeout` for its exit.
    pub fn terminate(mut self, timeout: Duration) -> (Output, ExitStatus) {
        if self.exited().is_none() {
            let status = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -TERM failed");
        }
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.exited() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop on SIGTERM:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        (self.finish(), status)
    }

    /// Everything it printed, once its stdout is closed.
    fn finish(&mut self) -> Output {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the stdout reader");
        }
        std::mem::take(&mut *self.stdout.lock().unwrap())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal_group(self.child.id(), "KILL");
            let _ = self.child.wait();
        }
    }
}

/// Sends `signal` to the process group `group` (through the `kill`
/// command: no `unsafe` here).
fn signal_group(group: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{group}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Checks a sequence of reports of message ids, in the order they were
/// made, each marked as a redelivery or not, against the ids `sent`:
/// every id reported at least once and none that was not sent; unmarked
/// reports unique and in increasing order; every report of an id after
/// its first marked. `what` names the sequence in failures.
pub fn assert_at_least_once(what: &str, reports: &[(i64, bool)], sent: &[i64], seed: u64) {
    use std::collections::BTreeMap;
    let mut by_id: BTreeMap<i64, Vec<bool>> = BTreeMap::new();
    for &(id, marked) in reports {
        by_id.entry(id).or_default().push(marked);
    }
    let reported: Vec<i64> = by_id.keys().copied().collect();
    let mut expected = sent.to_vec();
    expected.sort_unstable();
    let missing: Vec<_> = expected
        .iter()
        .filter(|id| !by_id.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: messages never reported (lost) (seed {seed}): {missing:?}"
    );
    assert_eq!(
        reported, expected,
        "{what}: reports of messages never sent (seed {seed})"
    );
    let unmarked: Vec<i64> = reports
        .iter()
        .filter(|(_, marked)| !marked)
        .map(|(id, _)| *id)
        .collect();
    let out_of_order: Vec<_> = unmarked
        .windows(2)
        .filter(|pair| pair[0] >= pair[1])
        .collect();
    assert!(
        out_of_order.is_empty(),
        "{what}: unmarked reports repeated or out of order (seed {seed}): {out_of_order:?}"
    );
    let unmarked_again: Vec<_> = by_id
        .iter()
        .filter(|(_, marks)| marks[1..].iter().any(|marked| !marked))
        .collect();
    assert!(
        unmarked_again.is_empty(),
        "{what}: messages reported again without the mark (seed {seed}): {unmarked_again:?}"
    );
}

/// The check of the scenarios' reports fails on each fault it is there to
/// find (a test that cannot fail proves nothing).
#[test]
fn the_check_of_reports_finds_each_fault() {
    assert_at_least_once(
        "fine",
        &[(1, false), (2, false), (1, true), (2, true), (3, false)],
        &[1, 2, 3],
        0,
    );
    let faults: [(&[(i64, bool)], &str); 5] = [
        (&[(1, false)], "never reported (lost)"),
        (&[(1, false), (2, false), (9, false)], "never sent"),
        (
            &[(1, false), (2, false), (2, false)],
            "repeated or out of order",
        ),
        (&[(2, false), (1, false)], "repeated or out of order"),
        (
            &[(1, true), (1, false), (2, false)],
            "again without the mark",
        ),
    ];
    for (reports, expected) in faults {
        let panic = std::panic::catch_unwind(|| assert_at_least_once("t", reports, &[1, 2], 0))
            .expect_err("the check fails");
        let message = panic.downcast_ref::<String>().expect("a formatted message");
        assert!(message.contains(expected), "{reports:?}: {message}");
    }
}

/// Every test of this binary again, on PostgreSQL.
#[tokio::test]
async fn every_test_on_postgres() {
    bridge_tests::postgres::rerun_on_postgres("every_test_on_postgres", &[]).await;
}
