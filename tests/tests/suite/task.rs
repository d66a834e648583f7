//! Tasks: assignment, updates and who may make them, silence, and moving a
//! silent worker's tasks to the healthy workers of its team.

use std::collections::BTreeMap;
use std::time::Duration;

use bridge_core::{
    ActionType, ConversationId, Credentials, Error, Message, NewTask, Sender, Status, Store,
    TaskState,
};
use bridge_tests::{TempDb, pair, scalar, team};
use serde_json::json;

/// The silence threshold of these tests: short, so that a test can wait it
/// out, and long enough that a healthy worker stays healthy through a test's
/// work on a loaded machine (300 ms was not, with the PostgreSQL half
/// running beside).
const THRESHOLD: Duration = Duration::from_secs(1);

fn task(title: &str) -> NewTask {
    NewTask::new(title, format!("Do {title}."))
}

/// Waits out the silence threshold, then has `healthy` heartbeat.
async fn silence(store: &Store, healthy: &[&Credentials]) {
    tokio::time::sleep(THRESHOLD + Duration::from_millis(100)).await;
    for credentials in healthy {
        store.heartbeat(credentials).await.unwrap();
    }
}

/// The messages of a session, consumed.
async fn inbox(store: &Store, credentials: &Credentials) -> Vec<Message> {
    store.check(credentials, 1000).await.unwrap()
}

#[tokio::test]
async fn assigning_tells_the_worker_and_updates_tell_the_orchestrator() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;

    let assigned = store
        .assign_task(&conversation.a, task("the parser"))
        .await
        .unwrap();
    assert_eq!(assigned.state, TaskState::Open);
    assert_eq!(assigned.attempts, 1);
    assert_eq!(assigned.conversation_id, conversation.created.id);

    let told = inbox(&store, &conversation.b).await;
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].from, Sender::System);
    assert_eq!(told[0].action_type, ActionType::Info);
    assert_eq!(
        told[0].metadata.as_ref().unwrap()["task_id"],
        json!(assigned.id)
    );
    assert!(told[0].body.contains("the parser") && told[0].body.contains("Do the parser."));
    assert!(
        inbox(&store, &conversation.a).await.is_empty(),
        "the assigner is not told of its own assignment"
    );

    let started = store
        .update_task(&conversation.b, assigned.id, TaskState::InProgress, None)
        .await
        .unwrap();
    assert_eq!(started.state, TaskState::InProgress);
    let done = store
        .update_task(
            &conversation.b,
            assigned.id,
            TaskState::Done,
            Some("merged in 3 commits".into()),
        )
        .await
        .unwrap();
    assert_eq!(done.state, TaskState::Done);
    assert_eq!(done.note.as_deref(), Some("merged in 3 commits"));

    let told = inbox(&store, &conversation.a).await;
    let states: Vec<_> = told
        .iter()
        .map(|m| m.metadata.as_ref().unwrap()["state"].clone())
        .collect();
    assert_eq!(states, [json!("in_progress"), json!("done")]);
    assert!(told.iter().all(|m| m.from == Sender::System));
    assert!(told[1].body.contains("merged in 3 commits"));

    for side in [&conversation.a, &conversation.b] {
        let listed = store.list_tasks(side, None).await.unwrap();
        assert_eq!(listed, std::slice::from_ref(&done));
    }
    let report = store.verify_audit().await.unwrap();
    assert!(report.is_intact());
    let mut raw = db.raw().await;
    assert_eq!(
        scalar(
            &mut raw,
            "SELECT count(*) FROM audit WHERE action IN ('task_assigned', 'task_updated')"
        )
        .await,
        3
    );
    assert_eq!(
        scalar(
            &mut raw,
            "SELECT count(*) FROM task_assignment WHERE ended_by = 'done' AND ended_at IS NOT NULL"
        )
        .await,
        1
    );
    store.close().await;
}

#[tokio::test]
async fn list_tasks_filters_by_state() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let mut ids = Vec::new();
    for title in ["one", "two", "three"] {
        ids.push(
            store
                .assign_task(&conversation.a, task(title))
                .await
                .unwrap()
                .id,
        );
    }
    store
        .update_task(&conversation.b, ids[1], TaskState::InProgress, None)
        .await
        .unwrap();
    store
        .update_task(&conversation.a, ids[2], TaskState::Cancelled, None)
        .await
        .unwrap();
    let titles = |tasks: Vec<bridge_core::Task>| -> Vec<String> {
        tasks.into_iter().map(|task| task.title).collect()
    };
    let b = &conversation.b;
    assert_eq!(
        titles(store.list_tasks(b, None).await.unwrap()),
        ["one", "two", "three"]
    );
    assert_eq!(
        titles(store.list_tasks(b, Some(TaskState::Open)).await.unwrap()),
        ["one"]
    );
    assert_eq!(
        titles(
            store
                .list_tasks(b, Some(TaskState::InProgress))
                .await
                .unwrap()
        ),
        ["two"]
    );
    assert_eq!(
        titles(
            store
                .list_tasks(b, Some(TaskState::Cancelled))
                .await
                .unwrap()
        ),
        ["three"]
    );
    assert!(
        store
            .list_tasks(b, Some(TaskState::Done))
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
}

