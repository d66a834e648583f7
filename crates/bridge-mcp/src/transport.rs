//! The two ways to reach the [`Bridge`]: stdio (one agent, the process its
//! MCP client starts, through our `stdio` transport) and Streamable HTTP
//! (many agents, one process, through `rmcp`'s service behind our `http`
//! guard and session manager). Each client gets a [`Bridge`] of its own
//! ([`Bridge::for_new_client`]): over HTTP, one per MCP session.
//!
//! HTTP is guarded against DNS rebinding: it listens on loopback unless the
//! operator allows otherwise; a request's `Host` must name the bound
//! address, `localhost`, or a name given with `--public-host`; and a request
//! that carries an `Origin` (a browser's) must come from a loopback origin or
//! one of those names. rmcp checks both once configured (its origin list is
//! empty, i.e. unchecked, by default). Off loopback it serves HTTPS
//! (`tls`), or plain HTTP only when told so explicitly.
//!
//! Every HTTP request is authenticated first (`http_auth`): off loopback or
//! with `--require-auth`, a request needs a key.
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
use bridge_dashboard::Dashboard;
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::connection::{ConnectionListener, Peer};
use crate::http_auth::{Authenticator, authenticate};
use crate::http_layer::{Sessions, guard};
use crate::observe::{self, AllowedHosts, METRICS_PATH, MetricsState};
use crate::server::Bridge;
use crate::stdio::LineTransport;
use crate::tls::{self, Certificates};

/// The path the HTTP server answers on.
pub const HTTP_PATH: &str = "/mcp";

/// How often an open dashboard page is rendered again when nothing was
/// written (time alone turns a worker quiet).
const DASHBOARD_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

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

/// How the HTTP server listens.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// The address to bind.
    pub addr: SocketAddr,
    /// Whether an address other than loopback is allowed.
    pub allow_remote: bool,
    /// Serve HTTPS with these; `None`: plain HTTP.
    pub tls: Option<Arc<Certificates>>,
    /// Whether plain HTTP off loopback is allowed (a proxy in front
    /// encrypts).
    pub insecure_plaintext: bool,
    /// Names clients reach the server by, through DNS or a proxy.
    pub public_hosts: Vec<PublicHost>,
    /// Whether every request needs a key even on loopback (off loopback it
    /// always does).
    pub require_auth: bool,
    /// Whether `/metrics` is served without authentication.
    pub metrics_public: bool,
}

impl HttpOptions {
    /// Refuses an address other than loopback unless `allow_remote` (agents
    /// on other machines could reach the bridge), and plain HTTP there
    /// unless `insecure_plaintext` (tokens would cross the network
    /// readable).
    pub fn check(&self) -> anyhow::Result<()> {
        let addr = self.addr;
        if addr.ip().is_loopback() {
            return Ok(());
        }
        if !self.allow_remote {
            bail!(
                "refusing to listen on {addr}: it is not a loopback address, and agents on other \
                 machines could reach the bridge (pass --allow-remote if that is what you want)"
            );
        }
        if self.tls.is_none() && !self.insecure_plaintext {
            bail!(
                "refusing to serve plain HTTP on {addr}: it is not a loopback address, and tokens \
                 would cross the network readable; give --tls-cert and --tls-key, or pass \
                 --insecure-plaintext if a proxy in front of the bridge encrypts"
            );
        }
        Ok(())
    }

