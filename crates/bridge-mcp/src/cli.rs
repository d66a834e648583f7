//! The `bridge-mcp` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bridge_cli::{LogArgs, RateLimitArgs, StoreArgs, exit, parse_duration, shutdown_signal};
use bridge_core::Store;
use clap::Parser;

use crate::exec::Execution;
use crate::http_layer::{DEFAULT_MAX_SESSIONS, Sessions};
use crate::server::Bridge;
use crate::tls::{Certificates, TlsError, TlsFiles};
use crate::transport::{HttpOptions, PublicHost, serve_http, serve_stdio};
use bridge_exec::Sandbox;

/// The MCP server of mcp-bridge: agents create conversations, exchange
/// messages, publish status, and wait for each other, through one database.
///
/// Serves one agent over stdio (how MCP clients start a server), or many over
/// Streamable HTTP with --http.
#[derive(Parser, Debug)]
#[command(name = "bridge-mcp", version)]
pub struct Args {
    /// The database, as the original bridge took it (the same as --db)
    #[arg(value_name = "DATABASE", conflicts_with = "db")]
    database: Option<String>,

    #[command(flatten)]
    store: StoreArgs,

    #[command(flatten)]
    limit: RateLimitArgs,

    /// Serve Streamable HTTP on ADDR, at /mcp, instead of stdio
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = "127.0.0.1:8765"
    )]
    http: Option<SocketAddr>,

    /// Let --http listen on an address other than loopback
    #[arg(long, requires = "http")]
    allow_remote: bool,

    /// With --http: serve HTTPS with this PEM certificate chain (the
    /// server's certificate first); read again on SIGHUP
    #[arg(
        long,
        env = "BRIDGE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// With --http: the PEM private key of --tls-cert
    #[arg(
        long,
        env = "BRIDGE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// With --http on an address other than loopback: serve plain HTTP
    /// (only behind a proxy that encrypts)
    #[arg(long, requires = "http", conflicts_with = "tls_cert")]
    insecure_plaintext: bool,

    /// With --http: a name clients reach this server by (DNS, a proxy),
    /// with the port they use if it is not the listening one; allowed in
    /// Host and Origin. Repeatable
    #[arg(long, value_name = "NAME[:PORT]", requires = "http", value_parser = PublicHost::parse)]
    public_host: Vec<PublicHost>,

    /// With --http on loopback: refuse requests without a key
    /// (Authorization: Bearer, an access key or a session token), as is
    /// always done off loopback
    #[arg(long, env = "BRIDGE_REQUIRE_AUTH", requires = "http")]
    require_auth: bool,

    /// With --http: serve /metrics without authentication (for a
    /// Prometheus without a key); the rest still needs one where required
    #[arg(long, env = "BRIDGE_METRICS_PUBLIC", requires = "http")]
    metrics_public: bool,

    /// With --http: at most this many live MCP sessions; past it, a new
    /// session is refused (503)
    #[arg(
        long,
        value_name = "N",
        requires = "http",
        default_value_t = DEFAULT_MAX_SESSIONS,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    max_sessions: u32,

    /// With --http: a session without a request for this long ends (a
    /// request in flight keeps it)
    #[arg(
        long,
        value_name = "DURATION",
        requires = "http",
        default_value = "2m",
        value_parser = session_idle
    )]
    session_idle: Duration,

    /// Where commands of execute_command run, when YOLO_MODE=1 lists it:
    /// none, or bwrap (bubblewrap: no network, the workspace the only
    /// writable place)
    #[arg(long, env = "BRIDGE_SANDBOX", value_enum, default_value_t = SandboxArg::None)]
    sandbox: SandboxArg,

    #[command(flatten)]
    log: LogArgs,
}

/// `--session-idle`: a duration of at least a second.
fn session_idle(text: &str) -> Result<Duration, String> {
    let idle = parse_duration(text)?;
    if idle < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    Ok(idle)
}

/// Where commands run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SandboxArg {
    /// Directly, in the workspace.
    None,
    /// Inside bubblewrap.
    Bwrap,
}

/// Parses the command line, serves, and exits with the documented code.
pub fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init();
    // One agent over stdio needs one thread; HTTP serves many at once.
    let runtime = match args.http {
        Some(_) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let outcome = runtime
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.chain().any(|cause| cause.is::<TlsError>()) => {
            exit::report_as("bridge-mcp", &error, exit::CONFIG)
        }
        Err(error) => exit::report("bridge-mcp", &error),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // First: from here on, a signal is caught rather than fatal.
    let signal = shutdown_signal();
    let mut store_args = args.store;
    if let Some(database) = args.database {
        store_args.db = Some(database);
    }
    let mut options = store_args.options()?;
    args.limit.apply(&mut options);
    let http = match args.http {
        Some(addr) => {
            // Before the database is opened, or created.
            let tls = match (args.tls_cert, args.tls_key) {
                (Some(certificate), Some(key)) => {
                    Some(Certificates::load(TlsFiles { certificate, key })?)
                }
                _ => None,
            };
            let http = HttpOptions {
                addr,
                allow_remote: args.allow_remote,
                tls,
                insecure_plaintext: args.insecure_plaintext,
                public_hosts: args.public_host,
                require_auth: args.require_auth,
                metrics_public: args.metrics_public,
            };
            http.check()?;
            // Many agents read at once.
            options.readers = 8;
            Some(http)
        }
        None => None,
    };
    let store = Store::open(options).await?;
    tracing::info!(database = %store.path().display(), "store open");
    let sandbox = match args.sandbox {
        SandboxArg::None => Sandbox::None,
        SandboxArg::Bwrap => Sandbox::Bwrap,
    };
    let execution = Execution::from_env(sandbox);
    if execution.enabled {
        // The commands run as this user: through /proc/<our pid>/fd/1 they
        // could write into the protocol channel, and read our environment.
        // Non-dumpable, those files are root's (root's commands still reach
        // them: do not run execution as root).
        use rustix::process::{DumpableBehavior, set_dumpable_behavior};
        if let Err(error) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
            tracing::warn!(%error, "cannot make bridge-mcp non-dumpable");
        }
        tracing::warn!(
            sandbox = ?args.sandbox,
            "YOLO_MODE=1: enable_yolo_mode and execute_command are listed; commands run only in \
             conversations the operator enabled, each with an approval token"
        );
    }
    let bridge = Bridge::with_execution(store.clone(), execution);
    let shutdown = async {
        let signal = signal.await;
        tracing::info!(signal, "shutting down");
    };
    let served = match http {
        Some(http) => {
            let limit = usize::try_from(args.max_sessions).unwrap_or(usize::MAX);
            let sessions = Sessions::new(limit, args.session_idle);
            serve_http(bridge, http, sessions, shutdown).await
        }
        None => serve_stdio(bridge, shutdown).await,
    };
    store.close().await;
    served
}
