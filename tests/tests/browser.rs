//! The dashboard in a real browser: headless Chromium
//! ([`bridge_tests::browser`]) on `bridgectl demo --dashboard`, and on a hub
//! that requires a login. What is asserted is what a person would see on
//! the page, found by the attributes the pages carry for it (`data-worker`,
//! `data-health`, `data-task`); that the page was not reloaded is told by a
//! mark the test leaves on it.
//!
//! Each test saves a screenshot under `target/tmp/browser/` (cargo's
//! temporary directory for integration tests, kept after the run so that it
//! can be looked at) and prints its path. Without Chromium installed the
//! tests say so once and pass; `.ci/run` installs it and requires them.

use std::path::PathBuf;
use std::time::Duration;

use bridge_tests::browser::Browser;
use bridge_tests::daemon::Daemon;
use bridge_tests::mcp::HttpServer;
use bridge_tests::{TempDb, access_key, team};
use fantoccini::Locator;
use serde_json::{Value, json};

const SECOND: Duration = Duration::from_secs(1);

/// Saves a screenshot `name` of what `browser` shows (with the store's
/// name, as both runs take them).
async fn screenshot(browser: &Browser, db: &TempDb, name: &str) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let store = if db.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    browser.screenshot(&dir, &format!("{name}-{store}")).await;
}

/// The selector of the team page's row of the worker `role`.
fn worker(role: &str) -> String {
    format!("tr[data-worker=\"{role}\"]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_three_workers_then_the_silent_one_and_its_moved_tasks_live() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let db = TempDb::new();
    let mut demo = Daemon::start("bridgectl", &db.path, &["demo", "--dashboard"], &[]);
    let url = tokio::task::block_in_place(|| {
        while let Some(line) = demo.line(20 * SECOND) {
            if let Some(at) = line.find("http://") {
                return line[at..].split_whitespace().next().map(str::to_owned);
            }
        }
        None
    })
    .unwrap_or_else(|| panic!("no dashboard URL: {}", demo.stderr()));

    // Opened before the scenario starts (the demo waits 5 s for it).
    browser
        .client()
        .goto(&url)
        .await
        .expect("open the dashboard");
    browser
        .wait_for(
            "main[data-events='/events?page=team']",
            10 * SECOND,
            "the team page",
        )
        .await;
    browser.mark().await;
    assert_eq!(
        browser
            .run("return document.querySelector('[data-health=\"silent\"]') === null;")
            .await,
        json!(true),
        "the page was opened before anyone went silent"
    );

    // Three workers, healthy, each with its two tasks.
    for n in 1..=3 {
        let row = worker(&format!("worker {n}"));
        browser
            .wait_for(
                &format!("{row}[data-health='healthy'] [data-task] ~ [data-task]"),
                60 * SECOND,
                &format!("worker {n} healthy with two tasks"),
            )
            .await;
    }
    let held = task_ids(&browser, "worker 3").await;
    assert_eq!(held.len(), 2, "worker 3's tasks: {held:?}");

    // Worker 3 goes silent: marked so, and its tasks, one under each of
    // the others. The page was never reloaded.
    browser
        .wait_for(
            &format!(
                "{}[data-health='silent']:not(:has([data-task]))",
                worker("worker 3")
            ),
            60 * SECOND,
            "worker 3 silent, holding nothing",
        )
        .await;
    for id in &held {
        browser
            .wait_for(
                &format!(
                    ":is({}, {}) [data-task='{id}']",
                    worker("worker 1"),
                    worker("worker 2")
                ),
                10 * SECOND,
                &format!("task #{id} under worker 1 or 2"),
            )
            .await;
    }
    let mut moved_to: Vec<usize> = Vec::new();
    for n in 1..=2 {
        let theirs = task_ids(&browser, &format!("worker {n}")).await;
        moved_to.push(held.iter().filter(|id| theirs.contains(id)).count());
    }
    assert_eq!(moved_to, [1, 1], "one moved task each");
    let health = browser
        .run(
            "return Array.from(document.querySelectorAll('tr[data-worker]'), \
             row => row.dataset.worker + ' ' + row.dataset.health);",
        )
        .await;
    assert_eq!(
        health,
        json!(["worker 1 healthy", "worker 2 healthy", "worker 3 silent"]),
        "{}",
        browser.main().await
    );
    let text = browser.main().await;
    assert!(text.contains("2 healthy, 0 quiet, 1 silent."), "{text}");
    assert!(browser.still_marked().await, "the page was reloaded");
    assert_ne!(
        browser
            .run("return document.body.dataset.updated || '';")
            .await,
        json!(""),
        "the content came over the event stream"
    );
    screenshot(&browser, &db, "demo-silent-worker").await;

    // The demo keeps the hub up until Ctrl-C.
    let waited = tokio::task::block_in_place(|| {
        while let Some(line) = demo.line(30 * SECOND) {
            if line.contains("press Ctrl-C to end") {
                return true;
            }
        }
        false
    });
    assert!(waited, "{}", demo.stderr());
    let (status, _) = tokio::task::block_in_place(|| demo.signal("INT", 10 * SECOND))
        .expect("Ctrl-C ends the demo");
    assert_eq!(status.code(), Some(0), "{}", demo.stderr());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_refuses_a_wrong_key_and_the_page_outlives_a_hub_restart() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &["--require-auth"]);
    let authority = server.authority().to_owned();
    let key = access_key(&db, "operator");
    let store = db.open().await;
    team(&store, "core", 1).await;

    // Not logged in: the login form, which refuses a key it does not know
    // and says why.
    let client = browser.client();
    client
        .goto(&format!("http://{authority}/"))
        .await
        .expect("open the dashboard");
    log_in(&browser, &format!("mcpb_{}", "0".repeat(64))).await;
    browser
        .wait_until(
            "document.getElementById('login-message')?.textContent.startsWith('Not logged in')",
            10 * SECOND,
            "the login form again, saying why",
        )
        .await;
    let said = browser
        .run("return document.getElementById('login-message').textContent;")
        .await;
    assert_eq!(
        said,
        json!(
            "Not logged in: not authenticated: the access key is not known (revoked, or never made)"
        )
    );
    assert_eq!(path(&browser).await, "/login");
    screenshot(&browser, &db, "login-refused").await;

    // The right key: the team page, and a cookie the page cannot read.
    log_in(&browser, &key).await;
    browser
        .wait_for(&worker("worker 0"), 10 * SECOND, "the team page")
        .await;
    assert_eq!(path(&browser).await, "/team");
    let cookies = browser.run("return document.cookie;").await;
    assert_eq!(cookies, json!(""), "the session cookie is HttpOnly");
    browser.mark().await;

    // The hub stops: the page says it is reconnecting; it comes back on
    // the same address and the page follows again by itself.
    server.stop();
    browser
        .wait_for("#live:not([hidden])", 10 * SECOND, "the page notices")
        .await;
    let server = HttpServer::start_on(&authority, &db.path, &["--require-auth"]);
    let later = &team(&store, "more", 1).await[0];
    browser
        .wait_for(
            &format!("tr[data-conversation='{}']", later.a.conversation_id),
            20 * SECOND,
            "a worker created after the restart",
        )
        .await;
    browser
        .wait_for("#live[hidden]", 10 * SECOND, "connected again")
        .await;
    assert!(browser.still_marked().await, "the page was reloaded");
    screenshot(&browser, &db, "after-restart").await;

    browser.close().await;
    store.close().await;
    server.stop();
}

