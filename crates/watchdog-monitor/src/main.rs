//! `watchdog-monitor`: finds silent workers and moves their work.
//!
//! Every `--interval` (default 60 s) it scans the workers (sessions `b`) of
//! live conversations, of one `--team` or all, for those not heard from (no
//! heartbeat, no call) for `--threshold` (default 300 s). A worker newly
//! silent is marked `silent` (audited), logged as a warning and, with
//! `--on-alert CMD`, reported to `sh -c CMD` with the details in the
//! environment: one alert per silence, however many passes it lasts. Unless
//! `--no-reassign`, the open and in-progress tasks of every silent worker go
//! to the healthy workers of its team (`bridge-core`'s reassignment, the
//! same as `reassign-tasks`). A worker marked silent that is heard from
//! again is logged as recovered, marked `active`, and reported to the alert
//! command too.
//!
//! The silence is kept in the database, not in this process: a restarted
//! watchdog, or `--once` from cron, does not alert twice. Replaces the
//! original `watchdog-monitor.sh`, which printed a list and left the tasks
//! where they were.
//!
//! `--once` does one pass and exits (a missing database is an error). Otherwise
//! it runs until SIGTERM or SIGINT, waits for a database that does not exist
//! yet, reopens one that was replaced, and under systemd (`Type=notify`,
//! `WatchdogSec=`) says when it is ready and pings the watchdog; alert
//! commands run beside the loop.
//!
//! `--metrics ADDR` serves Prometheus metrics at `http://ADDR/metrics`
//! (`bridge-metrics`): scans, failed scans, alerts, recoveries and task
//! moves by outcome, and the `process_*` basics. Plain HTTP without
//! authentication, as `node_exporter` does: the numbers hold no secret;
//! keep the address on loopback or a network Prometheus alone reaches.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bridge_cli::daemon::{open_when_ready, systemd};
use bridge_cli::{LogArgs, StoreArgs, exit, parse_duration, shutdown_signal};
use bridge_core::{Reassignment, Store, Timestamp, Worker};
use bridge_metrics::WatchdogMetrics;
use clap::Parser;

/// How long an alert command may run before it is killed.
const ALERT_TIMEOUT: Duration = Duration::from_secs(30);

/// Finds workers not heard from for a threshold, alerts once per silence,
/// and reassigns their open tasks to healthy workers of the same team.
#[derive(Parser, Debug)]
#[command(name = "watchdog-monitor", version)]
struct Args {
    /// Time between scans
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    interval: Duration,

    /// A worker not heard from for this long is silent
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    threshold: Duration,

    /// Watch only this team's workers
    #[arg(long, value_name = "TEAM")]
    team: Option<String>,

    /// Scan once and exit (for cron and tests)
    #[arg(long)]
    once: bool,

    /// Run `sh -c CMD` on each new silence and each recovery, with
    /// BRIDGE_EVENT (silent|recovered), BRIDGE_CONVERSATION_ID, BRIDGE_ROLE,
    /// BRIDGE_TEAM, BRIDGE_LAST_HEARD, BRIDGE_SILENT_SECONDS and
    /// BRIDGE_OPEN_TASKS in its environment
    #[arg(long, value_name = "CMD")]
    on_alert: Option<String>,

    /// Alert only; leave the tasks of silent workers where they are
    #[arg(long)]
    no_reassign: bool,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9464; port 0 picks a free one, logged)
    #[arg(long, value_name = "ADDR", conflicts_with = "once")]
    metrics: Option<SocketAddr>,

    #[command(flatten)]
    store: StoreArgs,

    #[command(flatten)]
    log: LogArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init();
    let code = exit::block_on("watchdog-monitor", run(args));
    systemd::stopping();
    code
}

