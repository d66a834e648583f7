//! `bridge-mcp`: the MCP server every agent talks to.
//!
//! It exposes the `bridge-core` store through the official Rust MCP SDK,
//! `rmcp`, over stdio (one agent per process, as MCP clients start servers) or
//! Streamable HTTP (many agents, one process). The tools keep the original
//! bridge's names, arguments and bounds, so prompts written for it keep
//! working, and add `wait_for_messages` and `read_history`.
//!
//! # Layout
//!
//! * `server`: the [`Bridge`] handler and its tools.
//! * `tools`: the tools' arguments and results, with their JSON schemas.
//! * `exec`: the command-execution tools (only with `YOLO_MODE=1`), over
//!   `bridge-exec` and the store's gates.
//! * `transport`: serving over stdio and over HTTP (with its Host and Origin
//!   checks).
//! * `cli`: the command line; `main.rs` only calls [`cli::main`].
//!
//! Only this crate serves MCP with `rmcp`; it writes no SQL.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cli;
mod exec;
mod server;
mod tools;
mod transport;

pub use exec::Execution;
pub use server::Bridge;
pub use transport::{HTTP_PATH, serve_http, serve_stdio};
