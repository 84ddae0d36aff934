//! At most `server.max_connections` client connections at once: each accepted connection
//! holds a permit until it closes, and one accepted beyond the limit is closed at once
//! (the client sees the connection end and may retry elsewhere), so a client opening
//! connections in a loop cannot exhaust memory with them. (Under TLS a connection counts
//! once its handshake is done; a handshake in progress has 10 s.)

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

/// Keeps at most `max` connections of `incoming` open; closes the rest as they arrive.
pub fn limit<IO, E>(
    incoming: impl Stream<Item = Result<IO, E>> + Send + 'static,
    max: usize,
) -> impl Stream<Item = Result<Tagged<IO, OwnedSemaphorePermit>, E>> + Send + 'static
where
    IO: Send + 'static,
    E: Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max));
    let refused = Arc::new(AtomicU64::new(0));
    incoming.filter_map(move |accepted| {
        let outcome = match accepted {
            Err(error) => Some(Err(error)),
            Ok(io) => match permits.clone().try_acquire_owned() {
                Ok(permit) => Some(Ok(Tagged { io, tag: permit })),
                Err(_) => {
                    // Dropping the connection closes it. Warn on the first refusal and
                    // then every 1 000th, not once per connection of a flood.
                    let count = refused.fetch_add(1, Ordering::Relaxed);
                    if count % 1000 == 0 {
                        tracing::warn!(
                            max,
                            refused = count + 1,
                            "connection refused: server.max_connections are open"
                        );
                    }
                    None
                }
            },
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
