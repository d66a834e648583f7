//! A count of what the store holds, for the hub's metrics and dashboard:
//! conversations live and expired, workers by health, tasks by state, task
//! moves away from silent workers, audit rows. Three reads, none of which
//! writes; each counts with the database's indexes or a scan of one table.

use serde::Serialize;

use crate::admin::SessionInfo;
use crate::error::Result;
use crate::kinds::{Status, TaskState};
use crate::store::Store;
use crate::task::Worker;
use crate::time::Timestamp;

/// How a worker stands, in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Heard from within the liveness window.
    Healthy,
    /// Not heard from within the liveness window, and not found silent by
    /// a watchdog.
    Quiet,
    /// Found silent by a watchdog (its threshold), and not seen back since.
    Silent,
}

impl Health {
    /// Every health, best first.
    pub const ALL: [Health; 3] = [Health::Healthy, Health::Quiet, Health::Silent];

    /// Its word.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Quiet => "quiet",
            Health::Silent => "silent",
        }
    }

    /// How a session stands that is `alive` (heard from within the
    /// liveness window) with `status`: a watchdog's verdict (`silent`)
    /// stands until the session is seen back (the watchdog, or its own
    /// keep-alive, sets another status), since the watchdog's threshold is
    /// shorter than the liveness window; otherwise alive is healthy, and
    /// the rest quiet.
    pub fn of(alive: bool, status: Option<Status>) -> Health {
        if status == Some(Status::Silent) {
            Health::Silent
        } else if alive {
            Health::Healthy
        } else {
            Health::Quiet
        }
    }
}

impl Worker {
    /// How it stands ([`Health::of`]).
    pub fn health(&self) -> Health {
        Health::of(self.alive, self.status)
    }
}

impl SessionInfo {
    /// How it stands ([`Health::of`]).
    pub fn health(&self) -> Health {
        Health::of(self.alive, self.status)
    }
}

/// What [`Store::census`] counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Census {
    /// Conversations not expired.
    pub live_conversations: u64,
    /// Conversations expired and not yet cleaned up.
    pub expired_conversations: u64,
    /// Workers of live conversations, by health, in [`Health::ALL`]'s order.
    pub workers: [u64; 3],
    /// Tasks by state, in [`TaskState::ALL`]'s order.
    pub tasks: [u64; 5],
    /// Assignments ended because their worker went silent.
    pub reassignments: u64,
    /// Rows of the audit trail.
    pub audit_rows: u64,
}

/// The counts of one row.
const COUNTS_SQL: &str = "
SELECT (SELECT count(*) FROM conversation WHERE expires_at > $1) AS live,
       (SELECT count(*) FROM conversation WHERE expires_at <= $1) AS expired,
       (SELECT count(*) FROM task_assignment WHERE ended_by = 'reassigned') AS reassignments,
       (SELECT count(*) FROM audit) AS audit_rows";

/// Tasks by state.
const TASKS_SQL: &str = "SELECT state, count(*) FROM task GROUP BY state";

impl Store {
    /// Counts what the store holds (see [`Census`]).
    pub async fn census(&self) -> Result<Census> {
        let (live, expired, reassignments, audit_rows): (i64, i64, i64, i64) = read!(
            self,
            fetch_one,
            query_as(COUNTS_SQL),
            Timestamp::now().as_millis()
        )?;
        let states: Vec<(String, i64)> = read!(self, fetch_all, query_as(TASKS_SQL))?;
        let mut tasks = [0; 5];
        for (state, count) in states {
            let state: TaskState = state.parse()?;
            if let Some(at) = TaskState::ALL.iter().position(|known| *known == state) {
                tasks[at] = count_of(count);
            }
        }
        let mut workers = [0; 3];
        for worker in self.workers(None).await? {
            if let Some(at) = Health::ALL.iter().position(|h| *h == worker.health()) {
                workers[at] += 1;
            }
        }
        Ok(Census {
            live_conversations: count_of(live),
            expired_conversations: count_of(expired),
            workers,
            tasks,
            reassignments: count_of(reassignments),
            audit_rows: count_of(audit_rows),
        })
    }
}

/// A count as the database gives it (never negative).
fn count_of(count: i64) -> u64 {
    u64::try_from(count).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watchdogs_verdict_stands_until_the_worker_is_seen_back() {
        assert_eq!(Health::of(true, Some(Status::Silent)), Health::Silent);
        assert_eq!(Health::of(false, Some(Status::Silent)), Health::Silent);
        assert_eq!(Health::of(true, Some(Status::Active)), Health::Healthy);
        assert_eq!(Health::of(true, None), Health::Healthy);
        assert_eq!(Health::of(false, Some(Status::Working)), Health::Quiet);
    }
}
