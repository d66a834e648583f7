//! The stdio transport: one JSON-RPC message per line, as MCP clients speak
//! to the servers they start, in place of `rmcp`'s own.
//!
//! Two things differ from `rmcp`'s line transport, and they are why this one
//! exists:
//!
//! * every line gets an answer (`wire`): one that is not JSON, not a
//!   JSON-RPC message, or larger than [`MAX_MESSAGE_BYTES`] is answered with
//!   its JSON-RPC error instead of being skipped;
//! * every request carries a [`Receipt`] in its extensions, marked once its
//!   response has been written and flushed whole, which is how
//!   `check_messages` knows that the messages it handed out reached the
//!   client (`delivery`).
//!
//! A reader task splits stdin into lines (never buffering more than the
//! limit) and answers the bad ones itself; the good ones reach `rmcp`
//! through a channel, so that [`Transport::receive`] is cancel-safe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::RoleServer;
use rmcp::model::{ClientJsonRpcMessage, GetExtensions, JsonRpcMessage, RequestId};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::delivery::Receipt;
use crate::wire::{self, MAX_MESSAGE_BYTES};

/// The receipts of requests whose responses have not been written yet;
/// at most this many are kept (a client that cancels requests leaves
/// theirs behind).
const OPEN_RECEIPTS: usize = 1024;

/// Where the responses go, shared by the reader task (its error answers)
/// and `rmcp` (everything else).
type Writer<W> = Arc<tokio::sync::Mutex<W>>;

/// Receipts by request id, until the response is written.
type Receipts = Arc<Mutex<HashMap<RequestId, Receipt>>>;

/// A server transport over a byte stream pair (stdin and stdout).
pub(crate) struct LineTransport<W> {
    incoming: mpsc::Receiver<ClientJsonRpcMessage>,
    writer: Writer<W>,
    receipts: Receipts,
    reader: JoinHandle<()>,
}

impl<W> LineTransport<W>
where
    W: AsyncWrite + Send + Unpin + 'static,
{
    /// Reads requests from `read`, writes responses to `write`.
    pub(crate) fn new<R>(read: R, write: W) -> LineTransport<W>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let (sender, incoming) = mpsc::channel(64);
        let writer = Arc::new(tokio::sync::Mutex::new(write));
        let receipts = Receipts::default();
        let reader = tokio::spawn(read_lines(
            BufReader::new(read),
            sender,
            Arc::clone(&writer),
            Arc::clone(&receipts),
        ));
        LineTransport {
            incoming,
            writer,
            receipts,
            reader,
        }
    }
}

