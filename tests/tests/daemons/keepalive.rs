//! `keepalive-daemon`.

use std::collections::BTreeSet;
use std::time::Duration;

use bridge_core::{NewConversation, Store, StoreOptions, Token};
use bridge_tests::daemon::{Daemon, run};
use bridge_tests::{TempDb, pair, pair_of};

use crate::{Hub, Mode, in_both_modes, token_file};

const SECOND: Duration = Duration::from_secs(1);

in_both_modes! {
async fn heartbeats_appear_and_keep_their_rhythm(mode: Mode) {
    let db = TempDb::new();
    let store = db.open().await;
    let hub = Hub::start(mode, &db);
    let conversation = pair(&store).await;
    let tokens = token_file(db.dir.path(), &conversation.b.token);
    let id = conversation.created.id.to_string();
    let mut daemon = Daemon::start(
        "keepalive-daemon",
        &db.path,
        &[
            &id,
            "--token-file",
            tokens.to_str().unwrap(),
            "--interval",
            "200ms",
        ],
        &hub.env(&[]),
    );
    assert!(
        daemon.wait_for_stderr("beating", 10 * SECOND),
        "{}",
        daemon.stderr()
    );
    let mut beats = BTreeSet::new();
    let watching = std::time::Instant::now();
    while watching.elapsed() < Duration::from_millis(1_500) {
        let partner = store.partner_status(&conversation.a).await.unwrap();
        beats.extend(partner.last_heartbeat.map(|at| at.as_millis()));
        assert!(partner.alive);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        beats.len() >= 4,
        "only {} heartbeats in 1.5 s at 200 ms",
        beats.len()
    );
    // Beats are planned 200-220 ms apart, so at most eight fall in 1.5 s
    // (nine if the watch began just before one). A beat delayed by a busy
    // hub may land close to the next planned one, so the gaps themselves are
    // not checked; a burst would exceed the count many times over.
    assert!(
        beats.len() <= 9,
        "{} heartbeats in 1.5 s at 200 ms: {beats:?}",
        beats.len()
    );
    assert!(
        daemon.stderr().contains("0 unread messages"),
        "{}",
        daemon.stderr()
    );
    let (status, _) = daemon.signal("TERM", 5 * SECOND).expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0));
    store.close().await;
}
}

#[tokio::test]
async fn it_waits_for_a_database_created_after_it_started() {
    // The conversation is made in a database elsewhere, then moved to where
    // the daemon waits for it.
    let elsewhere = TempDb::new();
    let store = elsewhere.open().await;
    let conversation = pair(&store).await;
    store.close().await;
    let db = TempDb::new();
    let id = conversation.created.id.to_string();
    let mut daemon = Daemon::start(
        "keepalive-daemon",
        &db.path,
        &[&id, "--interval", "100ms"],
        &[("BRIDGE_TOKEN", &conversation.b.token.reveal())],
    );
    assert!(
        daemon.wait_for_stderr("waiting for the database", 10 * SECOND),
        "{}",
        daemon.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        daemon.stderr().matches("waiting for the database").count(),
        1,
        "said once"
    );
    std::fs::rename(&elsewhere.path, &db.path).unwrap();
    std::fs::rename(
        bridge_core::config::default_key_file(&elsewhere.path),
        bridge_core::config::default_key_file(&db.path),
    )
    .unwrap();
    assert!(
        daemon.wait_for_stderr("beating", 10 * SECOND),
        "{}",
        daemon.stderr()
    );
    let store = Store::open(StoreOptions::new(&db.path)).await.unwrap();
    let conversation = pair_of(conversation.created);
    assert!(
        store
            .partner_status(&conversation.a)
            .await
            .unwrap()
            .last_heartbeat
            .is_some()
    );
    let (status, _) = daemon.signal("TERM", 5 * SECOND).expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0));
    store.close().await;
}

in_both_modes! {
async fn sigterm_and_sigint_stop_it_promptly_with_status_0(mode: Mode) {
    let db = TempDb::new();
    let store = db.open().await;
    let hub = Hub::start(mode, &db);
    let conversation = pair(&store).await;
    let id = conversation.created.id.to_string();
    let token = conversation.b.token.reveal();
    for signal in ["TERM", "INT"] {
        let mut daemon = Daemon::start(
            "keepalive-daemon",
            &db.path,
            &[&id],
            &hub.env(&[("BRIDGE_TOKEN", &token)]),
        );
        assert!(
            daemon.wait_for_stderr("beating", 10 * SECOND),
            "{}",
            daemon.stderr()
        );
        let (status, took) = daemon.signal(signal, 5 * SECOND).expect("exits");
        assert_eq!(status.code(), Some(0), "SIG{signal}: {}", daemon.stderr());
        eprintln!("SIG{signal} to exit: {took:?}");
    }
    store.close().await;
}
}

