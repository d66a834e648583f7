//! A walk through the store on the default database (`$BRIDGE_DB`, else
//! `~/.local/state/mcp-bridge/bridge.db`): an orchestrator and a worker
//! create a conversation, exchange messages (one carrying a secret, which is
//! redacted), report status, and the audit chain is verified. Prints a
//! transcript with timings.
//!
//! Run with `cargo run --release -p bridge-core --example walkthrough`.

use std::process::ExitCode;
use std::time::Instant;

use bridge_core::config;
use bridge_core::{
    ActionType, NewConversation, NewMessage, SessionId, Status, Store, StoreOptions,
};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("walkthrough: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> bridge_core::Result<()> {
    let path = config::db_path_from_env()?;
    let started = Instant::now();
    let step = |what: &str| println!("[{:>8.2} ms] {what}", started.elapsed().as_secs_f64() * 1e3);

    let store = Store::open(StoreOptions::new(&path)).await?;
    step(&format!("opened {}", store.path().display()));

    let mut new = NewConversation::new("orchestrator", "reviewer");
    new.team = Some("walkthrough".into());
    let created = store.create_conversation(new).await?;
    step(&format!(
        "created {} (expires {}); two 64-hex tokens issued, stored only as HMAC digests",
        created.id, created.expires_at
    ));
    let orchestrator = created.credentials(SessionId::A);
    let worker = created.credentials(SessionId::B);

    store.set_status(&worker, Status::Waiting).await?;
    let mut ask =
        NewMessage::new("Please review src/lib.rs. The staging password=hunter2 must not leak.");
    ask.action_type = ActionType::Question;
    ask.files_involved = vec!["src/lib.rs".into()];
    let sent = store.send(&orchestrator, ask).await?;
    step(&format!(
        "orchestrator sent message {} (redacted: {:?})",
        sent.id, sent.redactions
    ));

    for message in store.check(&worker, 100).await? {
        step(&format!(
            "worker received #{} [{}] {:?}",
            message.id, message.action_type, message.body
        ));
    }
    store.set_status(&worker, Status::Working).await?;
    let mut reply = NewMessage::new("Reviewed: two nits, otherwise fine.");
    reply.action_type = ActionType::Complete;
    store.send(&worker, reply).await?;
    store.set_status(&worker, Status::Complete).await?;

    let partner = store.partner_status(&orchestrator).await?;
    step(&format!(
        "orchestrator sees the {} as {} (alive: {}, heard from {} s ago)",
        partner.role,
        partner.status.map_or("unknown", Status::as_str),
        partner.alive,
        partner.age.map_or(0, |age| age.as_secs())
    ));
    for message in store.check(&orchestrator, 100).await? {
        step(&format!(
            "orchestrator received #{} [{}] {:?}",
            message.id, message.action_type, message.body
        ));
    }
    let history = store.history(&orchestrator, None, 50).await?;
    step(&format!("history holds {} messages", history.len()));

    let report = store.verify_audit().await?;
    match &report.first_bad {
        None => step(&format!(
            "audit chain intact: {} rows, head {}",
            report.rows,
            report.head.as_deref().unwrap_or("-")
        )),
        Some(bad) => step(&format!("audit chain BROKEN at {bad}")),
    }
    store.close().await;
    Ok(())
}
