//! What the operator looks at: `list`, `show`, `status` and `tasks`, as text
//! and as JSON, on conversations the store has made busy.

use std::time::{Duration, Instant};

use bridge_core::{ActionType, NewMessage, NewTask, Status, TaskState, Timestamp};
use bridge_tests::{TempDb, scalar};
use serde_json::Value;

use crate::{Made, ctl, make, millis_ago, table};

const DAY: i64 = 86_400;

fn task(title: &str) -> NewTask {
    NewTask::new(title, format!("Please: {title}."))
}

/// One line of a task table: `#id`, state (with the unassigned mark),
/// conversation, team, attempts, title.
fn task_line(
    id: i64,
    state: &str,
    made: &Made,
    team: &str,
    title: &str,
    state_width: usize,
) -> String {
    format!(
        "{:<4}  {state:<state_width$}  {}  {team:<4}  {:<8}  {title}\n",
        format!("#{id}"),
        made.id,
        1,
    )
}

/// The header of a task table whose widest state is `state_width` wide.
fn task_header(state_width: usize) -> String {
    format!(
        "TASK  {:<state_width$}  CONVERSATION           TEAM  ATTEMPTS  TITLE\n",
        "STATE"
    )
}

#[tokio::test]
async fn list_shows_expiry_liveness_and_counts() {
    let db = TempDb::new();
    let quiet = make(
        &db.path,
        "orchestrator",
        "backend worker",
        &["--team", "core", "--ttl", "10d"],
    );
    let short = make(&db.path, "orchestrator", "worker", &["--ttl", "1s"]);
    let busy = make(
        &db.path,
        "lead",
        "worker",
        &["--team", "core", "--ttl", "10d"],
    );
    let store = db.open().await;
    // quiet: the worker heartbeats and writes; its orchestrator is never heard.
    store.heartbeat(&quiet.credentials("b")).await.unwrap();
    store
        .send(&quiet.credentials("b"), NewMessage::new("ready"))
        .await
        .unwrap();
    // busy: the orchestrator assigns two tasks; its worker is never heard.
    for title in ["one", "two"] {
        store
            .assign_task(&busy.credentials("a"), task(title))
            .await
            .unwrap();
    }
    store.close().await;

    // Until `short` has expired (its TTL is one second).
    let deadline = Instant::now() + Duration::from_secs(60);
    let json = loop {
        let json = ctl(&db.path, &["list", "--json"]).json();
        if json[1]["expired"] == true {
            break json;
        }
        assert!(Instant::now() < deadline, "never expired: {json}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let ids: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [&quiet.id, &short.id, &busy.id], "oldest first");
    assert_eq!(json[0]["expired"], false);
    assert_eq!(json[0]["team"], "core");
    assert_eq!(json[0]["sessions"][0]["alive"], false);
    assert_eq!(json[0]["sessions"][1]["alive"], true);
    assert_eq!(json[0]["sessions"][1]["role"], "backend worker");
    assert!(json[0]["sessions"][1]["last_heartbeat"].is_string());
    assert!(json[0]["sessions"][0]["last_heartbeat"].is_null());
    assert_eq!(json[0]["sessions"][0]["unread"], 1);
    assert_eq!(json[0]["messages"], 1);
    assert_eq!(json[1]["team"], Value::Null);
    assert_eq!(json[2]["open_tasks"], 2);
    assert_eq!(
        json[2]["sessions"][0]["alive"], true,
        "assigning is a sign of life"
    );
    assert_eq!(json[2]["sessions"][1]["alive"], false);

    let stdout = ctl(&db.path, &["list"]).ok();
    assert_eq!(
        stdout.lines().next(),
        Some(
            "CONVERSATION           TEAM  ROLES (A / B)                  EXPIRES  ALIVE (A / B)  MESSAGES  OPEN TASKS"
        )
    );
    let rows = table(&stdout);
    assert_eq!(rows.len(), 3, "{stdout}");
    let expect = |row: usize, cells: [&str; 7]| {
        let columns = [
            "CONVERSATION",
            "TEAM",
            "ROLES (A / B)",
            "EXPIRES",
            "ALIVE (A / B)",
            "MESSAGES",
            "OPEN TASKS",
        ];
        for (column, cell) in columns.iter().zip(cells) {
            assert_eq!(rows[row][*column], cell, "row {row}, {column}:\n{stdout}");
        }
    };
    expect(
        0,
        [
            &quiet.id,
            "core",
            "orchestrator / backend worker",
            "in 9 d",
            "- / alive",
            "1",
            "0",
        ],
    );
    expect(
        1,
        [
            &short.id,
            "",
            "orchestrator / worker",
            "expired",
            "- / -",
            "0",
            "0",
        ],
    );
    // Assigning tells the worker in a message.
    expect(
        2,
        [
            &busy.id,
            "core",
            "lead / worker",
            "in 9 d",
            "alive / -",
            "2",
            "2",
        ],
    );
}

#[tokio::test]
async fn list_on_an_empty_database() {
    let db = TempDb::new();
    db.open().await.close().await;
    assert_eq!(ctl(&db.path, &["list"]).ok(), "No conversations.\n");
    assert_eq!(ctl(&db.path, &["list", "--json"]).ok(), "[]\n");
    assert_eq!(
        ctl(&db.path, &["status"]).ok(),
        "No workers in live conversations.\n"
    );
    assert_eq!(ctl(&db.path, &["tasks"]).ok(), "No tasks.\n");
    assert_eq!(ctl(&db.path, &["audit"]).ok(), "No audit rows.\n");
    assert_eq!(
        ctl(&db.path, &["audit", "verify"]).ok(),
        "audit trail intact: 0 rows, head (empty)\n"
    );
}

#[tokio::test]
async fn show_gives_sessions_messages_with_read_marks_and_tasks() {
    let db = TempDb::new();
    let made = make(&db.path, "orchestrator", "worker", &["--team", "core"]);
    let (a, b) = (made.credentials("a"), made.credentials("b"));
    let store = db.open().await;
    let review = store
        .assign_task(&a, task("Review the parser"))
        .await
        .unwrap();
    let build = store.assign_task(&a, task("Build")).await.unwrap();
    store
        .update_task(&b, review.id, TaskState::InProgress, None)
        .await
        .unwrap();
    // Both sides take in what the tasks said.
    store.check(&a, 100).await.unwrap();
    store.check(&b, 100).await.unwrap();
    let first = store
        .send(&a, NewMessage::new("first line\nsecond line"))
        .await
        .unwrap();
    let second = store.send(&a, NewMessage::new("two")).await.unwrap();
    let third = store.send(&a, NewMessage::new("three")).await.unwrap();
    assert_eq!(
        store.check(&b, 2).await.unwrap().len(),
        2,
        "the worker reads two"
    );
    let mut question = NewMessage::new("which parser?");
    question.action_type = ActionType::Question;
    let fourth = store.send(&b, question).await.unwrap();
    store.set_status(&a, Status::Waiting).await.unwrap();
    store.set_status(&b, Status::Working).await.unwrap();
    store.close().await;
    // Heard from days ago, so that the ages read the same however long
    // the test takes.
    let mut raw = db.raw().await;
    sqlx::query("UPDATE session SET last_heartbeat = NULL, last_seen = $1 WHERE session = 'a'")
        .bind(millis_ago(3 * DAY))
        .execute(&mut raw)
        .await
        .unwrap();
    sqlx::query("UPDATE session SET last_heartbeat = $1, last_seen = $1 WHERE session = 'b'")
        .bind(millis_ago(2 * DAY + 60))
        .execute(&mut raw)
        .await
        .unwrap();
    let total = scalar(&mut raw, "SELECT count(*) FROM message").await;
    let (created_at, expires_at): (i64, i64) =
        sqlx::query_as("SELECT created_at, expires_at FROM conversation")
            .fetch_one(&mut raw)
            .await
            .unwrap();
    let line =
        |read: bool, id: i64, from: &str, to: &str, action: &str, at: Timestamp, text: &str| {
            format!(
                "{} #{id} {from} -> {to} ({action}) {at}: {text}\n",
                if read { " " } else { "*" }
            )
        };
    let messages = [
        line(
            true,
            first.id,
            "a",
            "b",
            "info",
            first.created_at,
            "first line",
        ),
        line(true, second.id, "a", "b", "info", second.created_at, "two"),
        line(false, third.id, "a", "b", "info", third.created_at, "three"),
        line(
            false,
            fourth.id,
            "b",
            "a",
            "question",
            fourth.created_at,
            "which parser?",
        ),
    ];
    let head = format!(
        "conversation {id} (team core)\n\
         created {created}, expires {expires}\n\
         \n\
         SESSION  ROLE          STATUS   HEARTBEAT  LAST CALL  ALIVE  UNREAD\n\
         a        orchestrator  waiting  never      3 d ago    no     1\n\
         b        worker        working  2 d ago    2 d ago    no     1\n\
         \n",
        id = made.id,
        created = Timestamp::from_millis(created_at),
        expires = Timestamp::from_millis(expires_at),
    );
    let tasks = format!(
        "\ntasks:\n{}{}{}",
        task_header(11),
        task_line(
            review.id,
            "in_progress",
            &made,
            "core",
            "Review the parser",
            11
        ),
        task_line(build.id, "open", &made, "core", "Build", 11),
    );

    let stdout = ctl(&db.path, &["show", &made.id, "--messages", "4"]).ok();
    assert_eq!(
        stdout,
        format!(
            "{head}messages ({total} in all, the latest 4 shown; * = not yet received):\n{}{tasks}",
            messages.concat()
        )
    );
    let stdout = ctl(&db.path, &["show", &made.id, "--messages", "2"]).ok();
    assert_eq!(
        stdout,
        format!(
            "{head}messages ({total} in all, the latest 2 shown; * = not yet received):\n{}{tasks}",
            messages[2..].concat()
        )
    );
    // By default the latest 20: here all of them, the tasks' notices first,
    // all read.
    let stdout = ctl(&db.path, &["show", &made.id]).ok();
    assert!(
        stdout.contains(&format!(
            "messages ({total} in all, the latest {total} shown; * = not yet received):\n"
        )),
        "{stdout}"
    );
    assert!(stdout.contains(&messages.concat()), "{stdout}");

    let json = ctl(&db.path, &["show", &made.id, "--json", "--messages", "4"]).json();
    assert_eq!(json["id"], made.id.as_str());
    assert_eq!(json["sessions"][0]["status"], "waiting");
    assert_eq!(json["sessions"][1]["status"], "working");
    assert_eq!(json["sessions"][1]["unread"], 1);
    let shown: Vec<(i64, bool)> = json["recent_messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_i64().unwrap(), m["read"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        shown,
        [
            (first.id, true),
            (second.id, true),
            (third.id, false),
            (fourth.id, false)
        ]
    );
    assert_eq!(
        json["recent_messages"][0]["body"],
        "first line\nsecond line"
    );
    let states: Vec<&str> = json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["in_progress", "open"]);

    let run = ctl(&db.path, &["show", &made.id, "--messages", "0"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.starts_with(
            "error: invalid value '0' for '--messages <MESSAGES>': 0 is not in 1..=1000"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn show_refuses_an_unknown_or_malformed_id() {
    let db = TempDb::new();
    make(&db.path, "orchestrator", "worker", &[]);
    // An unknown conversation exits as a failed authentication would.
    ctl(&db.path, &["show", "conv_0123456789abcdef"])
        .failed(77, "bridgectl: no such conversation: conv_0123456789abcdef");
    ctl(&db.path, &["show", "conv_0123456789abcdef", "--json"])
        .failed(77, "bridgectl: no such conversation: conv_0123456789abcdef");
    for bad in ["conv_xyz", "CONV_0123456789ABCDEF", "0123456789abcdef"] {
        let run = ctl(&db.path, &["show", bad]);
        assert_eq!(run.code, Some(2), "{bad}: {}", run.stderr);
        assert_eq!(run.stdout, "");
        assert_eq!(
            run.stderr.lines().next(),
            Some(
                format!(
                    "error: invalid value '{bad}' for '<ID>': invalid conversation_id: \
                     expected conv_ followed by 16 lowercase hex characters"
                )
                .as_str()
            ),
        );
    }
}

#[tokio::test]
async fn status_shows_each_workers_heartbeat_liveness_and_open_tasks() {
    let db = TempDb::new();
    let alive = make(&db.path, "orchestrator", "worker 0", &["--team", "core"]);
    let silent = make(&db.path, "orchestrator", "worker 1", &["--team", "core"]);
    let never = make(&db.path, "orchestrator", "worker 2", &["--team", "edge"]);
    let gone = make(&db.path, "orchestrator", "worker 3", &["--team", "core"]);
    let store = db.open().await;
    let (a, b) = (alive.credentials("a"), alive.credentials("b"));
    let mut ids = Vec::new();
    for title in ["one", "two", "three"] {
        ids.push(store.assign_task(&a, task(title)).await.unwrap().id);
    }
    store
        .update_task(&b, ids[0], TaskState::InProgress, None)
        .await
        .unwrap();
    store
        .update_task(&b, ids[1], TaskState::InProgress, None)
        .await
        .unwrap();
    store
        .update_task(&b, ids[1], TaskState::Done, Some("done".into()))
        .await
        .unwrap();
    store.heartbeat(&b).await.unwrap();
    store.set_status(&b, Status::Working).await.unwrap();
    store
        .assign_task(&silent.credentials("a"), task("four"))
        .await
        .unwrap();
    store.close().await;
    let mut raw = db.raw().await;
    sqlx::query(
        "UPDATE session SET last_heartbeat = $1, last_seen = NULL, status = 'silent'
         WHERE conversation_id = $2 AND session = 'b'",
    )
    .bind(millis_ago(5 * DAY + 60))
    .bind(&silent.id)
    .execute(&mut raw)
    .await
    .unwrap();
    sqlx::query("UPDATE conversation SET expires_at = $1 WHERE id = $2")
        .bind(millis_ago(60))
        .bind(&gone.id)
        .execute(&mut raw)
        .await
        .unwrap();

    let stdout = ctl(&db.path, &["status"]).ok();
    let rows = table(&stdout);
    let workers: Vec<&str> = rows.iter().map(|row| row["WORKER"].as_str()).collect();
    assert_eq!(
        workers,
        ["worker 0", "worker 1", "worker 2"],
        "not the expired one:\n{stdout}"
    );
    let cells = |row: usize| {
        [
            "CONVERSATION",
            "TEAM",
            "STATUS",
            "HEARTBEAT",
            "ALIVE",
            "OPEN TASKS",
        ]
        .map(|column| rows[row][column].clone())
    };
    let [id, team, status, heartbeat, live, open] = cells(0);
    assert_eq!(
        [&id, &team, &status, &live, &open],
        [&alive.id, "core", "working", "yes", "2"]
    );
    assert!(
        heartbeat.ends_with(" s ago") || heartbeat.ends_with(" min ago"),
        "{heartbeat}"
    );
    assert_eq!(
        cells(1),
        [&silent.id, "core", "silent", "5 d ago", "no", "1"]
    );
    assert_eq!(cells(2), [&never.id, "edge", "-", "never", "no", "0"]);

    let stdout = ctl(&db.path, &["status", "--team", "core"]).ok();
    let workers: Vec<String> = table(&stdout)
        .into_iter()
        .map(|row| row["WORKER"].clone())
        .collect();
    assert_eq!(workers, ["worker 0", "worker 1"]);
    assert_eq!(
        ctl(&db.path, &["status", "--team", "nobody"]).ok(),
        "No workers in live conversations.\n"
    );

    let json = ctl(&db.path, &["status", "--json"]).json();
    let json = json.as_array().unwrap();
    assert_eq!(json.len(), 3);
    assert_eq!(json[0]["conversation_id"], alive.id.as_str());
    assert_eq!(json[0]["alive"], true);
    assert_eq!(json[0]["status"], "working");
    assert_eq!(json[0]["open_tasks"], 2);
    assert!(json[0]["last_heartbeat"].is_string());
    let age = json[1]["heartbeat_age_seconds"].as_u64().unwrap();
    assert!((5 * 86_400..6 * 86_400).contains(&age), "{age}");
    assert_eq!(json[1]["alive"], false);
    assert_eq!(json[2]["team"], "edge");
    assert!(json[2]["last_heartbeat"].is_null());
    assert!(json[2]["heartbeat_age_seconds"].is_null());
    let json = ctl(&db.path, &["status", "--json", "--team", "edge"]).json();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["role"], "worker 2");
}

#[tokio::test]
async fn tasks_lists_every_task_or_one_teams() {
    let db = TempDb::new();
    let core = make(&db.path, "orchestrator", "worker", &["--team", "core"]);
    let edge = make(&db.path, "orchestrator", "worker", &["--team", "edge"]);
    let solo = make(&db.path, "orchestrator", "worker", &[]);
    let store = db.open().await;
    let review = store
        .assign_task(&core.credentials("a"), task("Review"))
        .await
        .unwrap();
    let build = store
        .assign_task(&core.credentials("a"), task("Build it"))
        .await
        .unwrap();
    let deploy = store
        .assign_task(&edge.credentials("a"), task("Deploy"))
        .await
        .unwrap();
    let misc = store
        .assign_task(&solo.credentials("a"), task("Misc"))
        .await
        .unwrap();
    let b = core.credentials("b");
    store
        .update_task(&b, review.id, TaskState::InProgress, None)
        .await
        .unwrap();
    store
        .update_task(&b, build.id, TaskState::InProgress, None)
        .await
        .unwrap();
    store
        .update_task(&b, build.id, TaskState::Done, None)
        .await
        .unwrap();
    store
        .update_task(
            &edge.credentials("a"),
            deploy.id,
            TaskState::Cancelled,
            None,
        )
        .await
        .unwrap();
    store.close().await;

    assert_eq!(
        ctl(&db.path, &["tasks"]).ok(),
        format!(
            "{}{}{}{}{}",
            task_header(11),
            task_line(review.id, "in_progress", &core, "core", "Review", 11),
            task_line(build.id, "done", &core, "core", "Build it", 11),
            task_line(deploy.id, "cancelled", &edge, "edge", "Deploy", 11),
            task_line(misc.id, "open", &solo, "", "Misc", 11),
        )
    );
    assert_eq!(
        ctl(&db.path, &["tasks", "--team", "edge"]).ok(),
        format!(
            "{}{}",
            task_header(9),
            task_line(deploy.id, "cancelled", &edge, "edge", "Deploy", 9),
        )
    );
    assert_eq!(
        ctl(&db.path, &["tasks", "--team", "nobody"]).ok(),
        "No tasks.\n"
    );

    let json = ctl(&db.path, &["tasks", "--json", "--team", "core"]).json();
    let json = json.as_array().unwrap();
    assert_eq!(json.len(), 2);
    assert_eq!(json[0]["id"], review.id);
    assert_eq!(json[0]["title"], "Review");
    assert_eq!(json[0]["body"], "Please: Review.");
    assert_eq!(json[0]["state"], "in_progress");
    assert_eq!(json[0]["conversation_id"], core.id.as_str());
    assert_eq!(json[0]["team"], "core");
    assert_eq!(json[0]["attempts"], 1);
    assert_eq!(json[0]["unassigned"], false);
    assert_eq!(json[1]["state"], "done");
    let json = ctl(&db.path, &["tasks", "--json"]).json();
    assert_eq!(json.as_array().unwrap().len(), 4);
    assert!(json[3]["team"].is_null());
}
