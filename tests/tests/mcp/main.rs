//! End-to-end tests of `bridge-mcp`: the real binary, started by the test,
//! spoken to with the `rmcp` client over stdio and over Streamable HTTP.

mod auth;
mod contract;
mod delivery;
mod durability;
mod flow;
mod http;
mod malformed;
mod sessions;
mod tasks;
mod team;
mod tls;
mod watching;
mod yolo;
