//! `bridgectl demo`: the whole system, run as a newcomer runs it.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use bridge_testkit::process::running;
use bridge_tests::TempDb;
use bridge_tests::bin;
use bridge_tests::daemon::run;
use serde_json::Value;

/// The process ids a transcript names, as in `(pid 1234)`.
fn pids(transcript: &str) -> BTreeSet<u32> {
    transcript
        .split("(pid ")
        .skip(1)
        .filter_map(|rest| rest.split(')').next()?.parse().ok())
        .collect()
}

#[test]
fn the_demo_flags_the_silent_worker_moves_its_tasks_and_stops_everything() {
    // BRIDGE_DB is set (by `run`) and must be ignored: the demo works on a
    // temporary database of its own.
    let db = TempDb::new();
    let (code, stdout, stderr) = run("bridgectl", &db.path, &["demo"], &[]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(!db.exists(), "the demo touched BRIDGE_DB");
    // Quiet by default: nothing on stderr when all goes well.
    assert_eq!(stderr, "");

    let lines: Vec<&str> = stdout.lines().collect();
    let said = |who: &str, text: &str| {
        lines
            .iter()
            .filter(|line| line.contains(&format!(" {who:<12} ")) && line.contains(text))
            .count()
    };
    // Every line of the transcript carries the time since the start.
    for line in &lines {
        assert!(
            line.starts_with('[') || line.starts_with("            "),
            "{line}"
        );
    }
    assert_eq!(said("orchestrator", "created conversation"), 3, "{stdout}");
    assert_eq!(said("orchestrator", "assigned task #"), 6, "{stdout}");
    for worker in ["worker 1", "worker 2", "worker 3"] {
        assert_eq!(said(worker, "keepalive-daemon started"), 1, "{stdout}");
        assert_eq!(said(worker, "fs-watcher started"), 1, "{stdout}");
        assert_eq!(said(worker, "in progress; told the orchestrator"), 1);
    }
    assert_eq!(said("worker 3", "goes silent"), 1, "{stdout}");
    assert_eq!(said("watchdog", "flagged worker 3 silent"), 1, "{stdout}");
    // Worker 3 held two tasks; one goes to each of the others, who see it
    // arrive through their fs-watcher; the orchestrator is told of both.
    assert_eq!(said("watchdog", "to worker 1,"), 1, "{stdout}");
    assert_eq!(said("watchdog", "to worker 2,"), 1, "{stdout}");
    assert_eq!(said("watchdog", "worker 3,"), 0, "{stdout}");
    for worker in ["worker 1", "worker 2"] {
        assert_eq!(
            said(worker, "fs-watcher printed message"),
            1,
            "{worker}: {stdout}"
        );
        assert_eq!(
            said("orchestrator", &format!("{worker} now holds tasks")),
            1
        );
    }
    assert_eq!(said("orchestrator", "told: Task #"), 2, "{stdout}");
    assert_eq!(said("demo", "stopped the 8 processes"), 1, "{stdout}");
    assert_eq!(said("audit", "audit rows verifies"), 1, "{stdout}");
    // The final tables: three workers, six tasks, two of them moved.
    assert!(stdout.contains("$ bridgectl status"), "{stdout}");
    assert_eq!(
        lines
            .iter()
            .filter(|line| line.trim_start().starts_with('#') && line.contains(" demo "))
            .count(),
        6,
        "{stdout}"
    );

    // Every process it started (4 bridge-mcp, 3 keepalive-daemon, 3
    // fs-watcher, 1 watchdog-monitor) is gone, and so is its directory.
    let started = pids(&stdout);
    assert_eq!(started.len(), 11, "{stdout}");
    for pid in started {
        assert!(!running(pid), "process {pid} still runs");
    }
    let directory = lines[0]
        .rsplit_once(", ")
        .map(|(_, database)| std::path::Path::new(database.trim()).parent().unwrap())
        .expect("the first line names the database");
    assert!(!directory.exists(), "{} is left", directory.display());
}

#[test]
fn with_json_each_line_of_the_transcript_is_an_object() {
    let db = TempDb::new();
    let (code, stdout, stderr) = run("bridgectl", &db.path, &["--json", "demo"], &[]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let events: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let mut last = 0.0;
    for event in &events {
        let seconds = event["seconds"].as_f64().expect("seconds");
        assert!(seconds >= last, "{events:?}");
        last = seconds;
        assert!(event["who"].is_string() && event["text"].is_string());
    }
    assert!(
        events
            .iter()
            .any(|e| e["who"] == "watchdog" && e["text"].as_str().unwrap().contains("flagged")),
        "{stdout}"
    );
    let status = events
        .iter()
        .find(|e| e["who"] == "bridgectl status")
        .expect("the status table");
    assert_eq!(status["text"].as_str().unwrap().lines().count(), 4);
}

#[test]
fn without_the_other_binaries_beside_it_the_demo_says_how_to_build_them() {
    let alone = tempfile::tempdir().unwrap();
    let copy = alone.path().join("bridgectl");
    std::fs::copy(bin::path("bridgectl"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = std::process::Command::new(&copy)
        .arg("demo")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "bridgectl: the demo needs bridge-mcp, keepalive-daemon, fs-watcher, watchdog-monitor \
             beside bridgectl in {}; build them all with `cargo build --release --workspace --bins`\n",
            alone.path().display()
        )
    );
}

/// `demo --dashboard`: the URL is printed first, the page follows the
/// scenario live (three workers, then worker 3 silent and its tasks with
/// the others), and the hub stays up until Ctrl-C, then is stopped.
#[test]
fn with_dashboard_the_page_follows_the_scenario_until_ctrl_c() {
    use bridge_tests::daemon::Daemon;
    use bridge_tests::http::Connection;
    use std::time::Duration;

    let db = TempDb::new();
    let mut demo = Daemon::start("bridgectl", &db.path, &["demo", "--dashboard"], &[]);
    let mut url = None;
    while let Some(line) = demo.line(Duration::from_secs(20)) {
        if let Some(rest) = line.split("the dashboard: http://").nth(1) {
            url = rest.split('/').next().map(str::to_owned);
            break;
        }
    }
    let authority = url.unwrap_or_else(|| panic!("no dashboard URL: {}", demo.stderr()));
    let mut events = Connection::open(&authority);
    assert_eq!(events.open_events("/events?page=team", &[]), 200);
    let mut saw_three = false;
    let mut saw_move = false;
    while let Some((name, html)) = events.next_event(Duration::from_secs(30)) {
        assert_eq!(name, "page");
        let row = |role: &str| {
            html.split("<tr ")
                .find(|row| row.contains(&format!("data-worker=\"{role}\"")))
                .unwrap_or_default()
                .to_owned()
        };
        saw_three |=
            (1..=3).all(|n| row(&format!("worker {n}")).contains("data-health=\"healthy\""));
        let silent = row("worker 3");
        if saw_three
            && silent.contains("data-health=\"silent\"")
            && !silent.contains("data-task=")
            && format!("{}{}", row("worker 1"), row("worker 2")).contains("data-task=")
        {
            saw_move = true;
            break;
        }
    }
    assert!(
        saw_three && saw_move,
        "three workers, then worker 3's tasks moved"
    );
    let mut waited = false;
    while let Some(line) = demo.line(Duration::from_secs(30)) {
        if line.contains("the dashboard stays up; press Ctrl-C to end") {
            waited = true;
            break;
        }
    }
    assert!(waited, "{}", demo.stderr());
    assert_eq!(Connection::open(&authority).get("/team", &[]).status, 200);
    let (status, _) = demo
        .signal("INT", Duration::from_secs(10))
        .expect("Ctrl-C ends it");
    assert_eq!(status.code(), Some(0), "{}", demo.stderr());
    assert!(
        std::net::TcpStream::connect(&authority).is_err(),
        "the hub was stopped"
    );
}