#[tokio::test]
async fn only_the_orchestrator_assigns_and_nobody_touches_another_conversations_tasks() {
    let db = TempDb::new();
    let store = db.open().await;
    let mine = pair(&store).await;
    let theirs = pair(&store).await;

    let error = store.assign_task(&mine.b, task("x")).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "not allowed: only session a (the orchestrator) assigns tasks"
    );

    let id = store.assign_task(&mine.a, task("mine")).await.unwrap().id;
    for stranger in [&theirs.a, &theirs.b] {
        let error = store
            .update_task(stranger, id, TaskState::Done, None)
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("no such task in conversation {}: #{id}", theirs.created.id)
        );
        assert!(store.list_tasks(stranger, None).await.unwrap().is_empty());
    }
    let error = store
        .update_task(&mine.b, 999, TaskState::Done, None)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::NoSuchTask { task_id: 999, .. }));

    let error = store
        .update_task(&mine.b, id, TaskState::Cancelled, None)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "not allowed: task #{id} is open; the worker (session b) moves a task from open to in_progress, and on to done or failed"
        )
    );
    let error = store
        .update_task(&mine.a, id, TaskState::Done, None)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "not allowed: task #{id} is open; the orchestrator (session a) can only cancel an open or in-progress task"
        )
    );
    store
        .update_task(&mine.b, id, TaskState::Failed, Some("no disk".into()))
        .await
        .unwrap();
    let error = store
        .update_task(&mine.b, id, TaskState::InProgress, None)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with(&format!("not allowed: task #{id} is failed;"))
    );

    let wrong = Credentials {
        token: theirs.a.token.clone(),
        ..mine.a.clone()
    };
    let error = store.assign_task(&wrong, task("forged")).await.unwrap_err();
    assert!(matches!(error, Error::InvalidToken { .. }));
    let error = store.list_tasks(&wrong, None).await.unwrap_err();
    assert!(matches!(error, Error::InvalidToken { .. }));

    let mut raw = db.raw().await;
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM task").await, 1);
    assert_eq!(
        scalar(&mut raw, "SELECT count(*) FROM task WHERE state = 'failed'").await,
        1
    );
    store.close().await;
}

#[tokio::test]
async fn task_text_is_bounded_and_redacted() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let cases = [
        (
            NewTask::new("   ", "b"),
            "invalid title: must be 1 to 200 characters, got 0",
        ),
        (
            NewTask::new("t".repeat(201), "b"),
            "invalid title: must be 1 to 200 characters, got 201",
        ),
        (NewTask::new("t", " "), "invalid body: must not be empty"),
        (
            NewTask::new("t", "b".repeat(50_001)),
            "invalid body: must be at most 50000 characters, got 50001",
        ),
    ];
    for (new, expected) in cases {
        let error = store.assign_task(&conversation.a, new).await.unwrap_err();
        assert_eq!(error.to_string(), expected);
    }
    let error = store
        .update_task(
            &conversation.b,
            1,
            TaskState::Done,
            Some("n".repeat(10_001)),
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid note: must be at most 10000 characters, got 10001"
    );

    let secret = "ghp_0123456789abcdefghijABCDEFGHIJ012345";
    let assigned = store
        .assign_task(
            &conversation.a,
            NewTask::new(
                format!("rotate {secret}"),
                format!("use password=hunter22 and {secret}"),
            ),
        )
        .await
        .unwrap();
    assert!(!assigned.title.contains(secret) && !assigned.body.contains(secret));
    assert!(!assigned.body.contains("hunter22"));
    let told = inbox(&store, &conversation.b).await;
    assert!(!told[0].body.contains(secret));
    let mut raw = db.raw().await;
    assert_eq!(
        scalar(
            &mut raw,
            &format!(
                "SELECT count(*) FROM task WHERE redacted AND title || body NOT LIKE '%{secret}%'"
            )
        )
        .await,
        1
    );
    store.close().await;
}

