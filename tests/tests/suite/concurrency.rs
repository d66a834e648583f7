//! Many writers and readers on one database file, each on its own
//! connections (its own store), as separate processes would be.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bridge_core::{NewMessage, Store};
use bridge_tests::{TempDb, pair};

const WRITERS: usize = 10;
const PER_WRITER: usize = 200;
const TOTAL: usize = WRITERS * PER_WRITER;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_writers_two_consumers_every_message_once_in_order() {
    let db = TempDb::new();
    let setup = db.open().await;
    let conversation = pair(&setup).await;

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = Store::open(db.options()).await.unwrap();
        let credentials = conversation.a.clone();
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..PER_WRITER {
                let sent = store
                    .send(&credentials, NewMessage::new(format!("{writer}:{n}")))
                    .await
                    .unwrap();
                ids.push(sent.id);
            }
            store.close().await;
            ids
        }));
    }

    let delivered_so_far = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let store = Store::open(db.options()).await.unwrap();
        let credentials = conversation.b.clone();
        let delivered_so_far = Arc::clone(&delivered_so_far);
        readers.push(tokio::spawn(async move {
            let mut changes = store.subscribe();
            let mut batches: Vec<Vec<i64>> = Vec::new();
            while delivered_so_far.load(Ordering::SeqCst) < TOTAL {
                let batch = store.check(&credentials, 50).await.unwrap();
                if batch.is_empty() {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(50), changes.changed()).await;
                    continue;
                }
                delivered_so_far.fetch_add(batch.len(), Ordering::SeqCst);
                batches.push(batch.iter().map(|m| m.id).collect());
            }
            store.close().await;
            batches
        }));
    }

    let mut sent = BTreeSet::new();
    for writer in writers {
        let ids = writer.await.unwrap();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "one writer's ids increase"
        );
        sent.extend(ids);
    }
    assert_eq!(sent.len(), TOTAL);

    let mut delivered = Vec::new();
    for reader in readers {
        let batches = reader.await.unwrap();
        for batch in &batches {
            // A batch is a run of consecutive unread messages: none skipped.
            let expected: Vec<i64> = sent.range(batch[0]..).take(batch.len()).copied().collect();
            assert_eq!(batch, &expected, "a batch skipped a message");
        }
        let ids: Vec<i64> = batches.into_iter().flatten().collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "each reader gets ids in order"
        );
        delivered.extend(ids);
    }
    let unique: BTreeSet<i64> = delivered.iter().copied().collect();
    assert_eq!(
        unique.len(),
        delivered.len(),
        "a message was delivered twice"
    );
    assert_eq!(unique, sent, "a message was lost");
    assert!(setup.verify_audit().await.unwrap().is_intact());
    setup.close().await;
}