in_both_modes! {
async fn a_wrong_or_expired_token_exits_with_the_authentication_code(mode: Mode) {
    let db = TempDb::new();
    let store = db.open().await;
    let hub = Hub::start(mode, &db);
    let conversation = pair(&store).await;
    let id = conversation.created.id.to_string();
    let wrong = Token::generate().unwrap().reveal();
    let (code, _, stderr) = run(
        "keepalive-daemon",
        &db.path,
        &[&id],
        &hub.env(&[("BRIDGE_TOKEN", &wrong)]),
    );
    assert_eq!(code, Some(77));
    let said = match mode {
        Mode::Db => format!("keepalive-daemon: invalid token for session b of conversation {id}"),
        Mode::Https => "refused the token (HTTP 401): it is wrong, rotated, or its conversation \
                        expired or was removed"
            .to_owned(),
    };
    assert!(stderr.contains(&said), "{stderr}");
    assert!(!stderr.contains(&wrong));

    let (code, _, stderr) = run(
        "keepalive-daemon",
        &db.path,
        &[&id, "not-a-token"],
        &hub.env(&[]),
    );
    assert_eq!(code, Some(77));
    assert!(
        stderr.contains("a token is 64 hexadecimal characters"),
        "{stderr}"
    );
    assert!(
        stderr.contains("where other users can see it"),
        "a warning for a token in argv: {stderr}"
    );

    let (code, _, stderr) = run("keepalive-daemon", &db.path, &[&id], &hub.env(&[]));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("no token: give it with --token-file PATH, in BRIDGE_TOKEN"),
        "{stderr}"
    );

    let mut short = NewConversation::new("orchestrator", "worker");
    short.ttl = Some(SECOND);
    let expiring = pair_of(store.create_conversation(short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (code, _, stderr) = run(
        "keepalive-daemon",
        &db.path,
        &[expiring.created.id.as_str()],
        &hub.env(&[("BRIDGE_TOKEN", &expiring.b.token.reveal())]),
    );
    assert_eq!(code, Some(77));
    assert!(stderr.contains("expired"), "{stderr}");
    store.close().await;
}
}

in_both_modes! {
/// A token rotated (or a conversation removed) while the daemon runs ends
/// it at its next heartbeat, with the authentication code.
async fn a_token_rotated_while_it_runs_ends_it_with_77(mode: Mode) {
    let db = TempDb::new();
    let store = db.open().await;
    let hub = Hub::start(mode, &db);
    let conversation = pair(&store).await;
    let id = conversation.created.id.to_string();
    let token = conversation.b.token.reveal();
    let mut daemon = Daemon::start(
        "keepalive-daemon",
        &db.path,
        &[&id, "--interval", "200ms"],
        &hub.env(&[("BRIDGE_TOKEN", &token)]),
    );
    assert!(
        daemon.wait_for_stderr("beating", 10 * SECOND),
        "{}",
        daemon.stderr()
    );
    store
        .rotate_tokens(&conversation.created.id, &[bridge_core::SessionId::B])
        .await
        .unwrap();
    let status = daemon.wait(10 * SECOND).expect("it stops by itself");
    assert_eq!(status.code(), Some(77), "{}", daemon.stderr());
    assert!(!daemon.stderr().contains(&token));
    store.close().await;
}
}

in_both_modes! {
/// Under systemd (`Type=notify`, `WatchdogSec=`): READY=1 once running, then
/// WATCHDOG=1 pings, from both daemons. A datagram socket stands in for
/// systemd's. The token is given the original way, after the id.
async fn it_tells_systemd_it_is_ready_and_pings_the_watchdog(mode: Mode) {
    use std::os::unix::net::UnixDatagram;

    let db = TempDb::new();
    let store = db.open().await;
    let hub = Hub::start(mode, &db);
    let conversation = pair(&store).await;
    let id = conversation.created.id.to_string();
    let token = conversation.b.token.reveal();
    for daemon_name in ["keepalive-daemon", "fs-watcher"] {
        let socket_path = db.dir.path().join(format!("{daemon_name}.notify"));
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        socket.set_read_timeout(Some(10 * SECOND)).unwrap();
        let mut daemon = Daemon::start(
            daemon_name,
            &db.path,
            &[&id, &token],
            &hub.env(&[
                ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
                // 400 ms: pings every 200 ms.
                ("WATCHDOG_USEC", "400000"),
            ]),
        );
        let mut received = Vec::new();
        let mut buffer = [0u8; 256];
        while received
            .iter()
            .filter(|m: &&String| m.contains("WATCHDOG=1"))
            .count()
            < 3
        {
            let length = socket.recv(&mut buffer).unwrap_or_else(|_| {
                panic!(
                    "{daemon_name} sent {received:?}; stderr:\n{}",
                    daemon.stderr()
                )
            });
            received.push(String::from_utf8_lossy(&buffer[..length]).trim().to_owned());
        }
        assert_eq!(received[0], "READY=1", "{daemon_name}: {received:?}");
        let (status, _) = daemon.signal("TERM", 5 * SECOND).expect("exits");
        assert_eq!(status.code(), Some(0));
        socket.set_read_timeout(Some(SECOND)).unwrap();
        let mut rest = Vec::new();
        while let Ok(length) = socket.recv(&mut buffer) {
            rest.push(String::from_utf8_lossy(&buffer[..length]).trim().to_owned());
        }
        assert!(
            rest.iter().any(|m| m == "STOPPING=1"),
            "{daemon_name}: {rest:?}"
        );
    }
    store.close().await;
}
}
