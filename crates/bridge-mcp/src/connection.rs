//! The HTTP server's TCP connections, as far as delivery needs to know
//! them: which connection a request came on, and whether the client closed
//! it cleanly.
//!
//! An HTTP/1.1 client sends its next request on a connection only after
//! reading the previous response whole; and a client that closes a
//! connection with a response still unread in its buffer makes its kernel
//! reset the connection rather than close it (FIN). So an answer written on
//! a connection reached its client if the client's next request comes on
//! that same connection, or if the client closed it cleanly (the server
//! read the end of it). A connection cut in the network, reset, or simply
//! still open while the client calls through another, proves nothing
//! (`delivery`).
//!
//! Over TLS the same holds for the TLS stream: a client's clean close is its
//! `close_notify` (an end of stream without one is an error, and proves
//! nothing). Handshakes run in tasks of their own, at most
//! [`MAX_HANDSHAKES`] at once and each for at most [`HANDSHAKE_TIME`], so
//! a slow or silent client delays no other.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// TLS handshakes in progress at once; past it, connections wait in the
/// kernel's backlog.
pub(crate) const MAX_HANDSHAKES: usize = 256;
/// How long a client may take to complete its TLS handshake.
pub(crate) const HANDSHAKE_TIME: Duration = Duration::from_secs(10);

/// One accepted TCP connection. Clones are the same connection.
#[derive(Clone, Debug, Default)]
pub struct Connection(Arc<AtomicBool>);

impl Connection {
    /// Whether `other` is this connection.
    pub(crate) fn is(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Whether the client closed the connection cleanly: the server read
    /// its end (and no reset before).
    pub(crate) fn closed_by_client(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn client_closed(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Who is at the other end of a request: its address, and its connection
/// (`None` for the listener's own address).
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The connection the request came on.
    pub connection: Option<Connection>,
}

/// A TCP listener, with TLS or without, whose connections report how they
/// end. Accepts in a task of its own, stopped when the listener is dropped.
pub(crate) struct ConnectionListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TrackedStream, Peer)>,
    accepting: JoinHandle<()>,
}

impl Drop for ConnectionListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl ConnectionListener {
    /// Accepts connections on `listener`, over TLS if `tls` is given.
    pub(crate) fn new(listener: TcpListener, tls: Option<TlsAcceptor>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (ready, incoming) = mpsc::channel(MAX_HANDSHAKES);
        let accepting = tokio::spawn(accept(listener, tls, ready));
        Ok(ConnectionListener {
            local,
            ready: incoming,
            accepting,
        })
    }

    /// The address it listens on.
    pub(crate) fn bound(&self) -> SocketAddr {
        self.local
    }
}

/// Accepts connections and hands them, after their handshake, to `ready`,
/// until its receiver is gone.
async fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ready: mpsc::Sender<(TrackedStream, Peer)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // A connection that failed before it was accepted, or too
                // many open files: go on, after a pause for the latter.
                if !matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                ) {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        // A response is written in pieces (head, then each event of the
        // stream): with Nagle's algorithm, each piece after the first waits
        // for the client's delayed acknowledgement, 40 ms a request on Linux.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot turn Nagle's algorithm off");
        }
        let Some(tls) = &tls else {
            if ready.send(tracked(Io::Plain(stream), addr)).await.is_err() {
                return;
            }
            continue;
        };
        let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
            return;
        };
        let (tls, ready) = (tls.clone(), ready.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIME, tls.accept(stream)).await {
                Ok(Ok(stream)) => {
                    // An error: the server is shutting down.
                    let _ = ready.send(tracked(Io::Tls(Box::new(stream)), addr)).await;
                }
                // Scanners and plain-HTTP clients: not worth a warning each.
                Ok(Err(error)) => tracing::debug!(%addr, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        });
    }
}

fn tracked(io: Io, addr: SocketAddr) -> (TrackedStream, Peer) {
    let connection = Connection::default();
    let peer = Peer {
        addr,
        connection: Some(connection.clone()),
    };
    (TrackedStream { io, connection }, peer)
}

impl Listener for ConnectionListener {
    type Io = TrackedStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (TrackedStream, Peer) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task ended (it does not, but for a panic):
            // accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            addr: self.local,
            connection: None,
        })
    }
}

impl Connected<IncomingStream<'_, ConnectionListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, ConnectionListener>) -> Peer {
        stream.remote_addr().clone()
    }
}

/// A connection's byte stream, plain or TLS.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection's stream that notices the client's clean close.
pub(crate) struct TrackedStream {
    io: Io,
    connection: Connection,
}

/// Calls `$method` on whichever stream `$io` holds.
macro_rules! on_io {
    ($io:expr, $stream:ident => $call:expr) => {
        match $io {
            Io::Plain($stream) => $call,
            Io::Tls($stream) => $call,
        }
    };
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let wanted = buf.remaining() > 0;
        let polled = on_io!(&mut self.io, stream => Pin::new(stream).poll_read(cx, buf));
        if matches!(polled, Poll::Ready(Ok(()))) && wanted && buf.filled().len() == before {
            self.connection.client_closed();
        }
        polled
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_io!(&mut self.io, stream => Pin::new(stream).poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_io!(&mut self.io, stream => Pin::new(stream).poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_io!(&mut self.io, stream => Pin::new(stream).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_io!(&mut self.io, stream => Pin::new(stream).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        on_io!(&self.io, stream => stream.is_write_vectored())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn accepted() -> (TcpStream, TrackedStream, Connection) {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut listener = ConnectionListener::new(tcp, None).unwrap();
        let addr = listener.local_addr().unwrap().addr;
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, peer) = listener.accept().await;
        (client, server, peer.connection.unwrap())
    }

    #[tokio::test]
    async fn answers_are_sent_without_waiting_for_acknowledgements() {
        let (_client, server, _connection) = accepted().await;
        let Io::Plain(stream) = &server.io else {
            panic!("a plain connection")
        };
        assert!(stream.nodelay().unwrap());
    }

    #[tokio::test]
    async fn a_clean_close_by_the_client_is_seen() {
        let (mut client, mut server, connection) = accepted().await;
        client.write_all(b"request").await.unwrap();
        let mut buf = [0_u8; 16];
        assert_eq!(server.read(&mut buf).await.unwrap(), 7);
        assert!(!connection.closed_by_client());
        drop(client);
        assert_eq!(server.read(&mut buf).await.unwrap(), 0);
        assert!(connection.closed_by_client());
    }

    #[tokio::test]
    async fn a_reset_is_not_a_clean_close() {
        let (client, mut server, connection) = accepted().await;
        server
            .write_all(b"an answer the client never reads")
            .await
            .unwrap();
        client.readable().await.unwrap();
        // Closed with unread data: the client's kernel resets.
        drop(client);
        let mut buf = [0_u8; 16];
        let read = server.read(&mut buf).await;
        assert!(read.is_err(), "{read:?}");
        assert!(!connection.closed_by_client());
    }

    #[tokio::test]
    async fn connections_are_told_apart() {
        let (_, _, one) = accepted().await;
        let (_, _, two) = accepted().await;
        assert!(one.is(&one.clone()));
        assert!(!one.is(&two));
    }
}
