//! The hub as the store on this machine (`--db`): `bridge-core` called
//! directly, woken by its change notification.

use std::future::Future;
use std::time::Duration;

use bridge_cli::daemon::open_when_ready;
use bridge_core::{Credentials, Store, StoreOptions};

use crate::{HubError, Incoming, Start};

/// The store, with the options to open it again if its file is replaced.
pub struct LocalHub {
    store: Store,
    options: StoreOptions,
    credentials: Credentials,
}

impl LocalHub {
    /// Opens the store, waiting while the database does not exist yet or
    /// is locked; `None` if `stop` came first.
    pub async fn open(
        options: StoreOptions,
        credentials: Credentials,
        stop: impl Future,
    ) -> Result<Option<LocalHub>, HubError> {
        let Some(store) = open_when_ready(options.clone(), stop).await? else {
            return Ok(None);
        };
        Ok(Some(LocalHub {
            store,
            options,
            credentials,
        }))
    }

    /// Opens the store; a database that does not exist is the error.
    pub async fn open_once(
        mut options: StoreOptions,
        credentials: Credentials,
    ) -> Result<LocalHub, HubError> {
        options.create = false;
        let store = Store::open(options.clone()).await?;
        Ok(LocalHub {
            store,
            options,
            credentials,
        })
    }

    /// The database file.
    pub fn location(&self) -> String {
        self.store.path().display().to_string()
    }

    pub(crate) async fn heartbeat(&mut self) -> Result<u64, HubError> {
        self.store.heartbeat(&self.credentials).await?;
        Ok(self.store.inbox_summary(&self.credentials).await?.unread)
    }

    pub(crate) async fn start(&mut self, start: Start) -> Result<i64, HubError> {
        let summary = self.store.inbox_summary(&self.credentials).await?;
        Ok(match start {
            Start::Unconfirmed => summary.acked_id,
            Start::Now => summary.newest_id,
        })
    }

    pub(crate) async fn peek_after(
        &mut self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Incoming>, HubError> {
        let messages = self
            .store
            .peek_after(&self.credentials, after, limit)
            .await?;
        Ok(messages.into_iter().map(Incoming::from).collect())
    }

    pub(crate) async fn wait_after(
        &mut self,
        after: i64,
        timeout: Duration,
    ) -> Result<Vec<Incoming>, HubError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribe before looking, so that a commit in between wakes us.
        let mut changes = self.store.subscribe();
        loop {
            let messages = self.peek_after(after, WAIT_BATCH).await?;
            if !messages.is_empty() {
                return Ok(messages);
            }
            tokio::select! {
                changed = changes.changed() => changed?,
                () = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            }
        }
    }

    pub(crate) async fn peek(&mut self, limit: u32) -> Result<Vec<Incoming>, HubError> {
        let messages = self.store.peek(&self.credentials, limit).await?;
        Ok(messages.into_iter().map(Incoming::from).collect())
    }

    pub(crate) async fn deliver(&mut self, limit: u32) -> Result<Vec<Incoming>, HubError> {
        let messages = self.store.deliver(&self.credentials, None, limit).await?;
        Ok(messages.into_iter().map(Incoming::from).collect())
    }

    pub(crate) async fn ack(&mut self, up_to: i64) -> Result<(), HubError> {
        Ok(self.store.ack(&self.credentials, up_to).await?)
    }

    /// After a locked database or a moment of trouble: a short pause, then
    /// the file is reopened if it was replaced.
    pub(crate) async fn recover(&mut self, stop: impl Future) -> Result<bool, HubError> {
        tokio::pin!(stop);
        tokio::select! {
            _ = &mut stop => return Ok(false),
            () = tokio::time::sleep(RETRY) => {}
        }
        self.refresh(stop).await
    }

    pub(crate) async fn refresh(&mut self, stop: impl Future) -> Result<bool, HubError> {
        if !self.store.replaced() {
            return Ok(true);
        }
        tracing::warn!(database = %self.store.path().display(), "the database file was replaced; reopening it");
        self.store.close().await;
        match open_when_ready(self.options.clone(), stop).await? {
            Some(store) => {
                self.store = store;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    pub(crate) async fn close(self) {
        self.store.close().await;
    }
}

/// Messages one wake-up returns at most, as `wait_for_messages` does.
const WAIT_BATCH: u32 = 100;

/// The pause before a call is tried again after a local failure.
const RETRY: Duration = Duration::from_secs(1);
