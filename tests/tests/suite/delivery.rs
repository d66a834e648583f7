//! Delivery: what a consuming read hands out stays pending until confirmed,
//! comes again (marked) until it is, and is never lost.

use bridge_core::{Error, NewMessage, Store};
use bridge_tests::{Pair, TempDb, pair, scalar};

/// Sends `count` messages from a to b; returns their ids.
async fn send(store: &Store, conversation: &Pair, count: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for n in 0..count {
        let sent = store
            .send(&conversation.a, NewMessage::new(format!("m{n}")))
            .await
            .unwrap();
        ids.push(sent.id);
    }
    ids
}

fn ids(messages: &[bridge_core::Message]) -> Vec<i64> {
    messages.iter().map(|message| message.id).collect()
}

#[tokio::test]
async fn what_is_not_confirmed_comes_again_marked_until_it_is() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let sent = send(&store, &conversation, 3).await;

    let first = store.deliver(&conversation.b, None, 100).await.unwrap();
    assert_eq!(ids(&first), sent);
    assert!(first.iter().all(|message| !message.redelivered));

    // No confirmation (a client that lost the answer): the same again, marked.
    let again = store.deliver(&conversation.b, None, 100).await.unwrap();
    assert_eq!(ids(&again), sent);
    assert!(again.iter().all(|message| message.redelivered));
    assert_eq!(
        store.peek(&conversation.b, 100).await.unwrap().len(),
        3,
        "peek shows what is not confirmed"
    );

    // Confirmed up to the second: the third comes again, then new ones.
    let more = send(&store, &conversation, 1).await;
    let next = store
        .deliver(&conversation.b, Some(sent[1]), 100)
        .await
        .unwrap();
    assert_eq!(ids(&next), vec![sent[2], more[0]]);
    assert_eq!(
        next.iter().map(|m| m.redelivered).collect::<Vec<_>>(),
        vec![true, false]
    );

    // Everything confirmed: nothing more, and the summary agrees.
    assert!(
        store
            .deliver(&conversation.b, Some(more[0]), 100)
            .await
            .unwrap()
            .is_empty()
    );
    let summary = store.inbox_summary(&conversation.b).await.unwrap();
    assert_eq!(
        (summary.unread, summary.acked_id, summary.delivered_id),
        (0, more[0], more[0])
    );
    store.close().await;
}

#[tokio::test]
async fn a_limit_hands_out_pending_messages_first_and_in_order() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let sent = send(&store, &conversation, 5).await;
    let handed = store.deliver(&conversation.b, None, 3).await.unwrap();
    assert_eq!(ids(&handed), sent[..3]);
    // The client lost them: a read of two gets the first two again.
    let again = store.deliver(&conversation.b, None, 2).await.unwrap();
    assert_eq!(ids(&again), sent[..2]);
    assert!(again.iter().all(|message| message.redelivered));
    // Confirming those, the third is still pending (marked), the rest new.
    let rest = store
        .deliver(&conversation.b, Some(sent[1]), 10)
        .await
        .unwrap();
    assert_eq!(ids(&rest), sent[2..]);
    assert_eq!(
        rest.iter().map(|m| m.redelivered).collect::<Vec<_>>(),
        vec![true, false, false]
    );
    store.close().await;
}

#[tokio::test]
async fn an_ack_cannot_confirm_what_was_never_handed_out() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let sent = send(&store, &conversation, 2).await;
    store.deliver(&conversation.b, None, 1).await.unwrap();
    let error = store
        .deliver(&conversation.b, Some(sent[1]), 10)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Invalid { field: "ack", .. }));
    assert_eq!(
        error.to_string(),
        format!(
            "invalid ack: message {} was not handed to this session yet (the last one handed out is {})",
            sent[1], sent[0]
        )
    );
    let error = store.ack(&conversation.b, -3).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid ack: must be a message id, 0 or more, got -3"
    );
    // Refused acks changed nothing: the first is still pending.
    let pending = store.deliver(&conversation.b, None, 10).await.unwrap();
    assert_eq!(ids(&pending), sent);
    assert_eq!(
        pending.iter().map(|m| m.redelivered).collect::<Vec<_>>(),
        vec![true, false]
    );
    store.close().await;
}

