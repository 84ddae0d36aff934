//! At most `server.max_connections` client connections at once: each accepted connection
//! holds a permit until it closes, and one accepted beyond the limit is closed at once
//! (the client sees the connection end and may retry elsewhere), so a client opening
//! connections in a loop cannot exhaust memory or file descriptors with them. Under TLS
//! a connection holds its permit from the moment it is accepted, through its handshake
//! (at most 10 s), so connections that never finish one are bounded too.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection with something that goes with it for its lifetime: its place under
/// the limit, or what its TLS handshake established. Reads and writes go to `io`.
pub struct Tagged<IO, T> {
    pub io: IO,
    pub tag: T,
}

/// The places under `server.max_connections`.
#[derive(Clone)]
pub struct Limiter {
    permits: Arc<Semaphore>,
    refused: Arc<AtomicU64>,
    max: usize,
}

impl Limiter {
    pub fn new(max: usize) -> Limiter {
        Limiter { permits: Arc::new(Semaphore::new(max)), refused: Arc::default(), max }
    }

    /// A place for a connection just accepted, or `None` when every place is taken (the
    /// caller drops the connection, which closes it).
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.permits.clone().try_acquire_owned().ok();
        if permit.is_none() {
            // Warn on the first refusal and then every 1 000th, not once per connection
            // of a flood.
            let count = self.refused.fetch_add(1, Ordering::Relaxed);
            if count % 1000 == 0 {
                tracing::warn!(
                    max = self.max,
                    refused = count + 1,
                    "connection refused: server.max_connections are open"
                );
            }
        }
        permit
    }
}

/// Keeps at most `limiter`'s number of connections of `incoming` open; closes the rest
/// as they arrive.
pub fn limit<IO, E>(
    incoming: impl Stream<Item = Result<IO, E>> + Send + 'static,
    limiter: Limiter,
) -> impl Stream<Item = Result<Tagged<IO, OwnedSemaphorePermit>, E>> + Send + 'static
where
    IO: Send + 'static,
    E: Send + 'static,
{
    incoming.filter_map(move |accepted| {
        let outcome = match accepted {
            Err(error) => Some(Err(error)),
            Ok(io) => limiter.admit().map(|permit| Ok(Tagged { io, tag: permit })),
        };
        std::future::ready(outcome)
    })
}

/// Counting changes nothing about what a connection tells its calls.
impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected
    for Tagged<IO, OwnedSemaphorePermit>
{
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin, T: Unpin> AsyncRead for Tagged<IO, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin, T: Unpin> AsyncWrite for Tagged<IO, T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
