//! The store on PostgreSQL: sends with ten writers on one hub and on two,
//! against the same ten writers on SQLite and against `pgbench` on the same
//! server; and how long a message sent through one hub takes to wake a
//! waiter on another.
//!
//! Run with `cargo bench -p bridge-tests --bench postgres`. It starts two
//! throwaway PostgreSQL clusters, one after the other: the tests' own
//! ([`PgServer::start`]: `fsync=off`, `synchronous_commit=off`,
//! `full_page_writes=off`), then a durable one ([`PgServer::start_durable`]:
//! PostgreSQL's defaults, every commit synced, as a production server
//! runs); it says so and stops if PostgreSQL is not installed. Every store
//! runs with the rate limit off and durability `full`, which on PostgreSQL
//! is the server's `synchronous_commit` (so it syncs on the durable cluster
//! only, as `pgbench` does). On Tokio's current-thread runtime, as the
//! store benchmark. On each cluster, in order:
//!
//! * one writer sending [`PER_WRITER`] messages back to back (a reference);
//!   then ten writers on one store, ten conversations, each writer a task
//!   sending as many;
//! * two hubs: two stores opened on one database with one key file, each
//!   on a thread and runtime of its own as two processes would be, five
//!   such writers on each, the rate of all ten; then ten on each, to show
//!   how the rate grows with each hub's load (no target);
//! * `pgbench -n -c 10 -j 2 -T 10` on a one-row insert into a table of its
//!   own, on the same server; each store rate is divided by its TPS;
//!
//! then, on the test cluster only:
//!
//! * the wake-up across hubs: a waiter on store two subscribes, waits for a
//!   change and reads with `check`; store one sends a message every 20 ms
//!   carrying the time just before its send was called; the latency is from
//!   then to the waiter having read it. Store two polls only every hour, so
//!   only PostgreSQL's `NOTIFY` can wake it;
//!
//! and last the ten writers of the first case on SQLite
//! ([`TempDb::for_bench`], durability `full`), for comparison.
//!
//! Each rate comes with its send latencies and the CPU used meanwhile, by
//! this process and by the whole machine (the server's share is the
//! difference, less whatever else runs there).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge_core::{Credentials, Location, NewMessage, Store, StoreOptions};
use bridge_testkit::process::cpu_time;
use bridge_testkit::report::{machine, micros, rate, report_latency, report_rate};
use bridge_tests::postgres::{PgServer, STATEMENT_STATISTICS, SUPERUSER, server_programs};
use bridge_tests::{TempDb, pair};

