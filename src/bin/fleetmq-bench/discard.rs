//! The discard server: accepts MQTT connections, answers CONNACK, SUBACK, PUBACK,
//! PUBREC/PUBCOMP and PINGRESP, and drops every message.
//!
//! It does the least work any broker could do, so the rate the generator reaches
//! against it is the generator's own ceiling. Running a scenario against it shows
//! how far above the brokers' rates that ceiling is.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::conn::Conn;
use crate::wire;

/// A connection silent this long is closed.
const IDLE_CLOSE: Duration = Duration::from_secs(600);

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    publishes: AtomicU64,
}

/// Serves until `lifetime` has passed, then prints what it took.
pub async fn serve(bind: SocketAddr, lifetime: Duration) -> anyhow::Result<()> {
    let listener = TcpListener::bind(bind).await?;
    eprintln!("discard server listening on {}", listener.local_addr()?);
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let until = started + lifetime;
    loop {
        let accepted = tokio::time::timeout_at(until, listener.accept()).await;
        let Ok(accepted) = accepted else {
            break;
        };
        let (stream, _) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of descriptors or similar: back off instead of spinning.
                eprintln!("accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            if let Ok(mut conn) = Conn::from_stream(stream) {
                let publishes = serve_connection(&mut conn, until).await;
                counters.publishes.fetch_add(publishes, Ordering::Relaxed);
            }
        });
    }
    eprintln!(
        "discard server: {} connections, {} publishes dropped in {:.1} s",
        counters.connections.load(Ordering::Relaxed),
        counters.publishes.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Answers one client until it disconnects, errs, idles out or the server's time is
/// up; returns how many PUBLISH packets it dropped.
async fn serve_connection(conn: &mut Conn, until: Instant) -> u64 {
    let mut publishes = 0u64;
    let mut idle_since = Instant::now();
    loop {
        let now = Instant::now();
        if now >= until || now.duration_since(idle_since) >= IDLE_CLOSE {
            return publishes;
        }
        match conn.read_some(Duration::from_secs(1)).await {
            Ok(true) => idle_since = Instant::now(),
            Ok(false) => continue,
            Err(_) => return publishes,
        }
        let mut closing = false;
        let handled = conn.drain_frames(|frame, replies| {
            match frame.packet_type {
                wire::CONNECT => wire::connack(replies),
                wire::SUBSCRIBE => wire::suback_for(replies, frame.body)?,
                wire::PUBLISH => {
                    publishes += 1;
                    if let Some(id) = frame.publish()?.packet_id {
                        let ack = if frame.qos() == 1 {
                            wire::PUBACK
                        } else {
                            wire::PUBREC
                        };
                        wire::ack(replies, ack, id);
                    }
                }
                wire::PUBREL => wire::ack(replies, wire::PUBCOMP, frame.packet_id()?),
                wire::PINGREQ => wire::pingresp(replies),
                wire::DISCONNECT => closing = true,
                _ => {}
            }
            Ok(())
        });
        if handled.is_err() || conn.flush().await.is_err() || closing {
            return publishes;
        }
    }
}
