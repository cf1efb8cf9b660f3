//! The HTTP listener of the metrics: `GET /metrics` (Prometheus text format) and
//! `GET /health` (200 while the broker serves), on its own address, loopback by default.
//!
//! A scrape is one short request from a known collector, so this is a deliberately small
//! HTTP/1.1 responder instead of a web stack: it reads one request head (bounded in size
//! and time), answers, and closes. Requests are served one task each, at most
//! `MAX_CONCURRENT_REQUESTS` at once; more are closed unanswered, so a flood on this port
//! cannot take memory or tasks from the MQTT side.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::broker::Broker;

/// Largest request head read; a scrape request is a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a client has to send its request and read the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONCURRENT_REQUESTS: usize = 8;
const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The running endpoint; it stops when the broker shuts down.
pub struct MetricsEndpoint {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsEndpoint {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the accept loop to end (after the broker began shutting down).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Binds `bind` and serves the metrics of `broker` until it shuts down.
pub async fn start(bind: SocketAddr, broker: Arc<Broker>) -> anyhow::Result<MetricsEndpoint> {
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} for metrics"))?;
    let addr = listener
        .local_addr()
        .context("cannot read the metrics listener's address")?;
    tracing::info!(%addr, "listening (metrics/http)");
    let task = tokio::spawn(accept_loop(listener, broker));
    Ok(MetricsEndpoint { addr, task })
}

async fn accept_loop(listener: TcpListener, broker: Arc<Broker>) {
    let mut shutdown = broker.shutdown_signal();
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stopping| *stopping) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!(%error, "metrics accept failed");
                // Out of descriptors and the like: let the MQTT side have them first.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, serve(stream, &broker)).await;
            drop(permit);
        });
    }
}

async fn serve(mut stream: TcpStream, broker: &Broker) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        if head.len() >= MAX_REQUEST_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let request_line = head.split(|byte| *byte == b'\r').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    // The query string (e.g. Prometheus' ?format=) does not change the answer.
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let body = broker.metrics().render(broker);
            respond(&mut stream, "200 OK", PROMETHEUS_CONTENT_TYPE, &body).await
        }
        ("GET", "/health") if broker.cluster_healthy() => {
            respond(&mut stream, "200 OK", "text/plain", "ok\n").await
        }
        // A cluster node without a leader refuses new persistent sessions: not healthy.
        ("GET", "/health") => {
            respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                "no cluster leader\n",
            )
            .await
        }
        ("GET", _) => respond(&mut stream, "404 Not Found", "text/plain", "not found\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", "").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::storage::MemoryStore;

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn serves_metrics_health_and_refuses_the_rest() {
        let broker = Broker::new(Config::default(), Arc::new(MemoryStore::new()));
        let endpoint = start("127.0.0.1:0".parse().unwrap(), broker.clone())
            .await
            .unwrap();
        let addr = endpoint.local_addr();
        let metrics = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains(PROMETHEUS_CONTENT_TYPE), "{metrics}");
        assert!(
            metrics.contains("\nfleetmq_connections_total 0\n"),
            "{metrics}"
        );
        let health = get(addr, "GET /health HTTP/1.0\r\n\r\n").await;
        assert!(health.starts_with("HTTP/1.1 200 OK\r\n") && health.ends_with("\r\n\r\nok\n"));
        let missing = get(addr, "GET /nothing HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        // Exactly the limit and no end of head: all of it is read, so the close is clean.
        let mut huge = String::from("GET /metrics HTTP/1.1\r\nX: ");
        huge.push_str(&"a".repeat(MAX_REQUEST_HEAD - huge.len()));
        assert!(get(addr, &huge).await.starts_with("HTTP/1.1 431 "));
        broker.begin_shutdown();
        endpoint.stopped().await;
    }
}