/// Writers in every rate measurement.
const WRITERS: usize = 10;
/// Messages each writer sends.
const PER_WRITER: usize = 1_000;
/// Messages timed across hubs.
const SAMPLES: usize = 500;
/// The pace of those messages.
const PACE: Duration = Duration::from_millis(20);
/// How long `pgbench` runs, in seconds.
const PGBENCH_SECONDS: u32 = 10;
/// A message of about 80 characters, as in the store benchmark.
const BODY: &str =
    "Please review the changes in src/store.rs and run the tests; report anything odd.";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    println!("mcp-bridge on PostgreSQL: ten writers, two hubs, pgbench, wake-up across hubs");
    println!("{}", machine());
    let keys = tempfile::tempdir().expect("create a temporary directory");
    let key_file = keys.path().join("server.key");

    // 1. The test cluster, without syncs; then the wake-up across hubs on it.
    let settings = if statements_asked() {
        STATEMENT_STATISTICS
    } else {
        &[]
    };
    let Some(server) = PgServer::start_with(false, settings).await else {
        println!("PostgreSQL is not installed here: nothing measured");
        return;
    };
    let fast = on_server(&server, &key_file, "test cluster, no syncs").await;
    let url = server.create_database("wake_up").await;
    let wake = wake_up(&url, &key_file).await;
    drop(server);
    println!();

    // 2. A durable cluster: PostgreSQL's defaults.
    let server = PgServer::start_with(true, settings)
        .await
        .expect("PostgreSQL started once already");
    let durable = on_server(&server, &key_file, "durable cluster, syncs on").await;
    drop(server);

    // 3. The same ten writers on SQLite.
    let db = TempDb::for_bench();
    let store = db.open().await;
    let sqlite = sends(&store, WRITERS, PER_WRITER).await;
    store.close().await;
    sqlite.report("SQLite (full), 10 writers on 1 store");
    println!("    SQLite database: {}", db.path.display());
    println!();

    println!("summary");
    let line = |what: &str, value: String, target: &str| {
        println!("{what:<56} {value:>26}  {target}");
    };
    for rates in [&fast, &durable] {
        let of = |what: &str| format!("{what}, {}", rates.server);
        for (what, sends) in [
            ("PostgreSQL, 1 writer (reference)", &rates.alone),
            ("PostgreSQL, 10 writers on 1 store", &rates.one_hub),
            ("PostgreSQL, 2 stores x 5 writers", &rates.two_hubs),
            ("PostgreSQL, 2 stores x 10 writers", &rates.two_busy_hubs),
        ] {
            line(&of(what), format!("{:.0} sends/s", sends.rate()), "");
        }
        match rates.tps {
            Some(tps) => line(&of("pgbench, one-row insert"), format!("{tps:.0} tps"), ""),
            None => line(&of("pgbench, one-row insert"), "n/a".into(), ""),
        }
        // The target is for ten writers in all; twenty is context.
        for (what, sends, targeted) in [
            ("1 store ÷ pgbench", &rates.one_hub, true),
            ("2 stores ÷ pgbench", &rates.two_hubs, true),
            (
                "2 stores x 10 writers ÷ pgbench",
                &rates.two_busy_hubs,
                false,
            ),
        ] {
            let goal = if targeted { "≥ 0.5" } else { "" };
            match rates.tps.map(|tps| sends.rate() / tps) {
                Some(ratio) if targeted => line(
                    &of(what),
                    format!("{ratio:.2}"),
                    &target(ratio >= 0.5, goal),
                ),
                Some(ratio) => line(&of(what), format!("{ratio:.2}"), goal),
                None => line(&of(what), "n/a".into(), goal),
            }
        }
    }
    line(
        "SQLite (full), 10 writers on 1 store",
        format!("{:.0} sends/s", sqlite.rate()),
        "",
    );
    match wake.percentiles() {
        Some((p50, p99, max)) => line(
            "wake-up across hubs, p50 / p99 / max",
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                millis(p50),
                millis(p99),
                millis(max)
            ),
            &target(
                p99 <= Duration::from_millis(50) && wake.missing == 0,
                "p99 ≤ 50 ms",
            ),
        ),
        None => line("wake-up across hubs", "no samples".into(), "p99 ≤ 50 ms"),
    }
    let errors = [&fast, &durable]
        .iter()
        .map(|rates| {
            rates.alone.errors
                + rates.one_hub.errors
                + rates.two_hubs.errors
                + rates.two_busy_hubs.errors
        })
        .sum::<usize>()
        + sqlite.errors;
    line(
        "failed sends; messages never read across hubs",
        format!("{errors}; {}", wake.missing),
        "",
    );
}

/// The rates measured on one server.
struct Rates {
    /// Which server, for the summary.
    server: &'static str,
    alone: Sends,
    one_hub: Sends,
    two_hubs: Sends,
    /// Two hubs of ten writers each: how the rate grows with each hub's load.
    two_busy_hubs: Sends,
    tps: Option<f64>,
}

/// On `server` (called `name`): one writer alone, ten writers on one store,
/// five on each of two stores of one database, and `pgbench`.
async fn on_server(server: &PgServer, key_file: &Path, name: &'static str) -> Rates {
    describe_server(server).await;
    if statements_asked() {
        let mut connection = server.connect("postgres").await;
        sqlx::query("CREATE EXTENSION pg_stat_statements")
            .execute(&mut connection)
            .await
            .expect("create pg_stat_statements");
    }
    println!();
    let url = server.create_database("ten_writers").await;
    let store = open(&url, key_file, None).await;
    let alone = sends(&store, 1, PER_WRITER).await;
    alone.report("PostgreSQL, 1 writer (reference)");
    let one_hub = sends(&store, WRITERS, PER_WRITER).await;
    store.close().await;
    one_hub.report("PostgreSQL, 10 writers on 1 store");

    let url = server.create_database("two_hubs").await;
    let two_hubs = sends_on_two_hubs(&url, key_file, WRITERS / 2);
    two_hubs.report("PostgreSQL, 2 stores x 5 writers, 1 database");
    if statements_asked() {
        print_statements(server, "two_hubs").await;
    }
    let url = server.create_database("two_busy_hubs").await;
    let two_busy_hubs = sends_on_two_hubs(&url, key_file, WRITERS);
    two_busy_hubs.report("PostgreSQL, 2 stores x 10 writers, 1 database");
    println!();
    let tps = pgbench(server).await;
    println!();
    Rates {
        server: name,
        alone,
        one_hub,
        two_hubs,
        two_busy_hubs,
        tps,
    }
}

