//! One rendering of a page, shared by every open stream that shows it.
//!
//! Twenty browsers on the team page all wake at the same change; without
//! sharing, each would query the store and render the same HTML. Here a
//! stream asks for the page's content *at least as new as* the change it
//! woke for (the change feed's counter, read before it renders) and *begun
//! no earlier than* a moment ago (what time alone changes, "heard from 3 s
//! ago", is shown to the second). The first stream to ask renders; the
//! others that ask while it renders wait for its result, and those that ask
//! later take it as long as it is new enough.
//!
//! Entries live while streams ask for them: one not asked for in `keep` is
//! dropped at the next request, so arbitrary `?team=` values cannot grow it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bridge_core::Store;
use tokio::sync::OnceCell;

use crate::pages::{self, Filter, Page};

/// How old a rendering may be, for a stream woken by time alone.
const FRESH: Duration = Duration::from_millis(500);

/// What a stream needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Needed {
    /// The change feed's count when the stream woke: the rendering must
    /// have begun after the store showed every change up to it.
    pub(crate) version: u64,
    /// When the stream woke.
    pub(crate) at: Instant,
}

/// One rendering, done or under way.
#[derive(Clone)]
struct Rendering {
    version: u64,
    begun: Instant,
    content: Arc<OnceCell<Arc<str>>>,
}

/// A page and the team it is filtered on.
type Key = (Page, Option<String>);

/// The renderings of the pages open now, by page and team.
#[derive(Clone)]
pub(crate) struct Renderings {
    entries: Arc<Mutex<HashMap<Key, Rendering>>>,
    /// How long an entry stays without being asked for.
    keep: Duration,
}

impl Renderings {
    /// Renderings kept `keep` after they were last begun (at least the
    /// interval at which every open stream renders again).
    pub(crate) fn new(keep: Duration) -> Renderings {
        Renderings {
            entries: Arc::default(),
            keep,
        }
    }

    /// The content of `page` for `filter`, as `needed` (rendered now, or
    /// shared with another stream's rendering).
    pub(crate) async fn content(
        &self,
        store: &Store,
        page: Page,
        filter: &Filter,
        needed: Needed,
    ) -> Arc<str> {
        let rendering = {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let keep = self.keep;
            entries.retain(|_, rendering| rendering.begun.elapsed() < keep);
            let key = (page, filter.team.clone());
            let fresh = |rendering: &Rendering| {
                rendering.version >= needed.version && rendering.begun + FRESH >= needed.at
            };
            match entries.get(&key) {
                Some(rendering) if fresh(rendering) => rendering.clone(),
                _ => {
                    let rendering = Rendering {
                        version: needed.version,
                        begun: Instant::now(),
                        content: Arc::default(),
                    };
                    entries.insert(key, rendering.clone());
                    rendering
                }
            }
        };
        // If the stream rendering it goes away mid-way, the next waiter
        // renders instead (`OnceCell` hands the work on).
        rendering
            .content
            .get_or_init(|| async { Arc::from(pages::content(store, page, filter).await) })
            .await
            .clone()
    }

    /// How many renderings are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::{NewConversation, StoreOptions};

    fn filter(team: Option<&str>) -> Filter {
        Filter {
            team: team.map(str::to_owned),
        }
    }

    /// A store in a new temporary directory (kept as long as the store).
    async fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path().join("bridge.db")))
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn streams_share_a_rendering_until_a_newer_change_or_time_asks_for_another() {
        let (_dir, store) = open().await;
        let renderings = Renderings::new(Duration::from_secs(60));
        let now = |version| Needed {
            version,
            at: Instant::now(),
        };
        let first = renderings
            .content(&store, Page::Team, &filter(None), now(1))
            .await;
        assert!(!first.contains("data-worker"), "{first}");

        // A change the rendering did not see: another stream woken for
        // an older or the same change shares it, one woken for the new
        // change renders again and sees it.
        store
            .create_conversation(NewConversation::new("orchestrator", "worker 0"))
            .await
            .unwrap();
        let shared = renderings
            .content(&store, Page::Team, &filter(None), now(1))
            .await;
        assert!(Arc::ptr_eq(&first, &shared), "shared, not rendered again");
        let newer = renderings
            .content(&store, Page::Team, &filter(None), now(2))
            .await;
        assert!(newer.contains("data-worker=\"worker 0\""), "{newer}");

        // Another team, another page: renderings of their own.
        let other = renderings
            .content(&store, Page::Team, &filter(Some("core")), now(2))
            .await;
        assert!(!other.contains("data-worker"), "{other}");
        renderings
            .content(&store, Page::Audit, &filter(None), now(2))
            .await;
        assert_eq!(renderings.len(), 3);

        // Woken by time alone, later than FRESH: rendered again.
        let later = Needed {
            version: 2,
            at: Instant::now() + FRESH + Duration::from_millis(1),
        };
        let again = renderings
            .content(&store, Page::Team, &filter(None), later)
            .await;
        assert!(!Arc::ptr_eq(&newer, &again), "rendered again");
        store.close().await;
    }

    #[tokio::test]
    async fn renderings_nobody_asks_for_are_dropped() {
        let (_dir, store) = open().await;
        let renderings = Renderings::new(Duration::ZERO);
        for team in ["a", "b", "c"] {
            let needed = Needed {
                version: 0,
                at: Instant::now(),
            };
            renderings
                .content(&store, Page::Team, &filter(Some(team)), needed)
                .await;
        }
        assert_eq!(renderings.len(), 1, "only the last one asked for");
        store.close().await;
    }
}