#[tokio::test]
async fn a_silent_workers_tasks_move_to_the_least_loaded_healthy_workers() {
    let db = TempDb::new();
    let store = db.open().await;
    let workers = team(&store, "core", 3).await;
    let (silent, healthy) = (&workers[0], &workers[1..]);
    let elsewhere = team(&store, "other", 1).await;
    store.heartbeat(&elsewhere[0].b).await.unwrap();

    let mut held = Vec::new();
    for n in 0..5 {
        held.push(
            store
                .assign_task(&silent.a, task(&format!("s{n}")))
                .await
                .unwrap()
                .id,
        );
    }
    store
        .update_task(&silent.b, held[0], TaskState::InProgress, None)
        .await
        .unwrap();
    store
        .update_task(&silent.b, held[4], TaskState::Done, None)
        .await
        .unwrap();
    // The second healthy worker starts with two tasks, the first with none.
    for title in ["h0", "h1"] {
        store.assign_task(&healthy[1].a, task(title)).await.unwrap();
    }
    silence(&store, &[&healthy[0].b, &healthy[1].b, &elsewhere[0].b]).await;
    for pair in workers.iter().chain(&elsewhere) {
        inbox(&store, &pair.a).await;
        inbox(&store, &pair.b).await;
    }

    let scan = store.scan_workers(THRESHOLD, Some("core")).await.unwrap();
    let flagged: Vec<&ConversationId> = scan.silent.iter().map(|w| &w.conversation_id).collect();
    assert_eq!(flagged, [&silent.created.id]);
    assert!(scan.back.is_empty());
    assert!(
        store
            .mark_silent(&silent.created.id, THRESHOLD)
            .await
            .unwrap()
    );

    let moved = store
        .reassign_tasks(std::slice::from_ref(&silent.created.id), THRESHOLD, false)
        .await
        .unwrap();
    assert_eq!(
        moved.iter().map(|m| m.task_id).collect::<Vec<_>>(),
        held[..4],
        "the four open or in-progress tasks, not the done one"
    );
    assert!(moved.iter().all(|m| m.outcome == "moved"));
    let mut landed: BTreeMap<&ConversationId, usize> = BTreeMap::new();
    for m in &moved {
        *landed.entry(m.to.as_ref().unwrap()).or_default() += 1;
    }
    // Each task goes to the least loaded: the first worker takes two, then
    // they alternate.
    assert_eq!(landed[&healthy[0].created.id], 3);
    assert_eq!(landed[&healthy[1].created.id], 1);
    assert!(
        !landed.contains_key(&elsewhere[0].created.id),
        "other teams are left alone"
    );

    for (pair, count) in [(&healthy[0], 3), (&healthy[1], 1)] {
        let told = inbox(&store, &pair.b).await;
        assert_eq!(told.len(), count);
        assert!(
            told.iter().all(|m| m.from == Sender::System
                && m.metadata.as_ref().unwrap()["event"] == "reassigned")
        );
        let open = store
            .list_tasks(&pair.b, Some(TaskState::Open))
            .await
            .unwrap();
        assert_eq!(open.len(), 3, "balanced: three open tasks each");
    }
    let told = inbox(&store, &silent.b).await;
    assert_eq!(told.len(), 4, "the silent worker is told to stop");
    assert!(
        told.iter()
            .all(|m| m.metadata.as_ref().unwrap()["event"] == "taken_away")
    );
    let told = inbox(&store, &silent.a).await;
    assert_eq!(told.len(), 4, "the orchestrator hears of each move");
    assert!(
        told.iter()
            .all(|m| m.body.contains("moved to conversation"))
    );
    let left = store.list_tasks(&silent.a, None).await.unwrap();
    assert_eq!(left.iter().map(|t| t.id).collect::<Vec<_>>(), [held[4]]);

    let task = store
        .list_tasks(&healthy[0].b, None)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.id == held[0])
        .unwrap();
    assert_eq!((task.state, task.attempts), (TaskState::Open, 2));

    let again = store
        .reassign_tasks(std::slice::from_ref(&silent.created.id), THRESHOLD, false)
        .await
        .unwrap();
    assert!(again.is_empty(), "a second run changes nothing");
    assert!(
        !store
            .mark_silent(&silent.created.id, THRESHOLD)
            .await
            .unwrap(),
        "one alert per silence"
    );

    let mut raw = db.raw().await;
    assert_eq!(
        scalar(
            &mut raw,
            "SELECT count(*) FROM task_assignment WHERE ended_by = 'reassigned'"
        )
        .await,
        4
    );
    assert_eq!(
        scalar(
            &mut raw,
            "SELECT count(*) FROM task_assignment WHERE ended_at IS NULL"
        )
        .await,
        6,
        "the four moved and the two others have one current assignment each"
    );
    assert_eq!(
        scalar(
            &mut raw,
            "SELECT count(*) FROM audit WHERE action = 'task_reassigned'"
        )
        .await,
        4
    );
    assert!(store.verify_audit().await.unwrap().is_intact());
    store.close().await;
}

