//! `fs-watcher`.

use std::time::Duration;

use bridge_core::NewMessage;
use bridge_tests::daemon::Daemon;
use bridge_tests::mcp::{Agent, caller};
use bridge_tests::{TempDb, pair};
use serde_json::{Value, json};

use crate::{Hub, Mode, in_both_modes};

const SECOND: Duration = Duration::from_secs(1);

/// The next line as JSON.
fn next(daemon: &Daemon) -> Value {
    let line = daemon
        .line(10 * SECOND)
        .unwrap_or_else(|| panic!("no line from fs-watcher; stderr:\n{}", daemon.stderr()));
    serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"))
}

in_both_modes! {
async fn a_burst_from_two_processes_arrives_once_each_in_order_and_stays_unread(mode: Mode) {
    let db = TempDb::new();
    let store = db.open().await;
    let hub = Hub::start(mode, &db);
    let conversation = pair(&store).await;
    let id = conversation.created.id.to_string();
    let mut watcher = Daemon::start(
        "fs-watcher",
        &db.path,
        &[&id],
        &hub.env(&[("BRIDGE_TOKEN", &conversation.b.token.reveal())]),
    );
    assert!(
        watcher.wait_for_stderr("watching", 10 * SECOND),
        "{}",
        watcher.stderr()
    );

    // Two other processes (agents' servers, as session a) send 500 each.
    let token_a = conversation.a.token.reveal();
    let senders = (0..2).map(|sender| {
        let (database, id, token) = (db.path.clone(), id.clone(), token_a.clone());
        tokio::spawn(async move {
            let agent = Agent::stdio(&database, &[]).await;
            let mut ids = Vec::new();
            for n in 0..500 {
                let sent = agent
                    .ok(
                        "send_to_partner",
                        caller(
                            &id,
                            "a",
                            &token,
                            json!({"message": format!("{sender}:{n}")}),
                        ),
                    )
                    .await;
                ids.push(sent["message_id"].as_i64().unwrap());
            }
            agent.stop().await;
            ids
        })
    });
    let mut sent = Vec::new();
    for sender in senders {
        sent.extend(sender.await.unwrap());
    }
    sent.sort_unstable();

    let mut seen = Vec::new();
    for _ in 0..1000 {
        let line = next(&watcher);
        assert_eq!(line["from"], "a");
        assert_eq!(line["action_type"], "info");
        assert!(line["timestamp"].is_string());
        seen.push(line["id"].as_i64().unwrap());
    }
    assert_eq!(seen, sent, "every message once, in id order");
    assert!(
        watcher.line(Duration::from_millis(300)).is_none(),
        "nothing more"
    );

    // The agent still receives all 1000.
    let received = store.check(&conversation.b, 1000).await.unwrap();
    assert_eq!(received.iter().map(|m| m.id).collect::<Vec<_>>(), sent);
    let (status, _) = watcher
        .signal("TERM", 5 * SECOND)
        .expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0));
    store.close().await;
}
}

in_both_modes! {
async fn exec_gets_the_message_on_stdin_and_its_details_in_the_environment(mode: Mode) {
    let db = TempDb::new();
    let store = db.open().await;
    let hub = Hub::start(mode, &db);
    let conversation = pair(&store).await;
    let id = conversation.created.id.to_string();
    let out = db.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let command = format!(
        "cat > {out}/$BRIDGE_MESSAGE_ID.txt; env | grep ^BRIDGE_ | sort > {out}/$BRIDGE_MESSAGE_ID.env; exit 3",
        out = out.display()
    );
    let mut watcher = Daemon::start(
        "fs-watcher",
        &db.path,
        &[&id, "--exec", &command, "--format", "text"],
        &hub.env(&[("BRIDGE_TOKEN", &conversation.b.token.reveal())]),
    );
    assert!(
        watcher.wait_for_stderr("watching", 10 * SECOND),
        "{}",
        watcher.stderr()
    );
    let mut question = NewMessage::new("line one\nline two");
    question.action_type = bridge_core::ActionType::Question;
    let sent = store.send(&conversation.a, question).await.unwrap();
    let line = watcher.line(10 * SECOND).expect("a line");
    assert!(line.starts_with(&format!("#{} ", sent.id)), "{line}");
    assert!(
        line.ends_with("from a (question): line one\\nline two"),
        "{line}"
    );

    let text_file = out.join(format!("{}.txt", sent.id));
    let env_file = out.join(format!("{}.env", sent.id));
    assert!(
        watcher.wait_for_stderr("--exec failed", 10 * SECOND),
        "a failing command is logged"
    );
    assert_eq!(
        std::fs::read_to_string(&text_file).unwrap(),
        "line one\nline two"
    );
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        env.contains(&format!("BRIDGE_CONVERSATION_ID={id}\n")),
        "{env}"
    );
    assert!(env.contains("BRIDGE_SESSION=b\n"), "{env}");
    assert!(
        env.contains(&format!("BRIDGE_MESSAGE_ID={}\n", sent.id)),
        "{env}"
    );
    assert!(env.contains("BRIDGE_ACTION_TYPE=question\n"), "{env}");
    assert!(
        !env.contains("BRIDGE_TOKEN"),
        "the token is not passed on: {env}"
    );

    // A failing command is not fatal: the next message is reported too.
    let next = store
        .send(&conversation.a, NewMessage::new("again"))
        .await
        .unwrap();
    let line = watcher.line(10 * SECOND).expect("a second line");
    assert!(line.starts_with(&format!("#{} ", next.id)), "{line}");
    let (status, _) = watcher.signal("TERM", 5 * SECOND).expect("exits");
    assert_eq!(status.code(), Some(0));
    store.close().await;
}
}