async fn run(args: Args) -> anyhow::Result<()> {
    for (flag, value) in [
        ("--interval", args.interval),
        ("--threshold", args.threshold),
    ] {
        if value.is_zero() {
            anyhow::bail!("{flag} must be longer than zero");
        }
    }
    // First: from here on, a signal is caught rather than fatal.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut options = args.store.options()?;
    if args.once {
        // One pass, for cron: a missing or locked database is an error now,
        // not something to wait for.
        options.create = false;
        let store = Store::open(options).await?;
        let mut alerts = Alerts::new();
        let outcome = pass(&store, &args, &mut alerts, &WatchdogMetrics::new()).await;
        while let Some(done) = alerts.join_next().await {
            log_alert(done);
        }
        store.close().await;
        return outcome;
    }

    let metrics = WatchdogMetrics::new();
    // Before the database is there: Prometheus sees the process waiting.
    let serving = match args.metrics {
        Some(addr) => Some(serve_metrics(addr, metrics.clone()).await?),
        None => None,
    };
    let Some(mut store) = open_when_ready(options.clone(), &mut shutdown).await? else {
        return Ok(());
    };
    tracing::info!(
        interval = ?args.interval,
        threshold = ?args.threshold,
        team = args.team.as_deref().unwrap_or("(all)"),
        reassign = !args.no_reassign,
        "watching"
    );
    systemd::ready();
    let watchdog = systemd::watchdog_interval();
    let mut watchdog_ticks = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut scans = tokio::time::interval(args.interval);
    scans.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Alert commands run beside the loop: a slow one delays neither the
    // watchdog pings nor a stop.
    let mut alerts = Alerts::new();
    loop {
        tokio::select! {
            signal = &mut shutdown => {
                tracing::info!(signal, "stopping");
                break;
            }
            _ = watchdog_ticks.tick(), if watchdog.is_some() => systemd::watchdog(),
            Some(done) = alerts.join_next() => log_alert(done),
            _ = scans.tick() => {
                if store.replaced() {
                    tracing::warn!(database = %store.path().display(), "the database file was replaced; reopening it");
                    store.close().await;
                    let Some(reopened) = open_when_ready(options.clone(), &mut shutdown).await? else {
                        return Ok(());
                    };
                    store = reopened;
                }
                // Locked, or a moment of trouble: try again next time.
                if let Err(error) = pass(&store, &args, &mut alerts, &metrics).await {
                    tracing::warn!("scan failed: {error:#}");
                }
            }
        }
    }
    store.close().await;
    if let Some(serving) = serving {
        serving.abort();
    }
    Ok(())
}

/// Binds `addr` and serves `metrics` there beside the loop; logs where.
async fn serve_metrics(
    addr: SocketAddr,
    metrics: WatchdogMetrics,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = bridge_metrics::bind(addr).await?;
    let local = listener
        .local_addr()
        .context("reading the metrics address")?;
    tracing::info!("metrics on http://{local}/metrics");
    Ok(tokio::spawn(async move {
        let render = move || metrics.render();
        if let Err(error) = bridge_metrics::serve(listener, render, std::future::pending()).await {
            tracing::error!("{error}");
        }
    }))
}

