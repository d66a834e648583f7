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

/// A TCP listener whose connections report how they end.
pub(crate) struct ConnectionListener(pub(crate) TcpListener);

impl Listener for ConnectionListener {
    type Io = TrackedStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (TrackedStream, Peer) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    // A response is written in pieces (head, then each
                    // event of the stream): with Nagle's algorithm, each
                    // piece after the first waits for the client's delayed
                    // acknowledgement, 40 ms a request on Linux.
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%error, "cannot turn Nagle's algorithm off");
                    }
                    let connection = Connection::default();
                    let peer = Peer {
                        addr,
                        connection: Some(connection.clone()),
                    };
                    return (TrackedStream { stream, connection }, peer);
                }
                Err(error) => {
                    // A connection that failed before it was accepted, or
                    // too many open files: go on, after a pause for the
                    // latter.
                    if !matches!(
                        error.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) {
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            addr: self.0.local_addr()?,
            connection: None,
        })
    }
}

impl Connected<IncomingStream<'_, ConnectionListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, ConnectionListener>) -> Peer {
        stream.remote_addr().clone()
    }
}

/// A TCP stream that notices the client's clean close.
pub(crate) struct TrackedStream {
    stream: TcpStream,
    connection: Connection,
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let wanted = buf.remaining() > 0;
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
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
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn accepted() -> (TcpStream, TrackedStream, Connection) {
        let mut listener = ConnectionListener(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap().addr;
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, peer) = listener.accept().await;
        (client, server, peer.connection.unwrap())
    }

    #[tokio::test]
    async fn answers_are_sent_without_waiting_for_acknowledgements() {
        let (_client, server, _connection) = accepted().await;
        assert!(server.stream.nodelay().unwrap());
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
