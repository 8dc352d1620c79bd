//! A TCP listener for axum whose connections a request handler can sever, to emulate an
//! endpoint that drops the connection instead of answering.
//!
//! Serve with `into_make_service_with_connect_info::<Connection>()`; a handler that calls
//! [`Connection::sever`] gets its response discarded and the connection closed by hyper.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The kill switch of an accepted connection, handed to the handler through `ConnectInfo`.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Set by the handler to drop the connection instead of answering.
    severed: Arc<AtomicBool>,
}

impl Connection {
    /// Makes the connection fail on its next read or write, so nothing more is answered on it.
    pub fn sever(&self) {
        self.severed.store(true, Ordering::SeqCst);
    }
}

/// A TCP listener whose connections can be severed from the request handler.
pub struct SeveringListener(pub TcpListener);

impl Listener for SeveringListener {
    type Io = SeverableStream;
    type Addr = Connection;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _remote)) => {
                    let severed = Arc::new(AtomicBool::new(false));
                    let io = SeverableStream {
                        stream,
                        severed: severed.clone(),
                    };
                    return (io, Connection { severed });
                }
                // Out of file descriptors and the like: wait instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Not an address: nothing here needs one, the receiver keeps its own.
    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Connection::default())
    }
}

impl Connected<IncomingStream<'_, SeveringListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, SeveringListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP stream that fails every read and write once severed, so hyper closes it unanswered.
pub struct SeverableStream {
    stream: TcpStream,
    severed: Arc<AtomicBool>,
}

impl SeverableStream {
    fn check(&self) -> io::Result<()> {
        if self.severed.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        Ok(())
    }
}

impl AsyncRead for SeverableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for SeverableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write(context, buffer)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }
}