/// The ids of the tasks shown under the worker `role`.
async fn task_ids(browser: &Browser, role: &str) -> Vec<String> {
    let script = format!(
        "return Array.from(document.querySelectorAll('{} [data-task]'), task => task.dataset.task);",
        worker(role)
    );
    match browser.run(&script).await {
        Value::Array(ids) => ids
            .into_iter()
            .filter_map(|id| id.as_str().map(str::to_owned))
            .collect(),
        other => panic!("not a list: {other}"),
    }
}

/// Types `key` into the login form and sends it.
async fn log_in(browser: &Browser, key: &str) {
    browser
        .wait_for("input[name='key']", 10 * SECOND, "the login form")
        .await;
    let client = browser.client();
    let field = client
        .find(Locator::Css("input[name='key']"))
        .await
        .expect("the key field");
    field.send_keys(key).await.expect("type the key");
    client
        .find(Locator::Css("form.login button[type='submit']"))
        .await
        .expect("the button")
        .click()
        .await
        .expect("send the form");
}

/// The path of the page the browser shows.
async fn path(browser: &Browser) -> String {
    browser
        .client()
        .current_url()
        .await
        .expect("the URL")
        .path()
        .to_owned()
}

/// Every test of this binary again, on PostgreSQL.
#[tokio::test]
async fn every_test_on_postgres() {
    bridge_tests::postgres::rerun_on_postgres(
        "every_test_on_postgres",
        &[(
            "the_demo_shows",
            "the demo runs on an SQLite store of its own",
        )],
    )
    .await;
}
