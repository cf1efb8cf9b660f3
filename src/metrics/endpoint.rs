//! The HTTP listener of the metrics: `GET /metrics` (Prometheus text format), `GET
//! /health` (200 while the broker is healthy, 503 with the reasons otherwise) and `GET
//! /ready` (200 once started and healthy), on its own address, loopback by default.
//!
//! A scrape is one short request from a known collector; the listener is the small
//! bounded HTTP/1.1 server of `crate::http` with tight limits: one request per
//! connection, a request head of at most `MAX_REQUEST_HEAD` bytes, no body, at most
//! `MAX_CONCURRENT_REQUESTS` served at
//! once (more are closed unanswered, so a flood on this port cannot take memory or
//! tasks from the MQTT side).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::http::server::{BoxFuture, Handler, HttpServer};
use crate::http::{Limits, Request, Response};

/// Largest request head read; a scrape request is a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a client has to send its request and read the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONCURRENT_REQUESTS: usize = 8;
const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The running endpoint; it stops when the broker shuts down.
pub struct MetricsEndpoint {
    server: HttpServer,
}

impl MetricsEndpoint {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Waits for the accept loop to end (after the broker began shutting down).
    pub async fn stopped(self) {
        self.server.stopped().await
    }
}

struct Metrics {
    broker: Arc<Broker>,
}

impl Handler for Metrics {
    fn handle(&self, request: Request) -> BoxFuture<'_, Response> {
        let response = match (request.method.as_str(), request.path.as_str()) {
            // The query string (e.g. Prometheus' ?format=) does not change the answer.
            ("GET", "/metrics") => Response::new(
                200,
                PROMETHEUS_CONTENT_TYPE,
                self.broker.metrics().render(&self.broker),
            ),
            ("GET", "/health" | "/ready") => {
                let report = crate::health::check(&self.broker);
                let ok = if request.path == "/ready" {
                    report.ready
                } else {
                    report.healthy()
                };
                Response::json(if ok { 200 } else { 503 }, &report)
            }
            ("GET", _) => Response::error(404, "not_found", "not found"),
            _ => Response::error(405, "method_not_allowed", "only GET is served")
                .with_header("Allow", "GET"),
        };
        Box::pin(std::future::ready(response))
    }
}

/// Binds `bind` and serves the metrics of `broker` until it shuts down.
pub async fn start(bind: SocketAddr, broker: Arc<Broker>) -> anyhow::Result<MetricsEndpoint> {
    let limits = Limits {
        max_head: MAX_REQUEST_HEAD,
        max_body: 0,
        max_concurrent: MAX_CONCURRENT_REQUESTS,
        request_timeout: REQUEST_TIMEOUT,
        idle_timeout: REQUEST_TIMEOUT,
        // One request, then close, as before the listener shared `crate::http`: a
        // scrape every few seconds gains nothing from keep-alive.
        max_requests_per_connection: 1,
    };
    let shutdown = broker.shutdown_signal();
    let handler = Arc::new(Metrics { broker });
    let server = HttpServer::start("metrics", bind, None, limits, handler, shutdown).await?;
    Ok(MetricsEndpoint { server })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::storage::MemoryStore;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

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
        assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
        assert!(health.contains("\"status\":\"ok\""), "{health}");
        // Not started by `server::start`: healthy, but not ready.
        let ready = get(addr, "GET /ready HTTP/1.0\r\n\r\n").await;
        assert!(ready.starts_with("HTTP/1.1 503 "), "{ready}");
        broker.health().mark_ready();
        let ready = get(addr, "GET /ready HTTP/1.0\r\n\r\n").await;
        assert!(ready.starts_with("HTTP/1.1 200 "), "{ready}");
        let missing = get(addr, "GET /nothing HTTP/1.0\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = get(addr, "POST /metrics HTTP/1.0\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        // Exactly the limit and no end of head: all of it is read, so the close is clean.
        let mut huge = String::from("GET /metrics HTTP/1.1\r\nX: ");
        huge.push_str(&"a".repeat(MAX_REQUEST_HEAD - huge.len()));
        assert!(get(addr, &huge).await.starts_with("HTTP/1.1 431 "));
        broker.begin_shutdown();
        endpoint.stopped().await;
    }
}
