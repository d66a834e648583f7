//! End-to-end tests of the `bridge-core` store: real SQLite files in
//! temporary directories, several stores (separate pools and writers) on one
//! file where a test needs other processes' view, raw SQL only to inspect or
//! tamper with the file.

mod access;
mod audit;
mod concurrency;
mod conversation;
mod delivery;
mod idempotency;
mod limit;
mod message;
mod open;
mod postgres;
mod status;
mod task;
mod watch;
mod yolo;