impl<W> Drop for LineTransport<W> {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Splits `read` into lines and passes each on (or answers it) until the
/// end of input, or until nobody listens any more.
async fn read_lines<R, W>(
    mut read: BufReader<R>,
    sender: mpsc::Sender<ClientJsonRpcMessage>,
    writer: Writer<W>,
    receipts: Receipts,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut line = Vec::new();
    loop {
        line.clear();
        let outcome = match read_line(&mut read, &mut line).await {
            Ok(Line::End) => return,
            Ok(Line::TooLong(bytes)) => Err(wire::too_large(bytes)),
            Ok(Line::Complete) => {
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                wire::decode(text)
            }
            Err(error) => {
                tracing::debug!(%error, "cannot read stdin");
                return;
            }
        };
        match outcome {
            Ok(Some(mut message)) => {
                track(&mut message, &receipts);
                if sender.send(message).await.is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(rejection) => {
                tracing::debug!(code = rejection.code(), "answering a malformed message");
                let mut writer = writer.lock().await;
                let written = writer.write_all(&rejection.line()).await;
                if written.is_err() || writer.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Gives a request its receipt; forgets that of a request the client
/// cancelled (its response is never written).
fn track(message: &mut ClientJsonRpcMessage, receipts: &Receipts) {
    let mut receipts = receipts.lock().unwrap_or_else(|poison| poison.into_inner());
    match message {
        JsonRpcMessage::Request(request) => {
            let receipt = Receipt::on(None);
            request.request.extensions_mut().insert(receipt.clone());
            if receipts.len() >= OPEN_RECEIPTS {
                receipts.clear();
            }
            receipts.insert(request.id.clone(), receipt);
        }
        JsonRpcMessage::Notification(notification) => {
            if let rmcp::model::ClientNotification::CancelledNotification(cancelled) =
                &notification.notification
                && let Some(id) = &cancelled.params.request_id
            {
                receipts.remove(id);
            }
        }
        _ => {}
    }
}

/// What [`read_line`] read.
enum Line {
    /// A line, with its newline (or the last, without).
    Complete,
    /// A line longer than the limit, skipped; its length.
    TooLong(usize),
    /// The end of input.
    End,
}

/// Reads one line into `line`, keeping at most [`MAX_MESSAGE_BYTES`] of it.
async fn read_line<R: AsyncRead + Unpin>(
    read: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> std::io::Result<Line> {
    let mut skipped = 0_usize;
    loop {
        let available = read.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (skipped, line.is_empty()) {
                (0, true) => Line::End,
                (0, false) => Line::Complete,
                (skipped, _) => Line::TooLong(skipped),
            });
        }
        let newline = available.iter().position(|byte| *byte == b'\n');
        let take = newline.map_or(available.len(), |at| at + 1);
        if skipped > 0 || line.len() + take > MAX_MESSAGE_BYTES + 1 {
            skipped += line.len() + take;
            line.clear();
        } else {
            line.extend_from_slice(&available[..take]);
        }
        read.consume(take);
        if newline.is_some() {
            return Ok(if skipped > 0 {
                Line::TooLong(skipped - 1)
            } else {
                Line::Complete
            });
        }
    }
}

impl<W> Transport<RoleServer> for LineTransport<W>
where
    W: AsyncWrite + Send + Unpin + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let writer = Arc::clone(&self.writer);
        let receipts = Arc::clone(&self.receipts);
        async move {
            let mut line = serde_json::to_vec(&item)?;
            line.push(b'\n');
            {
                let mut writer = writer.lock().await;
                writer.write_all(&line).await?;
                writer.flush().await?;
            }
            let answered = match &item {
                JsonRpcMessage::Response(response) => Some((&response.id, true)),
                JsonRpcMessage::Error(error) => error.id.as_ref().map(|id| (id, false)),
                _ => None,
            };
            if let Some((id, success)) = answered {
                let receipt = receipts
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .remove(id);
                if let Some(receipt) = receipt.filter(|_| success) {
                    receipt.written();
                }
            }
            Ok(())
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        self.incoming.recv().await
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.reader.abort();
        self.writer.lock().await.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8]) -> Vec<Result<String, usize>> {
        let mut read = BufReader::with_capacity(7, input);
        let mut line = Vec::new();
        let mut out = Vec::new();
        loop {
            line.clear();
            match read_line(&mut read, &mut line).await.unwrap() {
                Line::End => return out,
                Line::Complete => out.push(Ok(String::from_utf8(line.clone()).unwrap())),
                Line::TooLong(bytes) => out.push(Err(bytes)),
            }
        }
    }

    #[tokio::test]
    async fn lines_are_split_across_reads_and_the_last_may_lack_its_newline() {
        assert_eq!(
            lines(b"{\"a\":1}\n\n{\"b\":22222222}\ntail").await,
            vec![
                Ok("{\"a\":1}\n".to_owned()),
                Ok("\n".to_owned()),
                Ok("{\"b\":22222222}\n".to_owned()),
                Ok("tail".to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn a_line_over_the_limit_is_skipped_whole() {
        let mut input = vec![b'x'; MAX_MESSAGE_BYTES + 10];
        input.extend_from_slice(b"\n{}\n");
        assert_eq!(
            lines(&input).await,
            vec![Err(MAX_MESSAGE_BYTES + 10), Ok("{}\n".to_owned())]
        );
    }
}