#[tokio::test]
async fn ack_alone_confirms_and_a_lower_one_changes_nothing() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let sent = send(&store, &conversation, 3).await;
    store.deliver(&conversation.b, None, 10).await.unwrap();
    store.ack(&conversation.b, sent[2]).await.unwrap();
    let mut raw = db.raw().await;
    let audited = "SELECT count(*) FROM audit WHERE action = 'messages_acked'";
    assert_eq!(scalar(&mut raw, audited).await, 1);
    store.ack(&conversation.b, sent[0]).await.unwrap();
    assert_eq!(
        scalar(&mut raw, audited).await,
        1,
        "an ack below the confirmed one writes nothing"
    );
    assert!(store.peek(&conversation.b, 10).await.unwrap().is_empty());
    assert!(
        store
            .deliver(&conversation.b, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
}

#[tokio::test]
async fn check_confirms_at_once_and_takes_over_pending_messages() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let sent = send(&store, &conversation, 2).await;
    // A client took them and vanished; an in-process reader gets them,
    // marked, and they are confirmed.
    store.deliver(&conversation.b, None, 10).await.unwrap();
    let checked = store.check(&conversation.b, 10).await.unwrap();
    assert_eq!(ids(&checked), sent);
    assert!(checked.iter().all(|message| message.redelivered));
    assert!(store.check(&conversation.b, 10).await.unwrap().is_empty());
    assert!(
        store
            .deliver(&conversation.b, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
}

#[tokio::test]
async fn an_empty_read_writes_nothing_but_a_confirmation_does() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let sent = send(&store, &conversation, 1).await;
    store.deliver(&conversation.b, None, 10).await.unwrap();
    let mut raw = db.raw().await;
    let rows = "SELECT count(*) FROM audit";
    let before = scalar(&mut raw, rows).await;
    store
        .deliver(&conversation.b, Some(sent[0]), 10)
        .await
        .unwrap();
    assert_eq!(scalar(&mut raw, rows).await, before + 1, "the confirmation");
    for _ in 0..3 {
        store
            .deliver(&conversation.b, Some(sent[0]), 10)
            .await
            .unwrap();
        store.deliver(&conversation.b, None, 10).await.unwrap();
    }
    assert_eq!(scalar(&mut raw, rows).await, before + 1, "then nothing");
    store.close().await;
}

/// Two processes reading one session at once, each confirming what it got
/// on its next read (the server's way): every message reaches one of them,
/// and a message either gets twice is marked the second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_lose_nothing_and_mark_what_both_get() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let sent = send(&store, &conversation, 300).await;
    let readers = (0..2).map(|_| {
        let (options, credentials) = (db.options(), conversation.b.clone());
        tokio::spawn(async move {
            let store = Store::open(options).await.unwrap();
            let mut got = Vec::new();
            let mut last = None;
            loop {
                let batch = store.deliver(&credentials, last, 7).await.unwrap();
                let Some(newest) = batch.last() else {
                    break;
                };
                last = Some(newest.id);
                got.extend(batch.iter().map(|m| (m.id, m.redelivered)));
            }
            store.close().await;
            got
        })
    });
    let mut all = Vec::new();
    for reader in readers {
        all.extend(reader.await.unwrap());
    }
    let mut unmarked: Vec<i64> = all
        .iter()
        .filter(|(_, again)| !again)
        .map(|(id, _)| *id)
        .collect();
    unmarked.sort_unstable();
    let mut every: Vec<i64> = all.iter().map(|(id, _)| *id).collect();
    every.sort_unstable();
    every.dedup();
    assert_eq!(every, sent, "none lost");
    let before = unmarked.len();
    unmarked.dedup();
    assert_eq!(
        unmarked.len(),
        before,
        "a message handed out twice is marked the second time"
    );
    store.close().await;
}