/// The server's version and the settings that decide what a commit costs.
async fn describe_server(server: &PgServer) {
    let mut connection = server.connect("postgres").await;
    let mut settings = Vec::new();
    for name in [
        "server_version",
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "shared_buffers",
        "max_connections",
    ] {
        let value: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(&mut connection)
            .await
            .expect("read a server setting");
        settings.push(format!("{name}={value}"));
    }
    println!(
        "server: PostgreSQL on 127.0.0.1:{}, {}",
        server.port(),
        settings.join(", ")
    );
}

/// Opens the store at `url` with the rate limit off; `poll_interval`, if
/// given, is how often its watcher checks the heads without a notification.
async fn open(url: &str, key_file: &Path, poll_interval: Option<Duration>) -> Store {
    let mut options = StoreOptions::at(Location::parse(url).expect("a PostgreSQL URL"));
    options.key_file = Some(key_file.to_path_buf());
    options.rate_limit_per_minute = 0;
    if let Some(interval) = poll_interval {
        options.poll_interval = interval;
    }
    Store::open(options).await.expect("open the store")
}

/// What one rate measurement gave.
struct Sends {
    sent: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    /// CPU used meanwhile: by this process, and by the whole machine.
    cpu: Cpu,
}

impl Sends {
    fn of(cpu: Cpu, elapsed: Duration, latencies: Vec<Duration>, errors: Vec<String>) -> Sends {
        Sends {
            cpu,
            sent: latencies.len(),
            elapsed,
            latencies,
            errors: errors.len(),
            first_error: errors.into_iter().next(),
        }
    }

    fn rate(&self) -> f64 {
        rate(self.sent, self.elapsed)
    }

    fn report(&self, what: &str) {
        report_rate(what, self.sent, self.elapsed);
        report_latency("    send latency", &self.latencies);
        println!("    {}", self.cpu);
        if let Some(error) = &self.first_error {
            println!("    {} sends failed; the first: {error}", self.errors);
        }
    }
}

/// `writers` tasks on `store`, each in a conversation of its own made
/// there, each sending `per_writer` messages back to back. The rate counts
/// the sends that succeeded, over the time until the last writer finished.
async fn sends(store: &Store, writers: usize, per_writer: usize) -> Sends {
    let jobs = writers_on(store, writers).await;
    let cpu = Cpu::start();
    let started = Instant::now();
    let (latencies, errors) = write(jobs, per_writer).await;
    let elapsed = started.elapsed();
    Sends::of(cpu.stop(elapsed), elapsed, latencies, errors)
}

/// Two hubs as two `bridge-mcp` processes are: each store opened on a
/// thread and runtime of its own, with `writers` writers, all starting at
/// once. (On one thread, each hub's answers would wait while the other
/// hub's work runs, and hubs take turns at the database.)
fn sends_on_two_hubs(url: &str, key_file: &Path, writers: usize) -> Sends {
    let (ready, opened) = std::sync::mpsc::channel();
    let start = Arc::new(std::sync::Barrier::new(3));
    let hubs: Vec<_> = (0..2)
        .map(|_| {
            let (url, key_file) = (url.to_owned(), key_file.to_path_buf());
            let (ready, start) = (ready.clone(), start.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for a hub");
                runtime.block_on(async {
                    let store = open(&url, &key_file, None).await;
                    let jobs = writers_on(&store, writers).await;
                    ready.send(()).expect("tell the bench this hub is ready");
                    drop(ready);
                    start.wait();
                    let written = write(jobs, PER_WRITER).await;
                    let finished = Instant::now();
                    store.close().await;
                    (written, finished)
                })
            })
        })
        .collect();
    drop(ready);
    for _ in &hubs {
        // A hub whose thread panicked drops its sender unsent.
        opened.recv().expect("both hubs open their stores");
    }
    start.wait();
    let cpu = Cpu::start();
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(2 * writers * PER_WRITER);
    let mut errors = Vec::new();
    let mut last = started;
    for hub in hubs {
        let ((done, failed), finished) = hub.join().expect("a hub's thread");
        latencies.extend(done);
        errors.extend(failed);
        last = last.max(finished);
    }
    let elapsed = last - started;
    Sends::of(cpu.stop(elapsed), elapsed, latencies, errors)
}

/// `writers` writers on `store`, each with a conversation of its own made
/// there.
async fn writers_on(store: &Store, writers: usize) -> Vec<(Store, Credentials)> {
    let mut jobs = Vec::with_capacity(writers);
    for _ in 0..writers {
        jobs.push((store.clone(), pair(store).await.a));
    }
    jobs
}

