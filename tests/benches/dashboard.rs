//! The dashboard under load: its page weight, the time from a send to the
//! open page's update, and the memory of the hub and of a page left open.
//!
//! Run with `cargo bench -p bridge-tests --bench dashboard` (it builds the
//! workspace's binaries first, if need be). One `bridge-mcp --http` hub on a
//! database in the system's temporary directory (or `$BENCH_DIR`), on
//! loopback without `--require-auth`; ten conversations of team `core`.
//! Twenty dashboards are opened as a browser opens them (`GET
//! /events?page=…`, one connection each, read continuously): one on the
//! Messages page, which measures, and nineteen on the Team page; and, when
//! Chromium is installed, the Messages page in a headless Chromium. Then ten
//! agents, each an MCP session of its own over HTTP, send to their partners
//! every 50 ms for `DASHBOARD_LOAD_SECS` (default 10) seconds; each send is
//! timed from just before its `tools/call` to the event that first shows
//! its id on the Messages page. Then the dashboards stay open for
//! `DASHBOARD_SOAK_SECS` (default 30) while the ten agents send once a
//! second each (timed the same way). Twelve times through the soak it
//! samples the hub's memory and the database's size, and in Chromium waits
//! for the page to show the latest send, then takes the page's JavaScript
//! heap after a garbage collection, its DOM elements and the renderer's
//! memory (after the load it measures the page twice with no update
//! between, to show what a measurement adds to the heap by itself). Prints each page's weight (HTML, and with the script and
//! stylesheet), the latency p50/p99/max, and those samples.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge_testkit::process::memory;
use bridge_testkit::report::{machine, report_latency, report_memory};
use bridge_tests::browser::Browser;
use bridge_tests::http::{Connection, Session};
use bridge_tests::mcp::HttpServer;
use bridge_tests::{Pair, TempDb, team};
use serde_json::json;

const AGENTS: usize = 10;
const DASHBOARDS: usize = 20;
const EVERY: Duration = Duration::from_millis(50);
/// How many times the soak samples memory.
const SAMPLES: u32 = 12;

fn seconds(variable: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(variable)
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(default),
    )
}

/// The ids a Messages page shows.
fn message_ids(html: &str) -> impl Iterator<Item = i64> + '_ {
    html.split("data-message=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next()?.parse().ok())
}