in_both_modes! {
async fn it_starts_at_the_unread_or_now_or_where_its_state_file_says(mode: Mode) {
    let db = TempDb::new();
    let store = db.open().await;
    let hub = Hub::start(mode, &db);
    let conversation = pair(&store).await;
    let id = conversation.created.id.to_string();
    let token = conversation.b.token.reveal();
    let first = store
        .send(&conversation.a, NewMessage::new("first"))
        .await
        .unwrap();
    let second = store
        .send(&conversation.a, NewMessage::new("second"))
        .await
        .unwrap();
    // The agent read the first: only the second is unread.
    assert_eq!(
        store.check(&conversation.b, 1).await.unwrap()[0].id,
        first.id
    );

    let state = db.dir.path().join("watcher.state");
    let state_arg = state.to_str().unwrap();
    let mut watcher = Daemon::start(
        "fs-watcher",
        &db.path,
        &[&id, "--state-file", state_arg],
        &hub.env(&[("BRIDGE_TOKEN", &token)]),
    );
    assert_eq!(
        next(&watcher)["id"],
        second.id,
        "starts with what is unread"
    );
    watcher.signal("TERM", 5 * SECOND).expect("exits");
    assert_eq!(
        std::fs::read_to_string(&state).unwrap().trim(),
        second.id.to_string()
    );

    let third = store
        .send(&conversation.a, NewMessage::new("third"))
        .await
        .unwrap();
    let mut watcher = Daemon::start(
        "fs-watcher",
        &db.path,
        &[&id, "--state-file", state_arg],
        &hub.env(&[("BRIDGE_TOKEN", &token)]),
    );
    assert_eq!(
        next(&watcher)["id"],
        third.id,
        "continues after the state file's id"
    );
    watcher.signal("TERM", 5 * SECOND).expect("exits");

    let mut watcher = Daemon::start(
        "fs-watcher",
        &db.path,
        &[&id, "--from-now"],
        &hub.env(&[("BRIDGE_TOKEN", &token)]),
    );
    assert!(watcher.wait_for_stderr("watching", 10 * SECOND));
    assert!(
        watcher.line(Duration::from_millis(300)).is_none(),
        "nothing old with --from-now"
    );
    let fourth = store
        .send(&conversation.a, NewMessage::new("fourth"))
        .await
        .unwrap();
    assert_eq!(next(&watcher)["id"], fourth.id);
    watcher.signal("TERM", 5 * SECOND).expect("exits");

    std::fs::write(&state, "not a number\n").unwrap();
    let mut watcher = Daemon::start(
        "fs-watcher",
        &db.path,
        &[&id, "--state-file", state_arg],
        &hub.env(&[("BRIDGE_TOKEN", &token)]),
    );
    let status = watcher.wait(10 * SECOND).expect("a bad state file ends it");
    assert_eq!(status.code(), Some(1));
    assert!(
        watcher.stderr().contains(&format!(
            "state file {state_arg} does not hold a message id"
        )),
        "{}",
        watcher.stderr()
    );
    store.close().await;
}
}