/// Runs the writers, each sending `per_writer` messages back to back on
/// its own conversation; their latencies and error messages.
async fn write(jobs: Vec<(Store, Credentials)>, per_writer: usize) -> (Vec<Duration>, Vec<String>) {
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|(store, credentials)| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_writer);
                let mut errors = Vec::new();
                for _ in 0..per_writer {
                    let sent = Instant::now();
                    match store.send(&credentials, NewMessage::new(BODY)).await {
                        Ok(_) => latencies.push(sent.elapsed()),
                        Err(error) => errors.push(error.to_string()),
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for task in tasks {
        let (done, failed) = task.await.expect("a writer task");
        latencies.extend(done);
        errors.extend(failed);
    }
    (latencies, errors)
}

/// CPU time over a measurement: this process's (the stores and their
/// writers, on one thread) and the machine's (the server too), from
/// `/proc`.
struct Cpu {
    own: Duration,
    busy: Duration,
    cores: Duration,
}

impl Cpu {
    fn start() -> Cpu {
        let (busy, cores) = machine_cpu();
        Cpu {
            own: cpu_time(std::process::id()),
            busy,
            cores,
        }
    }

    /// What was used since `self`, over `elapsed`.
    fn stop(self, elapsed: Duration) -> Cpu {
        let (busy, cores) = machine_cpu();
        Cpu {
            own: cpu_time(std::process::id()).saturating_sub(self.own),
            busy: busy.saturating_sub(self.busy),
            cores: cores.saturating_sub(self.cores).max(elapsed),
        }
    }
}

impl std::fmt::Display for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let share = |part: Duration| 100.0 * part.as_secs_f64() / self.cores.as_secs_f64();
        write!(
            f,
            "CPU meanwhile: this process {:.0} % of the machine, the machine {:.0} % busy",
            share(self.own),
            share(self.busy)
        )
    }
}

/// The machine's busy and total CPU time so far, all cores, from
/// `/proc/stat` (in clock ticks of 10 ms).
fn machine_cpu() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let total: u64 = ticks.iter().take(8).sum();
    // idle and iowait
    let idle: u64 = ticks.iter().skip(3).take(2).sum();
    let tick = |n: u64| Duration::from_millis(n * 10);
    (tick(total - idle), tick(total))
}