    /// Whether a request without a key is refused: with `--require-auth`,
    /// and always off loopback.
    pub fn auth_required(&self) -> bool {
        self.require_auth || !self.addr.ip().is_loopback()
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// A name (and port) by which clients reach the server: `--public-host`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicHost {
    host: String,
    port: Option<u16>,
}

impl PublicHost {
    /// Parses `NAME[:PORT]`: a DNS name, an IPv4 address, or an IPv6 one
    /// in brackets; the port, if given, from 1 to 65535.
    pub fn parse(text: &str) -> Result<PublicHost, String> {
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') && !port.contains(']') => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|port| *port > 0)
                    .ok_or_else(|| format!("the port {port:?} is not a number from 1 to 65535"))?;
                (host, Some(port))
            }
            _ => (text, None),
        };
        let bracketed = host.starts_with('[') && host.ends_with(']');
        let valid = if bracketed {
            host[1..host.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_ok()
        } else {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        };
        if !valid {
            return Err(format!(
                "{host:?} is not a host name (letters, digits, '-' and '.'), an IPv4 address, \
                 or an IPv6 address in brackets"
            ));
        }
        Ok(PublicHost {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Its `Host` value: with its port, or any port.
    fn authority(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }

    /// Its browser origin under `scheme`: with its port, or any port.
    fn origin(&self, scheme: &str) -> String {
        match self.port {
            Some(port) => format!("{scheme}://{}:{port}", self.host),
            None => format!("{scheme}://{}:*", self.host),
        }
    }
}

/// Serves Streamable HTTP (or HTTPS) at `ADDR/mcp` until `shutdown`
/// resolves, with at most `sessions`' live sessions. Refuses what
/// [`HttpOptions::check`] refuses. Tells systemd when it is ready and when it
/// stops, and pings its watchdog. With TLS, reads the certificate again at
/// every `SIGHUP` (without, logs it and goes on).
pub async fn serve_http(
    bridge: Bridge,
    options: HttpOptions,
    sessions: Sessions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    options.check()?;
    let addr = options.addr;
    let acceptor = match &options.tls {
        Some(certificates) => {
            let config = certificates.server_config().context("configuring TLS")?;
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
        }
        None => None,
    };
    // Before the socket listens: a SIGHUP from then on reloads.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    let reloads = tokio::spawn(tls::reload_on_hangup(options.tls.clone(), hangups));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let listener =
        ConnectionListener::new(listener, acceptor).context("reading the bound address")?;
    let bound = listener.bound();
    let cancel = CancellationToken::new();
    let scheme = options.scheme();
    let origins = LOOPBACK_ORIGINS
        .iter()
        .map(|origin| (*origin).to_owned())
        .chain(options.public_hosts.iter().map(|host| host.origin(scheme)));
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(cancel.child_token())
        .with_allowed_origins(origins);
    let public = options.public_hosts.iter().map(PublicHost::authority);
    let required = options.auth_required();
    let (config, allowed_hosts) = if bound.ip().is_unspecified() && options.public_hosts.is_empty()
    {
        // Reachable under names we cannot know.
        tracing::warn!(
            "the Host check is off: {bound} is every address of this machine; pass \
             --public-host with the names clients use"
        );
        (config.disable_allowed_hosts(), AllowedHosts(None))
    } else {
        let hosts: Vec<String> = bound_hosts(bound).into_iter().chain(public).collect();
        (
            config.with_allowed_hosts(hosts.clone()),
            AllowedHosts(Some(Arc::new(hosts))),
        )
    };
    let sessions = Arc::new(sessions);
    let authenticator = Arc::new(Authenticator::new(
        bridge.store().clone(),
        required,
        bridge.metrics().clone(),
    ));
    let host_check = axum::middleware::from_fn_with_state(allowed_hosts, observe::check_host);
    let metrics = axum::Router::new()
        .route(METRICS_PATH, axum::routing::get(observe::metrics))
        .with_state(MetricsState {
            store: bridge.store().clone(),
            metrics: bridge.metrics().clone(),
        })
        .layer(host_check.clone());
    // The dashboard logs in with a cookie of its own, not a bearer key.
    let dashboard = bridge_dashboard::router(Dashboard {
        store: bridge.store().clone(),
        metrics: bridge.metrics().clone(),
        login_required: required,
        tls: options.tls.is_some(),
        refresh: DASHBOARD_REFRESH,
        stop: cancel.child_token(),
    })
    .layer(host_check);
    let service = StreamableHttpService::new(
        move || Ok(bridge.for_new_client()),
        Arc::clone(&sessions),
        config,
    );
    let mcp = axum::Router::new().route_service(HTTP_PATH, service).layer(
        axum::middleware::from_fn_with_state(Arc::clone(&sessions), guard),
    );
    let (authenticated, open) = if options.metrics_public {
        (mcp, metrics)
    } else {
        (mcp.merge(metrics), axum::Router::new())
    };
    // A layer covers the routes added before it: authentication first, then
    // the guard on /mcp.
    let app = authenticated
        .layer(axum::middleware::from_fn_with_state(
            authenticator,
            authenticate,
        ))
        .merge(open)
        .merge(dashboard);
    let expiry = {
        let (sessions, cancel) = (Arc::clone(&sessions), cancel.clone());
        tokio::spawn(async move { sessions.expire_until(cancel.cancelled()).await })
    };
    if required {
        tracing::info!("every request needs a key (Authorization: Bearer)");
    } else {
        tracing::info!("requests without a key are served: loopback, without --require-auth");
    }
    tracing::info!("listening on {scheme}://{bound}{HTTP_PATH}");
    tracing::info!("dashboard at {scheme}://{bound}/, metrics at {scheme}://{bound}{METRICS_PATH}");
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
    reloads.abort();
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

/// The `Host` values that name the bound address, with its port: the
/// address itself, and `localhost` for a loopback one.
fn bound_hosts(bound: SocketAddr) -> Vec<String> {
    let port = bound.port();
    let address = match bound {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    };
    let mut hosts = vec![format!("{address}:{port}")];
    if bound.ip().is_loopback() {
        hosts.push(format!("localhost:{port}"));
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_the_bound_address_and_localhost() {
        assert_eq!(
            bound_hosts("127.0.0.1:8765".parse().unwrap()),
            vec!["127.0.0.1:8765", "localhost:8765"]
        );
        assert_eq!(
            bound_hosts("[::1]:9".parse().unwrap()),
            vec!["[::1]:9", "localhost:9"]
        );
        assert_eq!(
            bound_hosts("10.77.0.1:8765".parse().unwrap()),
            vec!["10.77.0.1:8765"]
        );
    }

    #[test]
    fn off_loopback_authentication_is_always_required() {
        let options = |addr: &str, require_auth| HttpOptions {
            addr: addr.parse().unwrap(),
            allow_remote: true,
            tls: None,
            insecure_plaintext: true,
            public_hosts: Vec::new(),
            require_auth,
            metrics_public: false,
        };
        assert!(!options("127.0.0.1:8765", false).auth_required());
        assert!(options("127.0.0.1:8765", true).auth_required());
        assert!(options("10.77.0.1:8765", false).auth_required());
        assert!(options("0.0.0.0:8765", false).auth_required());
    }

    #[test]
    fn public_hosts_are_names_with_an_optional_port() {
        let host = PublicHost::parse("Hub.Example.org:443").unwrap();
        assert_eq!(host.authority(), "hub.example.org:443");
        assert_eq!(host.origin("https"), "https://hub.example.org:443");
        let any_port = PublicHost::parse("hub.example.org").unwrap();
        assert_eq!(any_port.authority(), "hub.example.org");
        assert_eq!(any_port.origin("https"), "https://hub.example.org:*");
        assert_eq!(
            PublicHost::parse("[::1]:8765").unwrap().authority(),
            "[::1]:8765"
        );
        assert_eq!(
            PublicHost::parse("hub:0").unwrap_err(),
            "the port \"0\" is not a number from 1 to 65535"
        );
        assert_eq!(
            PublicHost::parse("hub/x").unwrap_err(),
            "\"hub/x\" is not a host name (letters, digits, '-' and '.'), an IPv4 address, \
             or an IPv6 address in brackets"
        );
    }
}