#[tokio::test]
async fn with_no_healthy_worker_tasks_stay_unassigned_and_the_orchestrator_is_told_once() {
    let db = TempDb::new();
    let store = db.open().await;
    let workers = team(&store, "lonely", 2).await;
    let id = store
        .assign_task(&workers[0].a, task("t"))
        .await
        .unwrap()
        .id;
    // The other worker never connected: not alive, so it takes nothing.
    silence(&store, &[]).await;

    let from = [workers[0].created.id.clone()];
    let first = store.reassign_tasks(&from, THRESHOLD, false).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].to.as_ref(), first[0].outcome),
        (None, "marked unassigned")
    );
    let told = inbox(&store, &workers[0].a).await;
    assert_eq!(told.len(), 1);
    assert!(told[0].body.contains("no alive worker"));
    let listed = store.list_tasks(&workers[0].a, None).await.unwrap();
    assert!(listed[0].unassigned);
    assert_eq!(listed[0].conversation_id, workers[0].created.id);

    let second = store.reassign_tasks(&from, THRESHOLD, false).await.unwrap();
    assert_eq!(second[0].outcome, "still unassigned");
    assert!(inbox(&store, &workers[0].a).await.is_empty(), "told once");

    // A worker comes alive: the task moves, and is no longer unassigned.
    store.heartbeat(&workers[1].b).await.unwrap();
    let third = store.reassign_tasks(&from, THRESHOLD, false).await.unwrap();
    assert_eq!(third[0].to.as_ref(), Some(&workers[1].created.id));
    let moved = store.list_tasks(&workers[1].b, None).await.unwrap();
    assert_eq!((moved[0].id, moved[0].unassigned), (id, false));
    store.close().await;
}

#[tokio::test]
async fn a_dry_run_plans_and_changes_nothing() {
    let db = TempDb::new();
    let store = db.open().await;
    let workers = team(&store, "core", 2).await;
    for n in 0..3 {
        store
            .assign_task(&workers[0].a, task(&format!("{n}")))
            .await
            .unwrap();
    }
    silence(&store, &[&workers[1].b]).await;
    let mut raw = db.raw().await;
    let audits = scalar(&mut raw, "SELECT count(*) FROM audit").await;
    let plan = store
        .reassign_tasks(&[workers[0].created.id.clone()], THRESHOLD, true)
        .await
        .unwrap();
    assert_eq!(plan.len(), 3);
    assert!(
        plan.iter()
            .all(|p| p.outcome == "planned" && p.to.as_ref() == Some(&workers[1].created.id))
    );
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM audit").await, audits);
    assert_eq!(
        scalar(&mut raw, "SELECT count(*) FROM task WHERE attempts > 1").await,
        0
    );
    store.close().await;
}

