//! The accept loop shared by the metrics and admin listeners: bounded concurrency (a
//! semaphore; a connection beyond it is closed unanswered, so a flood on an HTTP port
//! cannot take memory or tasks from the MQTT side), optional TLS, a deadline per
//! request, keep-alive up to `Limits::max_requests_per_connection`, and a stop with the
//! broker's shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use super::{read_request, write_response, Limits, ReadError, Request, Response};
use crate::broker::log_throttle::LogThrottle;
use crate::listener::TlsTerminator;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Answers requests. One instance serves every connection of a listener.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> BoxFuture<'_, Response>;
}

/// A running HTTP listener; it stops when the broker shuts down.
pub struct HttpServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Binds `bind` and serves `handler` until `shutdown` turns true. `what` names the
    /// listener in logs and errors ("metrics", "admin").
    pub async fn start(
        what: &'static str,
        bind: SocketAddr,
        tls: Option<Arc<TlsTerminator>>,
        limits: Limits,
        handler: Arc<dyn Handler>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<HttpServer> {
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen on {bind} for {what}"))?;
        let addr = listener
            .local_addr()
            .with_context(|| format!("cannot read the {what} listener's address"))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, "listening ({what}/{scheme})");
        let task = tokio::spawn(accept_loop(listener, tls, limits, handler, shutdown));
        Ok(HttpServer { addr, task })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the accept loop still runs.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Waits for the accept loop to end (after the broker began shutting down).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<TlsTerminator>>,
    limits: Limits,
    handler: Arc<dyn Handler>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_concurrent));
    let refusals = LogThrottle::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stopping| *stopping) => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(error) => {
                tracing::debug!(%error, "http accept failed");
                // Out of descriptors and the like: let the MQTT side have them first.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Some(count) = refusals.occurred(std::time::Instant::now()) {
                tracing::warn!(
                    count,
                    max = limits.max_concurrent,
                    "http connections closed unanswered: too many served at once"
                );
            }
            continue;
        };
        let handler = handler.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve(tcp, &*handler, &limits).await,
                Some(tls) => {
                    let handshake = tokio::time::timeout(limits.request_timeout, tls.accept(tcp));
                    if let Ok(Ok((stream, _))) = handshake.await {
                        serve(stream, &*handler, &limits).await;
                    }
                }
            }
            drop(permit);
        });
    }
}

/// How long, and how many bytes, a refused request's connection is still read after
/// its answer (a "lingering close"): closing with unread bytes would reset the
/// connection, and a client still sending its oversized request could lose the answer.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// Closes the sending side, then reads and discards what the client still sends,
/// bounded by `LINGER` and `LINGER_BYTES`.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    use tokio::io::AsyncReadExt;
    let _ = tokio::time::timeout(LINGER, stream.shutdown()).await;
    let _ = tokio::time::timeout(LINGER, async {
        let mut discarded = 0;
        let mut chunk = [0u8; 8192];
        while discarded < LINGER_BYTES {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(read) => discarded += read,
            }
        }
    })
    .await;
}

/// Serves requests on one connection until the client closes it, asks to, errs, idles
/// past `idle_timeout`, or used up `max_requests_per_connection`.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    handler: &dyn Handler,
    limits: &Limits,
) {
    let mut buf = Vec::new();
    for served in 1..=limits.max_requests_per_connection {
        // The first request gets the request deadline, a later one the idle deadline
        // before its first byte; either way it then has to be complete in time.
        let wait = if served == 1 {
            limits.request_timeout
        } else {
            limits.idle_timeout
        };
        let read = tokio::time::timeout(
            wait + limits.request_timeout,
            read_request(&mut stream, &mut buf, limits),
        )
        .await;
        let request = match read {
            Ok(Ok(request)) => request,
            Ok(Err(ReadError::Refused(response))) => {
                let _ = tokio::time::timeout(
                    limits.request_timeout,
                    write_response(&mut stream, &response, false),
                )
                .await;
                linger(&mut stream).await;
                return;
            }
            Ok(Err(ReadError::Closed | ReadError::Io(_))) | Err(_) => break,
        };
        let keep_alive = request.keep_alive && served < limits.max_requests_per_connection;
        let response = handler.handle(request).await;
        let written = tokio::time::timeout(
            limits.request_timeout,
            write_response(&mut stream, &response, keep_alive),
        )
        .await;
        if !matches!(written, Ok(Ok(()))) || !keep_alive {
            break;
        }
    }
    let _ = tokio::time::timeout(limits.request_timeout, stream.shutdown()).await;
}
