//! Integration tests of `bridge-exec`: real processes in temporary
//! workspaces. Each module tests one concern; `util` holds the helpers.

mod environment;
mod no_shell;
mod output;
mod processes;
mod sandbox;
mod snapshot;
mod util;
mod workspace;