#[tokio::test]
async fn silence_is_marked_once_and_a_return_is_seen() {
    let db = TempDb::new();
    let store = db.open().await;
    let workers = team(&store, "core", 2).await;
    store.heartbeat(&workers[0].b).await.unwrap();
    silence(&store, &[&workers[1].b]).await;

    let scan = store.scan_workers(THRESHOLD, None).await.unwrap();
    assert_eq!(scan.silent.len(), 1);
    assert_eq!(scan.silent[0].role, "worker 0");
    assert!(
        store
            .mark_silent(&workers[0].created.id, THRESHOLD)
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_silent(&workers[0].created.id, THRESHOLD)
            .await
            .unwrap()
    );
    let status = store.partner_status(&workers[0].a).await.unwrap();
    assert_eq!(status.status, Some(Status::Silent));
    // A healthy worker is not marked, whatever the caller claims.
    assert!(
        !store
            .mark_silent(&workers[1].created.id, THRESHOLD)
            .await
            .unwrap()
    );

    // Still silent on the next scan, but no longer "back".
    let scan = store.scan_workers(THRESHOLD, None).await.unwrap();
    assert_eq!((scan.silent.len(), scan.back.len()), (1, 0));
    assert_eq!(scan.silent[0].status, Some(Status::Silent));

    store.heartbeat(&workers[0].b).await.unwrap();
    let scan = store.scan_workers(THRESHOLD, None).await.unwrap();
    assert!(scan.silent.is_empty());
    assert_eq!(scan.back.len(), 1);
    assert!(store.mark_recovered(&workers[0].created.id).await.unwrap());
    assert!(!store.mark_recovered(&workers[0].created.id).await.unwrap());
    let status = store.partner_status(&workers[0].a).await.unwrap();
    assert_eq!(status.status, Some(Status::Active));
    assert!(
        store
            .scan_workers(THRESHOLD, None)
            .await
            .unwrap()
            .back
            .is_empty()
    );

    let mut raw = db.raw().await;
    assert_eq!(
        scalar(
            &mut raw,
            "SELECT count(*) FROM audit WHERE action IN ('worker_silent', 'worker_recovered')"
        )
        .await,
        2
    );
    assert!(store.verify_audit().await.unwrap().is_intact());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reassignments_move_each_task_exactly_once() {
    let db = TempDb::new();
    let setup = db.open().await;
    let workers = team(&setup, "core", 5).await;
    let silent: Vec<ConversationId> = workers[..2].iter().map(|p| p.created.id.clone()).collect();
    for n in 0..200 {
        setup
            .assign_task(&workers[n % 2].a, task(&format!("t{n}")))
            .await
            .unwrap();
    }
    silence(&setup, &[&workers[2].b, &workers[3].b, &workers[4].b]).await;

    let mut runs = Vec::new();
    for _ in 0..2 {
        let store = Store::open(db.options()).await.unwrap();
        let silent = silent.clone();
        runs.push(tokio::spawn(async move {
            let moved = store
                .reassign_tasks(&silent, THRESHOLD, false)
                .await
                .unwrap();
            store.close().await;
            moved
        }));
    }
    let mut moved_by_some_run = BTreeMap::new();
    for run in runs {
        for m in run.await.unwrap() {
            if m.outcome == "moved" {
                *moved_by_some_run.entry(m.task_id).or_insert(0) += 1;
            } else {
                assert_eq!(m.outcome, "skipped");
            }
        }
    }
    assert_eq!(moved_by_some_run.len(), 200);
    assert!(moved_by_some_run.values().all(|&runs| runs == 1));

    let mut raw = db.raw().await;
    assert_eq!(
        scalar(
            &mut raw,
            "SELECT count(*) FROM task WHERE attempts = 2 AND conversation_id NOT IN
             (SELECT id FROM conversation WHERE role_b IN ('worker 0', 'worker 1'))"
        )
        .await,
        200
    );
    assert_eq!(
        scalar(
            &mut raw,
            "SELECT count(*) FROM task_assignment WHERE ended_at IS NULL"
        )
        .await,
        200,
        "one current assignment per task"
    );
    assert_eq!(
        scalar(&mut raw, "SELECT count(*) FROM task_assignment").await,
        400
    );
    let mut told = 0;
    for pair in &workers[2..] {
        told += inbox(&setup, &pair.b).await.len();
    }
    assert_eq!(told, 200, "each new worker is told once per task");
    assert!(setup.verify_audit().await.unwrap().is_intact());
    setup.close().await;
}

#[tokio::test]
async fn a_worker_heard_from_again_keeps_its_tasks_unless_drained() {
    let db = TempDb::new();
    let store = db.open().await;
    let workers = team(&store, "core", 2).await;
    let id = store
        .assign_task(&workers[0].a, task("t"))
        .await
        .unwrap()
        .id;
    silence(&store, &[]).await;
    let from = [workers[0].created.id.clone()];
    // Nobody healthy: marked unassigned.
    let first = store.reassign_tasks(&from, THRESHOLD, false).await.unwrap();
    assert_eq!(first[0].outcome, "marked unassigned");

    // The worker comes back and reports: the task has a worker again, and
    // a reassignment (planned while it was quiet, say) leaves it.
    store
        .update_task(&workers[0].b, id, TaskState::InProgress, None)
        .await
        .unwrap();
    let listed = store.list_tasks(&workers[0].a, None).await.unwrap();
    assert!(!listed[0].unassigned);
    store.heartbeat(&workers[1].b).await.unwrap();
    let second = store.reassign_tasks(&from, THRESHOLD, false).await.unwrap();
    assert_eq!(second[0].outcome, "worker back");
    assert_eq!(
        store.list_tasks(&workers[0].b, None).await.unwrap().len(),
        1
    );

    // An operator draining the worker moves it anyway.
    let drained = store.drain_tasks(&from, THRESHOLD, false).await.unwrap();
    assert_eq!(drained[0].outcome, "moved");
    assert_eq!(drained[0].to.as_ref(), Some(&workers[1].created.id));
    assert!(store.verify_audit().await.unwrap().is_intact());
    store.close().await;
}
