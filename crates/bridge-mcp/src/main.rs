//! `bridge-mcp`: see the `bridge_mcp` library.

fn main() -> std::process::ExitCode {
    bridge_mcp::cli::main()
}