/// One scan: mark new silences and recoveries, move the tasks of the
/// silent, then start the alert commands in `alerts`. A worker that cannot
/// be marked (its conversation removed meanwhile, say) is logged and
/// skipped.
async fn pass(
    store: &Store,
    args: &Args,
    alerts: &mut Alerts,
    metrics: &WatchdogMetrics,
) -> anyhow::Result<()> {
    let scan = store
        .scan_workers(args.threshold, args.team.as_deref())
        .await;
    metrics.scan(scan.is_ok());
    let scan = scan.context("scanning the workers")?;
    let mut events = Vec::new();
    for worker in &scan.back {
        match store.mark_recovered(&worker.conversation_id).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(
                    conversation_id = %worker.conversation_id,
                    role = %worker.role,
                    team = worker.team.as_deref().unwrap_or(""),
                    last_heard = %worker.last_heard,
                    "worker recovered"
                );
                metrics.recovery();
                events.push(("recovered", worker));
            }
            Err(error) => tracing::warn!(
                conversation_id = %worker.conversation_id,
                %error,
                "cannot mark the worker recovered"
            ),
        }
    }
    let mut new_silences = 0;
    for worker in &scan.silent {
        match store
            .mark_silent(&worker.conversation_id, args.threshold)
            .await
        {
            Ok(false) => {}
            Ok(true) => {
                new_silences += 1;
                metrics.alert();
                tracing::warn!(
                    conversation_id = %worker.conversation_id,
                    role = %worker.role,
                    team = worker.team.as_deref().unwrap_or(""),
                    last_heard = %worker.last_heard,
                    silent_seconds = silent_seconds(worker),
                    "worker silent"
                );
                events.push(("silent", worker));
            }
            Err(error) => tracing::warn!(
                conversation_id = %worker.conversation_id,
                %error,
                "cannot mark the worker silent"
            ),
        }
    }
    let mut moved = 0;
    if !args.no_reassign && !scan.silent.is_empty() {
        let from: Vec<_> = scan
            .silent
            .iter()
            .map(|w| w.conversation_id.clone())
            .collect();
        let reassigned = store
            .reassign_tasks(&from, args.threshold, false)
            .await
            .context("reassigning the tasks of silent workers")?;
        for reassignment in &reassigned {
            log_reassignment(reassignment);
            metrics.task_move(reassignment.outcome);
        }
        moved = reassigned.iter().filter(|r| r.outcome == "moved").count();
    }
    if let Some(command) = &args.on_alert {
        for (event, worker) in events {
            alerts.spawn(alert(command.clone(), event, worker.clone()));
        }
    }
    tracing::info!(
        silent = scan.silent.len(),
        new_silences,
        recovered = scan.back.len(),
        moved,
        "scan done"
    );
    Ok(())
}

/// Whole seconds since `worker` was last heard from.
fn silent_seconds(worker: &Worker) -> u64 {
    worker.last_heard.age_at(Timestamp::now()).as_secs()
}

fn log_reassignment(reassignment: &Reassignment) {
    let Reassignment {
        task_id,
        from,
        to,
        outcome,
        ..
    } = reassignment;
    match (*outcome, to) {
        ("moved", Some(to)) => {
            tracing::info!(task_id, %from, %to, "task reassigned");
        }
        ("marked unassigned", _) => {
            tracing::warn!(task_id, %from, "no healthy worker in the team; task left unassigned");
        }
        _ => tracing::debug!(task_id, %from, outcome, "task not moved"),
    }
}

/// The alert commands running.
type Alerts = tokio::task::JoinSet<anyhow::Result<()>>;

/// Logs an alert command that failed.
fn log_alert(done: Result<anyhow::Result<()>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!("--on-alert failed: {error:#}"),
        Err(error) => tracing::warn!("--on-alert failed: {error}"),
    }
}

/// Runs the alert command for one event, waiting at most [`ALERT_TIMEOUT`].
async fn alert(command: String, event: &'static str, worker: Worker) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .env("BRIDGE_EVENT", event)
        .env("BRIDGE_CONVERSATION_ID", worker.conversation_id.as_str())
        .env("BRIDGE_ROLE", &worker.role)
        .env("BRIDGE_TEAM", worker.team.as_deref().unwrap_or(""))
        .env("BRIDGE_LAST_HEARD", worker.last_heard.to_string())
        .env("BRIDGE_SILENT_SECONDS", silent_seconds(&worker).to_string())
        .env("BRIDGE_OPEN_TASKS", worker.open_tasks.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting sh")?;
    match tokio::time::timeout(ALERT_TIMEOUT, child.wait()).await {
        Ok(status) => {
            let status = status.context("waiting for the command")?;
            anyhow::ensure!(status.success(), "the command ended with {status}");
            Ok(())
        }
        Err(_) => anyhow::bail!("the command ran longer than {ALERT_TIMEOUT:?} and was killed"),
    }
}