#[tokio::main]
async fn main() {
    let load = seconds("DASHBOARD_LOAD_SECS", 10);
    let soak = seconds("DASHBOARD_SOAK_SECS", 30);
    let db = TempDb::for_bench();
    println!("mcp-bridge dashboard: page weight, send to update, memory with 20 dashboards");
    println!("database: {}", db.path.display());
    println!("{}", machine());
    println!();

    let server = HttpServer::start(&db.path, &[]);
    let authority = server.authority().to_owned();
    let pid = server.pid();
    let measure = |what: &str| match memory(pid) {
        Some(used) => report_memory(what, used),
        None => println!("{what}: not running"),
    };
    let store = db.open().await;
    let pairs = team(&store, "core", AGENTS).await;
    store.close().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    measure("hub, no dashboard");

    // Twenty dashboards, each read continuously on a thread of its own.
    let sent: Sent = Arc::default();
    let seen: Sent = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for n in 0..DASHBOARDS {
        let page = if n == 0 { "messages" } else { "team" };
        let mut events = Connection::open(&authority);
        assert_eq!(
            events.open_events(&format!("/events?page={page}"), &[]),
            200
        );
        let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
        readers.push(std::thread::spawn(move || {
            let mut events_read = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                if let Some((_, html)) = events.next_event(Duration::from_millis(500)) {
                    events_read += 1;
                    if n == 0 {
                        let now = Instant::now();
                        let mut seen = seen.lock().unwrap();
                        for id in message_ids(&html) {
                            seen.entry(id).or_insert(now);
                        }
                    }
                }
            }
            events_read
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measure("hub, 20 dashboards open");
    let browser = Browser::start().await;
    match &browser {
        Some(browser) => {
            browser
                .client()
                .goto(&format!("http://{authority}/messages"))
                .await
                .expect("open the Messages page in Chromium");
            browser.mark().await;
            report_page(browser, "page in Chromium, opened").await;
        }
        None => println!("Chromium is not installed: the page's memory is not measured"),
    }

    // Ten agents sending.
    let agents: Vec<_> = pairs
        .iter()
        .map(|pair| agent(&authority, pair, &sent, EVERY, load))
        .collect();
    for agent in agents {
        agent.join().expect("an agent");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    measure("hub, 20 dashboards, after the load");
    report_latency("send to the page's update", &latencies(&sent, &seen));
    if let Some(browser) = &browser {
        report_page(browser, "page in Chromium, after the load").await;
        // What one measurement adds by itself (WebDriver's script runs
        // leave a little in the page's heap), for comparison with the
        // soak's samples, which have thousands of updates between them.
        report_page(browser, "page in Chromium, at once again").await;
    }

    // The soak: the dashboards stay open while the ten agents send once a
    // second each, each send timed to the page as before.
    let trickle: Sent = Arc::default();
    let agents: Vec<_> = pairs
        .iter()
        .map(|pair| agent(&authority, pair, &trickle, Duration::from_secs(1), soak))
        .collect();
    let step = soak / SAMPLES;
    for n in 1..=SAMPLES {
        tokio::time::sleep(step).await;
        let at = (step * n).as_secs();
        measure(&format!("hub, 20 dashboards, 10 sends/s, {at} s"));
        let size = std::fs::metadata(&db.path).map_or(0, |file| file.len());
        println!("database, {at} s: {:.1} MiB", size as f64 / 1_048_576.0);
        if let Some(browser) = &browser {
            let latest = trickle.lock().unwrap().keys().max().copied();
            if let Some(latest) = latest {
                shows(browser, latest).await;
            }
            report_page(browser, &format!("page in Chromium, {at} s")).await;
        }
    }
    for agent in agents {
        agent.join().expect("an agent of the soak");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    report_latency(
        "send to the page's update, during the soak",
        &latencies(&trickle, &seen),
    );
    stop.store(true, Ordering::Relaxed);
    let events: u64 = readers
        .into_iter()
        .map(|reader| reader.join().expect("a dashboard"))
        .sum();
    println!("events read by the 20 dashboards: {events}");
    if let Some(browser) = browser {
        assert!(
            browser.still_marked().await,
            "the page in Chromium was reloaded during the run"
        );
        println!("the page in Chromium kept up without a reload");
        browser.close().await;
    }

    // Page weight, with the data of the run.
    println!();
    let asset = |path: &str| Connection::open(&authority).get(path, &[]).body.len();
    let (script, style) = (asset("/assets/app.js"), asset("/assets/style.css"));
    println!("script {script} B, stylesheet {style} B");
    for page in ["team", "tasks", "messages", "audit"] {
        let html = Connection::open(&authority)
            .get(&format!("/{page}"), &[])
            .body
            .len();
        println!(
            "page weight /{page:<9} HTML {html:>6} B, with script and stylesheet {:>6} B ({:.1} KB)",
            html + script + style,
            (html + script + style) as f64 / 1024.0
        );
    }
    server.stop();
}

/// Waits up to 10 s for the page open in `browser` to show message
/// `id`. The script and its selector are the same at every call (the id
/// is the script's argument): the page keeps each selector it has been
/// asked for in a cache on its heap, which would count against the page.
async fn shows(browser: &Browser, id: i64) {
    const SCRIPT: &str = "return Array.from(document.querySelectorAll('[data-message]'))
                            .some((row) => row.dataset.message === String(arguments[0]));";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = browser.client().execute(SCRIPT, vec![json!(id)]).await;
        if matches!(shown, Ok(serde_json::Value::Bool(true))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the page in Chromium did not show message {id} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prints what the page open in `browser` holds: its JavaScript heap after
/// a garbage collection, its DOM elements, and the renderer's memory.
async fn report_page(browser: &Browser, what: &str) {
    let (heap, elements) = browser.page_memory().await;
    let renderer = browser.renderer_memory();
    println!(
        "{what:<44} JS heap {:>7.1} KiB  DOM elements {elements:>5}  renderer VmRSS {:>5.1} MiB ({renderer} kB)",
        heap as f64 / 1024.0,
        renderer as f64 / 1024.0,
    );
}

/// Sent ids and when.
type Sent = Arc<Mutex<HashMap<i64, Instant>>>;

/// An agent over HTTP, an MCP session of its own, sending to its partner
/// every `every` for `duration`; each message id is recorded in `sent`
/// with the instant just before its `tools/call`.
fn agent(
    authority: &str,
    pair: &Pair,
    sent: &Sent,
    every: Duration,
    duration: Duration,
) -> std::thread::JoinHandle<()> {
    let (authority, sent) = (authority.to_owned(), Arc::clone(sent));
    let id = pair.a.conversation_id.to_string();
    let token = pair.a.token.reveal();
    let started = Instant::now();
    std::thread::spawn(move || {
        let mut connection = Connection::open(&authority);
        let mut session = Session::open(&mut connection);
        let mut n = 0;
        while started.elapsed() < duration {
            let at = Instant::now();
            let result = session.call(
                &mut connection,
                "send_to_partner",
                json!({"conversation_id": id, "session_id": "a", "token": token,
                       "message": format!("update {n}")}),
            );
            let message = result["structuredContent"]["message_id"]
                .as_i64()
                .expect("a message id");
            sent.lock().unwrap().insert(message, at);
            n += 1;
            std::thread::sleep(every.saturating_sub(at.elapsed()));
        }
    })
}

/// How long each sent message took to show on the page (`seen`); says how
/// many were sent and shown.
fn latencies(sent: &Sent, seen: &Sent) -> Vec<Duration> {
    let (sent, seen) = (sent.lock().unwrap(), seen.lock().unwrap());
    println!(
        "sends: {}, shown on the Messages page: {}",
        sent.len(),
        sent.keys().filter(|id| seen.contains_key(id)).count()
    );
    sent.iter()
        .filter_map(|(id, at)| Some(seen.get(id)?.saturating_duration_since(*at)))
        .collect()
}