/// Runs `pgbench` on a one-row insert into a table of its own; returns its
/// TPS, or `None` (said why) if it is missing or failed.
async fn pgbench(server: &PgServer) -> Option<f64> {
    let Some(program) = pgbench_program() else {
        println!("pgbench: not found next to initdb or on the PATH; not measured");
        return None;
    };
    server.create_database("pgbench_insert").await;
    let mut connection = server.connect("pgbench_insert").await;
    sqlx::query("CREATE TABLE bench (id bigserial PRIMARY KEY, body text, at bigint)")
        .execute(&mut connection)
        .await
        .expect("create pgbench's table");
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let script = dir.path().join("insert.sql");
    std::fs::write(
        &script,
        "INSERT INTO bench (body, at) VALUES ('hello', 1);\n",
    )
    .expect("write pgbench's script");
    let port = server.port().to_string();
    let seconds = PGBENCH_SECONDS.to_string();
    let output = tokio::process::Command::new(&program)
        .args(["-n", "-c", "10", "-j", "2", "-T", &seconds, "-f"])
        .arg(&script)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            SUPERUSER,
            "pgbench_insert",
        ])
        .env("PGPASSWORD", server.password())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run pgbench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let tps = stdout.lines().find_map(|line| {
        line.trim()
            .strip_prefix("tps = ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse::<f64>().ok())
    });
    let Some(tps) = tps.filter(|_| output.status.success()) else {
        println!(
            "pgbench failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    };
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM bench")
        .fetch_one(&mut connection)
        .await
        .expect("count pgbench's rows");
    println!(
        "{:<44} {tps:>9.0} tps ({rows} rows in {PGBENCH_SECONDS} s, {})",
        "pgbench, one-row insert, -c 10 -j 2",
        program.display()
    );
    Some(tps)
}

/// `pgbench`, beside the server programs the benchmark's cluster runs.
fn pgbench_program() -> Option<PathBuf> {
    server_programs()
        .map(|dir| dir.join("pgbench"))
        .filter(|program| program.is_file())
}

/// What the wake-up measurement gave.
struct WakeUp {
    /// Sent (just before) to read on the other store, one per message read.
    samples: Vec<Duration>,
    /// Messages sent and never read within the grace period.
    missing: usize,
}

impl WakeUp {
    fn percentiles(&self) -> Option<(Duration, Duration, Duration)> {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        (!sorted.is_empty()).then(|| (at(0.5), at(0.99), at(1.0)))
    }
}

/// Store one sends [`SAMPLES`] messages at [`PACE`], each carrying the time
/// just before its send; a waiter on store two (polling every hour: only a
/// notification wakes it) reads them.
async fn wake_up(url: &str, key_file: &Path) -> WakeUp {
    let one = open(url, key_file, None).await;
    let two = open(url, key_file, Some(Duration::from_secs(3600))).await;
    let conversation = pair(&one).await;
    let base = Instant::now();
    let read: Arc<Mutex<Vec<Duration>>> = Arc::default();
    // Wake-ups, and reads that found more than one message (the first
    // then waited for the next one's wake-up).
    let wake_ups = Arc::new(Mutex::new((0_usize, 0_usize)));
    let mut changes = two.subscribe();
    let waiter = {
        let (two, reader, read, wake_ups) = (
            two.clone(),
            conversation.b.clone(),
            Arc::clone(&read),
            Arc::clone(&wake_ups),
        );
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let messages = two.check(&reader, 100).await.expect("check on store two");
                {
                    let mut counts = wake_ups.lock().expect("the wake-up count");
                    counts.0 += 1;
                    counts.1 += usize::from(messages.len() > 1);
                }
                let now = base.elapsed();
                let mut read = read.lock().expect("the samples");
                for message in messages {
                    let sent: u64 = message
                        .body
                        .rsplit(' ')
                        .next()
                        .and_then(|nanos| nanos.parse().ok())
                        .expect("a message of this benchmark");
                    read.push(now.saturating_sub(Duration::from_nanos(sent)));
                }
            }
        })
    };
    let mut send_times = Vec::with_capacity(SAMPLES);
    let mut pace = tokio::time::interval(PACE);
    for n in 0..SAMPLES {
        pace.tick().await;
        let at = base.elapsed();
        one.send(
            &conversation.a,
            NewMessage::new(format!("message {n} sent at {}", at.as_nanos())),
        )
        .await
        .expect("send on store one");
        send_times.push(base.elapsed().saturating_sub(at));
    }
    // A last message may still be on its way; then give up on what is not.
    let deadline = Instant::now() + Duration::from_secs(5);
    while read.lock().expect("the samples").len() < SAMPLES && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    waiter.abort();
    let _ = waiter.await;
    one.close().await;
    two.close().await;
    let samples = std::mem::take(&mut *read.lock().expect("the samples"));
    let (woken, together) = *wake_ups.lock().expect("the wake-up count");
    let result = WakeUp {
        missing: SAMPLES.saturating_sub(samples.len()),
        samples,
    };
    println!("wake-up across hubs: one message every {PACE:?}, store two polls every hour");
    report_latency("send on store one", &send_times);
    report_latency("send called to read on store two", &result.samples);
    let late = result
        .samples
        .iter()
        .filter(|&&sample| sample > PACE)
        .count();
    println!(
        "    {} of {SAMPLES} read, {late} later than {PACE:?}, max {:.0} us; waiter woken \
         {woken} times, {together} reads found more than one message",
        result.samples.len(),
        result.percentiles().map_or(0.0, |(_, _, max)| micros(max))
    );
    result
}

/// Milliseconds, for the summary.
fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// "met" or "not met", after the target.
fn target(met: bool, what: &str) -> String {
    format!("{what}: {}", if met { "met" } else { "not met" })
}

/// Whether `BRIDGE_BENCH_STATEMENTS=1` asks where the server's time went:
/// the servers then count their statements ([`STATEMENT_STATISTICS`]), and
/// the rate of two hubs is followed by the statements that took most time.
fn statements_asked() -> bool {
    std::env::var_os("BRIDGE_BENCH_STATEMENTS").is_some_and(|value| value == "1")
}

/// The statements run in `database` that took most of the server's time,
/// nested ones (inside the writer's functions) included: calls, mean time
/// (a statement waiting for a lock counts its wait), the statement.
async fn print_statements(server: &PgServer, database: &str) {
    let mut connection = server.connect("postgres").await;
    let statements: Vec<(i64, f64, String)> = sqlx::query_as(
        "SELECT calls, mean_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 72) \
         FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1) AND calls >= 100 \
         ORDER BY total_exec_time DESC LIMIT 12",
    )
    .bind(database)
    .fetch_all(&mut connection)
    .await
    .expect("read pg_stat_statements");
    println!("    server time by statement (calls, mean):");
    for (calls, mean_ms, statement) in statements {
        println!("    {calls:>8} {:>8.1} us  {statement}", mean_ms * 1000.0);
    }
}
