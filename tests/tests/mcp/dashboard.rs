//! The dashboard at `/` of `bridge-mcp --http`, spoken to as a browser
//! would over HTTP (the browser itself is in `tests/tests/browser`): pages,
//! live updates over server-sent events, the login and its cookie, and
//! what must be refused or escaped.

use std::time::Duration;

use bridge_core::{NewMessage, NewTask};
use bridge_tests::http::Connection;
use bridge_tests::mcp::HttpServer;
use bridge_tests::{TempDb, access, access_key, team};

const SECOND: Duration = Duration::from_secs(1);

/// The next `page` event whose content satisfies `wanted`, within 10 s.
fn page_until(events: &mut Connection, wanted: impl Fn(&str) -> bool) -> String {
    let mut seen = Vec::new();
    while let Some((name, data)) = events.next_event(10 * SECOND) {
        if name == "page" && wanted(&data) {
            return data;
        }
        seen.push(name);
    }
    panic!("no such page event; saw {seen:?}");
}

/// The team page's row of the worker `role`.
fn row(html: &str, role: &str) -> String {
    html.split("<tr ")
        .find(|row| row.contains(&format!("data-worker=\"{role}\"")))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_team_page_follows_a_silence_and_its_moved_tasks_live() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &[]);
    let store = db.open().await;
    let workers = team(&store, "core", 3).await;
    let mut task_ids = Vec::new();
    for n in 0..2 {
        let task = store
            .assign_task(&workers[2].a, NewTask::new(format!("job {n}"), "do it"))
            .await
            .unwrap();
        task_ids.push(task.id);
    }
    for worker in &workers[..2] {
        store.heartbeat(&worker.b).await.unwrap();
    }

    let page = Connection::open(server.authority()).get("/team", &[]);
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    // Not `no-referrer`: under it a browser's login form says `Origin: null`.
    assert_eq!(page.header("referrer-policy"), Some("same-origin"));
    let html = page.text();
    assert!(html.contains("data-events=\"/events?page=team\""), "{html}");
    for n in 0..3 {
        assert!(
            html.contains(&format!("data-worker=\"worker {n}\"")),
            "{html}"
        );
    }

    let mut events = Connection::open(server.authority());
    assert_eq!(events.open_events("/events?page=team", &[]), 200);
    let first = page_until(&mut events, |_| true);
    assert!(
        first.contains("data-worker=\"worker 2\" data-health=\"quiet\""),
        "{first}"
    );

    // A watchdog's verdict, and the moves: the open page hears of both.
    // Worker 2 has been silent for 600 ms, the others were just heard from.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for worker in &workers[..2] {
        store.heartbeat(&worker.b).await.unwrap();
    }
    assert!(
        store
            .mark_silent(&workers[2].a.conversation_id, Duration::ZERO)
            .await
            .unwrap()
    );
    let moved = store
        .reassign_tasks(
            &[workers[2].a.conversation_id.clone()],
            Duration::from_millis(500),
            false,
        )
        .await
        .unwrap();
    assert!(
        moved.iter().all(|step| step.outcome == "moved"),
        "{moved:?}"
    );
    let after = page_until(&mut events, |html| {
        html.contains("data-worker=\"worker 2\" data-health=\"silent\"")
            && !row(html, "worker 2").contains("data-task=")
    });
    let healthy = format!("{}{}", row(&after, "worker 0"), row(&after, "worker 1"));
    for id in &task_ids {
        assert!(healthy.contains(&format!("data-task=\"{id}\"")), "{after}");
    }
    assert!(after.contains("2 healthy, 0 quiet, 1 silent."), "{after}");

    // The tasks page tells each task's history.
    let tasks = Connection::open(server.authority())
        .get("/tasks?team=core", &[])
        .text();
    assert!(tasks.contains("(reassigned)"), "{tasks}");
    store.close().await;
    server.stop();
}

#[tokio::test]
async fn message_text_is_shown_escaped_never_as_markup() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &[]);
    let store = db.open().await;
    let pair = &team(&store, "core", 1).await[0];
    store
        .send(
            &pair.a,
            NewMessage::new("<script>alert('x')</script><img src=x onerror=alert(1)> & done"),
        )
        .await
        .unwrap();
    let html = Connection::open(server.authority())
        .get("/messages", &[])
        .text();
    assert!(
        html.contains(
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt; \
             &amp; done"
        ),
        "{html}"
    );
    assert!(
        !html.contains("<script>alert") && !html.contains("<img"),
        "{html}"
    );
    let audit = Connection::open(server.authority())
        .get("/audit", &[])
        .text();
    assert!(audit.contains("The chain is intact."), "{audit}");
    store.close().await;
    server.stop();
}

