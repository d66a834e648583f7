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
//! * `arguments`: decoding a tool's arguments, with errors in words.
//! * `tools`: the tools' arguments and results, with their JSON schemas;
//!   `schema`: those schemas trimmed for `tools/list`.
//! * `exec`: the command-execution tools (only with `YOLO_MODE=1`), over
//!   `bridge-exec` and the store's gates.
//! * `transport`: serving over stdio and over HTTP (with its Host and Origin
//!   checks).
//! * `stdio`: the line transport over stdin and stdout; `http_layer`: what the
//!   HTTP server puts in front of `rmcp`'s service (a guard on request
//!   bodies, bounded sessions); `wire`: the check of every incoming message
//!   that both share, so that each gets an answer.
//! * `delivery`: whether an answer reached its client, so that a consuming
//!   read can be confirmed without losing messages; `connection`: the HTTP
//!   server's connections (TCP or TLS), and whether the client closed one
//!   cleanly; `tls`: the certificate served over HTTPS, read again on
//!   `SIGHUP`.
//! * `fuzzing`: entry points for the fuzz targets in `fuzz/`.
//! * `cli`: the command line; `main.rs` only calls [`cli::main`].
//!
//! Only this crate serves MCP with `rmcp`; it writes no SQL.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod arguments;
pub mod cli;
mod connection;
mod delivery;
mod exec;
#[doc(hidden)]
pub mod fuzzing;
mod http_auth;
mod http_layer;
mod observe;
mod schema;
mod server;
mod stdio;
mod tls;
mod tools;
mod transport;
mod wire;

pub use exec::Execution;
pub use http_layer::{DEFAULT_MAX_SESSIONS, Sessions};
pub use server::Bridge;
pub use tls::{Certificates, TlsError, TlsFiles};
pub use transport::{HTTP_PATH, HttpOptions, PublicHost, serve_http, serve_stdio};
