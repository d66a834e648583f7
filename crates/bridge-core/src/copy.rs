//! Moving up: copying an SQLite store into an empty PostgreSQL database
//! (`bridgectl copy --to postgres://…`).
//!
//! Everything is copied as it is: conversations with their token digests,
//! sessions and their cursors, messages, tasks and their history, the audit
//! trail with its hashes, YOLO settings, approval tokens, access keys and
//! idempotency records. Both stores use the same server key, so the old
//! tokens authenticate on the copy and its audit chain verifies.
//!
//! The source is read in one read transaction (one snapshot, whatever hubs
//! write meanwhile); the target is written in one transaction that first
//! locks its `head` rows and checks that the database holds nothing yet, so
//! a copy is whole or not at all, and never lands on data.

use std::fmt;

use sqlx::{AssertSqlSafe, Postgres, Sqlite, Transaction};

use crate::error::{Error, Result};
use crate::store::{Readers, Store, StoreOptions};

/// The tables copied, parents before children.
const TABLES: [&str; 10] = [
    "conversation",
    "session",
    "message",
    "audit",
    "task",
    "task_assignment",
    "yolo",
    "approval",
    "idempotency",
    "access_key",
];

/// Rows read and written per statement.
const CHUNK: i64 = 2_000;

/// What a copy carried over.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    /// `(table, rows)` in the order they were copied.
    pub tables: Vec<(String, u64)>,
}

impl fmt::Display for CopyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (table, rows) in &self.tables {
            writeln!(f, "{table:<16} {rows:>9} rows")?;
        }
        Ok(())
    }
}

/// One column of a target table, as the copy reads it from SQLite.
#[derive(sqlx::FromRow)]
struct Column {
    name: String,
    data_type: String,
}

impl Store {
    /// Copies this store (SQLite) into the PostgreSQL database `target`,
    /// which must hold no store data yet; opens it first (making its tables
    /// with the same server key: give `target.key_file` this store's key).
    pub async fn copy_into(&self, mut target: StoreOptions) -> Result<CopyReport> {
        let Readers::Sqlite(source) = self.readers() else {
            return Err(Error::invalid(
                "db",
                "copy reads an SQLite store; this one is on PostgreSQL already",
            ));
        };
        if target.location.file().is_some() {
            return Err(Error::invalid(
                "to",
                "copy writes into a PostgreSQL database (postgres://USER@HOST/DATABASE)",
            ));
        }
        target.create = true;
        let copy = Store::open(target).await?;
        let outcome = copy_tables(self, source, &copy).await;
        copy.close().await;
        outcome
    }
}

async fn copy_tables(store: &Store, source: &sqlx::SqlitePool, copy: &Store) -> Result<CopyReport> {
    let Readers::Postgres(pool) = copy.readers() else {
        return Err(Error::invalid("to", "not a PostgreSQL database"));
    };
    let from = |error| store.shared().sqlx_error(error);
    let to = |error| copy.shared().sqlx_error(error);
    let mut read = source.begin().await.map_err(from)?;
    let mut write = pool.begin().await.map_err(to)?;
    sqlx::query("SELECT name FROM head ORDER BY name FOR UPDATE")
        .execute(&mut *write)
        .await
        .map_err(to)?;
    let held: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM conversation) + (SELECT count(*) FROM audit)
              + (SELECT count(*) FROM access_key) + (SELECT count(*) FROM approval)
              + (SELECT CAST(sum(last_id) AS BIGINT) FROM head)",
    )
    .fetch_one(&mut *write)
    .await
    .map_err(to)?;
    if held > 0 {
        return Err(Error::invalid(
            "to",
            format!(
                "{} already holds a store with data; copy writes only into an empty one",
                copy.path().display()
            ),
        ));
    }

    let mut report = CopyReport { tables: Vec::new() };
    for table in TABLES {
        let rows = copy_table(table, &mut read, &mut write)
            .await
            .map_err(|error| copy.shared().sqlx_error(error))?;
        report.tables.push((table.to_owned(), rows));
    }

    // Ids continue after the last ever given (SQLite never reuses one), and
    // the chain after its last hash.
    let last: Vec<(String, i64)> = sqlx::query_as("SELECT name, seq FROM sqlite_sequence")
        .fetch_all(&mut *read)
        .await
        .map_err(from)?;
    let last_id = |name: &str| {
        last.iter()
            .find(|(table, _)| table == name)
            .map_or(0, |(_, seq)| *seq)
    };
    let hash: Option<String> =
        sqlx::query_scalar("SELECT hash FROM audit ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *read)
            .await
            .map_err(from)?;
    sqlx::query(
        "UPDATE head SET last_id = CASE name WHEN 'message' THEN $1 WHEN 'audit' THEN $2 ELSE $3 END,
                         hash = CASE name WHEN 'audit' THEN $4 ELSE hash END",
    )
    .bind(last_id("message"))
    .bind(last_id("audit"))
    .bind(last_id("task"))
    .bind(hash)
    .execute(&mut *write)
    .await
    .map_err(to)?;
    sqlx::query(
        "SELECT setval(pg_get_serial_sequence('approval', 'id'), greatest(max(id), 1), max(id) IS NOT NULL)
         FROM approval",
    )
    .execute(&mut *write)
    .await
    .map_err(to)?;
    write.commit().await.map_err(to)?;
    read.rollback().await.map_err(from)?;
    Ok(report)
}

/// Copies `table` in chunks, in primary-key order; returns its rows.
async fn copy_table(
    table: &str,
    read: &mut Transaction<'_, Sqlite>,
    write: &mut Transaction<'_, Postgres>,
) -> Result<u64, sqlx::Error> {
    let columns: Vec<Column> = sqlx::query_as(
        "SELECT column_name::text AS name, data_type::text AS data_type
         FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = $1 AND is_generated = 'NEVER'
         ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut **write)
    .await?;
    let key: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index AS i
         JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY a.attnum",
    )
    .bind(table)
    .fetch_all(&mut **write)
    .await?;
    // SQLite gives each row as a JSON object PostgreSQL reads back into the
    // table's own types: blobs as bytea's hex text, flags as 0 or 1.
    let fields = columns
        .iter()
        .map(|column| match column.data_type.as_str() {
            "bytea" => format!(
                "'{0}', CASE WHEN {0} IS NULL THEN NULL ELSE '\\x' || lower(hex({0})) END",
                column.name
            ),
            _ => format!("'{0}', {0}", column.name),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let read_sql = format!(
        "SELECT json_group_array(json_object({fields})), count(*)
         FROM (SELECT * FROM {table} ORDER BY {} LIMIT $1 OFFSET $2)",
        key.join(", ")
    );
    let names = columns
        .iter()
        .map(|column| column.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let write_sql = format!(
        "INSERT INTO {table} ({names}) OVERRIDING SYSTEM VALUE
         SELECT {names} FROM jsonb_populate_recordset(NULL::{table}, $1::jsonb)"
    );
    let mut copied = 0_u64;
    loop {
        let (rows, count): (String, i64) = sqlx::query_as(AssertSqlSafe(read_sql.clone()))
            .bind(CHUNK)
            .bind(i64::try_from(copied).unwrap_or(i64::MAX))
            .fetch_one(&mut **read)
            .await?;
        if count == 0 {
            return Ok(copied);
        }
        sqlx::query(AssertSqlSafe(write_sql.clone()))
            .bind(rows)
            .execute(&mut **write)
            .await?;
        copied += u64::try_from(count).unwrap_or(0);
        if count < CHUNK {
            return Ok(copied);
        }
    }
}