in_both_modes! {
/// A signal while a command runs stops the watcher at once (the command is
/// killed), and the message comes again at the next start, marked.
async fn a_signal_during_a_command_stops_it_and_the_message_comes_again(mode: Mode) {
    let db = TempDb::new();
    let store = db.open().await;
    let hub = Hub::start(mode, &db);
    let conversation = pair(&store).await;
    let id = conversation.created.id.to_string();
    let sent = store
        .send(&conversation.a, NewMessage::new("slow"))
        .await
        .unwrap();
    let state = db.dir.path().join("watcher.state");
    let state_arg = state.to_str().unwrap();
    let mut watcher = Daemon::start(
        "fs-watcher",
        &db.path,
        &[&id, "--exec", "sleep 60", "--state-file", state_arg],
        &hub.env(&[("BRIDGE_TOKEN", &conversation.b.token.reveal())]),
    );
    let line = next(&watcher);
    assert_eq!(line["id"], sent.id);
    assert!(line.get("redelivered").is_none(), "{line}");
    // --exec is running now.
    let (status, _) = watcher.signal("TERM", 5 * SECOND).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", watcher.stderr());
    assert_eq!(
        std::fs::read_to_string(&state).unwrap().trim(),
        format!("0 {}", sent.id),
        "the message is recorded as being reported"
    );

    let mut watcher = Daemon::start(
        "fs-watcher",
        &db.path,
        &[&id, "--state-file", state_arg],
        &hub.env(&[("BRIDGE_TOKEN", &conversation.b.token.reveal())]),
    );
    let line = next(&watcher);
    assert_eq!(
        (line["id"].as_i64(), &line["redelivered"]),
        (Some(sent.id), &json!(true))
    );
    let (status, _) = watcher.signal("TERM", 5 * SECOND).expect("exits");
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(&state).unwrap().trim(),
        sent.id.to_string()
    );
    store.close().await;
}
}

in_both_modes! {
/// With `--exec` and `--state-file`, a message is recorded as being
/// reported before its command runs, and as reported once it ran: a watcher
/// killed during a command (by systemd's watchdog, or `kill -9`) runs it
/// again at its next start, with `BRIDGE_REDELIVERED=1`, and then goes on.
async fn a_command_cut_short_by_a_crash_runs_again_marked(mode: Mode) {
    let db = TempDb::new();
    let store = db.open().await;
    let hub = Hub::start(mode, &db);
    let conversation = pair(&store).await;
    let id = conversation.created.id.to_string();
    let token = conversation.b.token.reveal();
    let first = store
        .send(&conversation.a, NewMessage::new("first"))
        .await
        .unwrap();
    let state = db.dir.path().join("watcher.state");
    let state_arg = state.to_str().unwrap();
    let runs = db.dir.path().join("runs");
    let pid = db.dir.path().join("command.pid");
    // The command records its message, what the state file says and
    // whether it is a redelivery; the first run hangs until the test kills
    // it.
    let command = format!(
        "echo \"$BRIDGE_MESSAGE_ID $(cat {state_arg}) ${{BRIDGE_REDELIVERED:-0}}\" >> {runs}; \
         if [ ! -e {pid} ]; then echo $$ > {pid}; exec sleep 60; fi",
        runs = runs.display(),
        pid = pid.display()
    );
    let mut watcher = Daemon::start(
        "fs-watcher",
        &db.path,
        &[&id, "--exec", &command, "--state-file", state_arg],
        &hub.env(&[("BRIDGE_TOKEN", &token)]),
    );
    assert_eq!(next(&watcher)["id"], first.id);
    let deadline = std::time::Instant::now() + 10 * SECOND;
    while !std::fs::read_to_string(&pid).is_ok_and(|text| text.ends_with('\n')) {
        assert!(
            std::time::Instant::now() < deadline,
            "the command never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, _) = watcher.signal("KILL", 5 * SECOND).expect("killed");
    assert_eq!(status.code(), None);
    let command_pid: u32 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    bridge_testkit::process::kill(command_pid);

    // Restarted, it runs the cut command again, marked, then goes on.
    let second = store
        .send(&conversation.a, NewMessage::new("second"))
        .await
        .unwrap();
    let mut watcher = Daemon::start(
        "fs-watcher",
        &db.path,
        &[&id, "--exec", &command, "--state-file", state_arg],
        &hub.env(&[("BRIDGE_TOKEN", &token)]),
    );
    let again = next(&watcher);
    assert_eq!(
        (again["id"].as_i64(), &again["redelivered"]),
        (Some(first.id), &json!(true))
    );
    let then = next(&watcher);
    assert_eq!(then["id"], second.id);
    assert!(then.get("redelivered").is_none(), "{then}");
    let deadline = std::time::Instant::now() + 10 * SECOND;
    while std::fs::read_to_string(&runs).unwrap().lines().count() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the last command never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, _) = watcher.signal("TERM", 5 * SECOND).expect("exits");
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap(),
        format!(
            "{a} 0 {a} 0\n{a} 0 {a} 1\n{b} {a} {b} 0\n",
            a = first.id,
            b = second.id
        ),
        "each run saw the state file name its message as being reported"
    );
    assert_eq!(
        std::fs::read_to_string(&state).unwrap().trim(),
        second.id.to_string()
    );
    store.close().await;
}
}