#[tokio::test]
async fn with_require_auth_an_access_key_logs_in_once_for_a_sealed_cookie() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &["--require-auth"]);
    let authority = server.authority().to_owned();
    let key = access_key(&db, "operator");
    let store = db.open().await;
    let pair = &team(&store, "core", 1).await[0];
    let origin = format!("http://{authority}");
    let login = |body: &str, origin: &str| {
        let mut connection = Connection::open(&authority);
        connection.send_to(
            "/login",
            None,
            &format!("application/x-www-form-urlencoded\r\nOrigin: {origin}"),
            body.as_bytes(),
        );
        connection.read()
    };

    // Not logged in: the pages send to the login, the stream refuses.
    let page = Connection::open(&authority).get("/team", &[]);
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/login?reason=missing"));
    let form = Connection::open(&authority).get("/login?reason=missing", &[]);
    assert!(
        form.text()
            .contains("Log in with an operator&#39;s access key")
    );
    let mut events = Connection::open(&authority);
    assert_eq!(events.open_events("/events?page=team", &[]), 401);

    // Wrong keys, a session token, another site: refused, and said why.
    let wrong = login(&format!("key=mcpb_{}", "0".repeat(64)), &origin);
    assert_eq!(wrong.status, 401);
    assert!(
        wrong
            .text()
            .contains("Not logged in: not authenticated: the access key is not known"),
        "{}",
        wrong.text()
    );
    let garbage = login("key=hello", &origin);
    assert_eq!(garbage.status, 401);
    assert!(
        !garbage.text().contains("hello"),
        "the input is not repeated"
    );
    let token = login(&format!("key={}", pair.b.token.reveal()), &origin);
    assert_eq!(token.status, 401);
    assert!(token.text().contains("needs an operator&#39;s access key"));
    let cross = login(&format!("key={key}"), "http://evil.example");
    assert_eq!(cross.status, 403);
    assert_eq!(
        cross.text(),
        "Forbidden: a form sent from another site (its Origin is not this hub)"
    );

    // The good key: a cookie that opens the pages.
    let good = login(&format!("key={key}"), &origin);
    assert_eq!(good.status, 303, "{}", good.text());
    let cookie = good.header("set-cookie").expect("a cookie").to_owned();
    assert!(
        cookie.contains("; HttpOnly") && cookie.contains("; SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    assert!(!cookie.contains(&key));
    let value = cookie.split(';').next().unwrap().to_owned();
    let with = |value: &str| Connection::open(&authority).get("/team", &[("Cookie", value)]);
    assert_eq!(with(&value).status, 200);
    let mut events = Connection::open(&authority);
    assert_eq!(
        events.open_events("/events?page=team", &[("Cookie", &value)]),
        200
    );
    assert!(events.next_event(10 * SECOND).is_some());

    // A forged cookie: one character of the seal changed.
    let mut forged = value.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let refused = with(&forged);
    assert_eq!(refused.header("location"), Some("/login?reason=forged"));

    // Across a restart of the hub, the cookie still opens the pages.
    server.stop();
    let server = HttpServer::start_on(&authority, &db.path, &["--require-auth"]);
    assert_eq!(with(&value).status, 200);

    // Revoking the key ends its sessions, open streams included.
    let mut events = Connection::open(&authority);
    assert_eq!(
        events.open_events("/events?page=team", &[("Cookie", &value)]),
        200
    );
    assert!(events.next_event(10 * SECOND).is_some());
    access(&db, &["revoke", "operator"]);
    let refused = with(&value);
    assert_eq!(refused.header("location"), Some("/login?reason=revoked"));
    store
        .send(&pair.a, NewMessage::new("wake the stream"))
        .await
        .unwrap();
    let mut names = Vec::new();
    while let Some((name, _)) = events.next_event(10 * SECOND) {
        names.push(name);
    }
    assert_eq!(names.last().map(String::as_str), Some("login"), "{names:?}");

    let text = server.stop();
    assert!(!text.contains(&key), "the key is never logged");
    store.close().await;
}
