//! The two ways to reach the [`Bridge`]: stdio (one agent, the process its
//! MCP client starts, through our `stdio` transport) and Streamable HTTP
//! (many agents, one process, through `rmcp`'s service behind our `http`
//! guard and session manager). Each client gets a [`Bridge`] of its own
//! ([`Bridge::for_new_client`]): over HTTP, one per MCP session.
//!
//! HTTP is guarded against DNS rebinding: it listens on loopback unless the
//! operator allows otherwise; a request's `Host` must name the bound loopback
//! address; and a request that carries an `Origin` (a browser's) must come
//! from a loopback origin. rmcp checks both once configured (its origin list
//! is empty, i.e. unchecked, by default).
//!
//! Under systemd (`Type=notify`, `WatchdogSec=`), the HTTP server says
//! `READY=1` once its socket listens, pings the watchdog while it serves, and
//! says `STOPPING=1` when it begins to shut down (`bridge_cli::daemon::systemd`;
//! nothing is sent when `NOTIFY_SOCKET` is unset).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use bridge_cli::daemon::systemd;
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::connection::{ConnectionListener, Peer};
use crate::http_layer::{Sessions, guard};
use crate::server::Bridge;
use crate::stdio::LineTransport;

/// The path the HTTP server answers on.
pub const HTTP_PATH: &str = "/mcp";

/// Origins a browser on this machine sends, on any port.
const LOOPBACK_ORIGINS: [&str; 6] = [
    "http://localhost:*",
    "http://127.0.0.1:*",
    "http://[::1]:*",
    "https://localhost:*",
    "https://127.0.0.1:*",
    "https://[::1]:*",
];

/// Serves one client over stdin and stdout until it disconnects or
/// `shutdown` resolves.
pub async fn serve_stdio(
    bridge: Bridge,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let on_shutdown = cancel.clone();
    tokio::spawn(async move {
        shutdown.await;
        on_shutdown.cancel();
    });
    // stdio_pipes, not stdio: a blocking read of stdin would keep the
    // process alive after a signal.
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    let running = match bridge
        .serve_with_ct(LineTransport::new(stdin, stdout), cancel.clone())
        .await
    {
        Ok(running) => running,
        // Stopped before or during the handshake: nothing to serve.
        Err(_) if cancel.is_cancelled() => return Ok(()),
        Err(error) => return Err(error).context("the MCP handshake over stdio failed"),
    };
    let reason = running.waiting().await.context("serving over stdio")?;
    tracing::debug!(?reason, "stdio session ended");
    Ok(())
}

/// Refuses an address other than loopback unless `allow_remote`: agents on
/// other machines could reach the bridge.
pub(crate) fn check_listen_address(addr: SocketAddr, allow_remote: bool) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() && !allow_remote {
        bail!(
            "refusing to listen on {addr}: it is not a loopback address, and agents on other machines \
             could reach the bridge (pass --allow-remote if that is what you want)"
        );
    }
    Ok(())
}

/// Serves Streamable HTTP at `http://ADDR/mcp` until `shutdown` resolves,
/// with at most `sessions`' live sessions. Refuses an address other than
/// loopback unless `allow_remote`. Tells systemd when it is ready and when
/// it stops, and pings its watchdog.
pub async fn serve_http(
    bridge: Bridge,
    addr: SocketAddr,
    allow_remote: bool,
    sessions: Sessions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    check_listen_address(addr, allow_remote)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let listener = ConnectionListener(listener);
    let cancel = CancellationToken::new();
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(cancel.child_token())
        .with_allowed_origins(LOOPBACK_ORIGINS);
    let config = if bound.ip().is_loopback() {
        config.with_allowed_hosts(loopback_hosts(bound))
    } else {
        // Reachable under names we cannot know.
        config.disable_allowed_hosts()
    };
    let sessions = Arc::new(sessions);
    let service = StreamableHttpService::new(
        move || Ok(bridge.for_new_client()),
        Arc::clone(&sessions),
        config,
    );
    let app = axum::Router::new().route_service(HTTP_PATH, service).layer(
        axum::middleware::from_fn_with_state(Arc::clone(&sessions), guard),
    );
    let expiry = {
        let (sessions, cancel) = (Arc::clone(&sessions), cancel.clone());
        tokio::spawn(async move { sessions.expire_until(cancel.cancelled()).await })
    };
    tracing::info!("listening on http://{bound}{HTTP_PATH}");
    // The socket listens from `bind` on: a client that connects now waits in
    // the backlog until the server accepts it, so the service is ready.
    systemd::ready();
    let pings = systemd::watchdog_interval().map(|every| tokio::spawn(ping_watchdog(every)));
    let stop = cancel.clone();
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(async move {
            shutdown.await;
            systemd::stopping();
            stop.cancel();
        })
        .await
        .context("serving HTTP");
    if let Some(pings) = pings {
        pings.abort();
    }
    cancel.cancel();
    let _ = expiry.await;
    served
}

/// Pings systemd's watchdog every `every` until aborted. It runs on the same
/// runtime as the requests, so a runtime that stops scheduling stops the
/// pings and systemd restarts the server.
async fn ping_watchdog(every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        systemd::watchdog();
    }
}

/// The `Host` values that name a loopback listener: its address, and
/// `localhost`, with its port.
fn loopback_hosts(bound: SocketAddr) -> Vec<String> {
    let port = bound.port();
    let address = match bound {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    };
    vec![format!("{address}:{port}"), format!("localhost:{port}")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_the_bound_address_and_localhost() {
        assert_eq!(
            loopback_hosts("127.0.0.1:8765".parse().unwrap()),
            vec!["127.0.0.1:8765", "localhost:8765"]
        );
        assert_eq!(
            loopback_hosts("[::1]:9".parse().unwrap()),
            vec!["[::1]:9", "localhost:9"]
        );
    }
}
