//! A `/metrics` server for a daemon without HTTP of its own
//! (`watchdog-monitor --metrics ADDR`): plain HTTP, `GET /metrics` only,
//! meant for loopback or a network the operator trusts (the numbers hold
//! no secret, but say how the team is doing).

use std::future::Future;
use std::net::SocketAddr;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr} for metrics: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving metrics: {0}")]
    Serve(std::io::Error),
}

/// Binds `addr` for [`serve`]; the listener's `local_addr` says the port
/// a port 0 became.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Serves `render()` at `GET /metrics` on `listener` until `shutdown`
/// resolves.
pub async fn serve<R>(
    listener: tokio::net::TcpListener,
    render: R,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError>
where
    R: Fn() -> String + Clone + Send + Sync + 'static,
{
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move {
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, crate::CONTENT_TYPE)],
                        render(),
                    )
                        .into_response()
                }
            }),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "Not Found: this server answers GET /metrics only",
            )
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Serve)
}
