//! One peer's side of the link: its bounded outbox, what is dropped when it is full or
//! the peer is away, and the flow control of forwarded QoS 1/2 messages (the high- and
//! low-water marks and the pause their publishers share; see the parent module).

use super::*;

/// Why a frame was not queued (counted and logged either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotQueued {
    LinkDown,
    /// The outbox is at `cluster.link_buffer_bytes`.
    OutboxFull,
}

/// Publishers waiting for the outbox to drain below the low-water mark.
pub(super) struct Pause {
    pub(super) promise: WritePromise,
    pub(super) waiters: SharedCompletion,
    pub(super) since: Instant,
}

pub(super) struct Outbox {
    pub(super) frames: VecDeque<Bytes>,
    pub(super) bytes: usize,
    /// Bumped per connection, so a writer of an old connection stops taking frames.
    pub(super) connection: u64,
    pub(super) pause: Option<Pause>,
    /// A pause outlasted its bound: nobody waits for this peer until the outbox drained
    /// below the low-water mark.
    pub(super) stalled: bool,
}

impl Outbox {
    /// Drops every queued frame (the link went down or was replaced). Publishers paused
    /// for the outbox go on: their QoS 1/2 messages are kept until the peer acknowledges
    /// them (`super::unacked`), which their acknowledgements wait for anyway.
    pub(super) fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
        self.stalled = false;
        if let Some(pause) = self.pause.take() {
            pause.promise.fulfil(Vec::new());
        }
    }

    /// Lets waiting publishers go on once the outbox is at or below the low-water mark.
    pub(super) fn relieve_if_drained(&mut self, low_water: usize) {
        if self.bytes <= low_water && (self.pause.is_some() || self.stalled) {
            self.stalled = false;
            if let Some(pause) = self.pause.take() {
                pause.promise.fulfil(Vec::new());
            }
        }
    }
}

pub struct PeerLink {
    pub id: NodeId,
    pub(super) addr: Mutex<String>,
    pub(super) outbox: Mutex<Outbox>,
    /// Forwarded QoS 1/2 messages waiting for the peer's acknowledgement
    /// (`super::unacked`). Locked before `outbox` when both are.
    pub(super) unacked: Mutex<super::Unacked>,
    pub(super) ready: Notify,
    pub stats: LinkStats,
    pub(super) limit: usize,
    /// Longest pause of publishers (zero: they never wait).
    pub(super) publisher_pause: Duration,
    pub(super) drops_logged: LogThrottle,
    pub(super) stalls_logged: LogThrottle,
}

impl PeerLink {
    pub fn addr(&self) -> String {
        lock(&self.addr).clone()
    }

    pub fn is_connected(&self) -> bool {
        self.stats.connected.load(Ordering::Relaxed)
    }

    /// Bytes of frames waiting in the outbox.
    pub fn outbox_bytes(&self) -> usize {
        lock(&self.outbox).bytes
    }

    /// Queues a frame; false (counted, logged rate-limited) when the peer is down or the
    /// outbox full.
    pub fn send(&self, frame: Bytes) -> bool {
        self.forward(frame, false).is_ok()
    }

    /// Queues a frame. `Err` (counted, logged rate-limited) when the peer is down or the
    /// outbox full. For a message acknowledged to its publisher (`acknowledged`: QoS 1/2)
    /// queued above the high-water mark, `Ok(Some(..))`: what the acknowledgement waits
    /// for (the outbox drained, see the module header); otherwise `Ok(None)`.
    pub fn forward(
        &self,
        frame: Bytes,
        acknowledged: bool,
    ) -> Result<Option<Completion>, NotQueued> {
        if !self.is_connected() {
            self.dropped("the link is down");
            return Err(NotQueued::LinkDown);
        }
        let wait = {
            let mut outbox = lock(&self.outbox);
            if outbox.bytes + frame.len() > self.limit {
                drop(outbox);
                self.dropped("its outbox (cluster.link_buffer_bytes) is full");
                return Err(NotQueued::OutboxFull);
            }
            outbox.bytes += frame.len();
            outbox.frames.push_back(frame);
            let congested = outbox.bytes > self.high_water() && !outbox.stalled;
            (acknowledged && congested && !self.publisher_pause.is_zero())
                .then(|| self.pause(&mut outbox))
        };
        self.ready.notify_one();
        Ok(wait)
    }

    /// The completion of the current pause, started now if none is under way.
    pub(super) fn pause(&self, outbox: &mut Outbox) -> Completion {
        self.stats.paused_publishes.fetch_add(1, Ordering::Relaxed);
        let pause = outbox.pause.get_or_insert_with(|| {
            let (promise, waiters) = write_promise();
            Pause {
                promise,
                waiters,
                since: Instant::now(),
            }
        });
        Completion::shared(pause.waiters.clone())
    }

    /// Above this many queued bytes, acknowledgements of forwarded QoS 1/2 messages wait.
    pub(super) fn high_water(&self) -> usize {
        self.limit / 2
    }

    /// Waiting acknowledgements go on once the outbox is down to this many bytes.
    pub(super) fn low_water(&self) -> usize {
        self.limit / 4
    }

    /// Moves queued frames of `connection` into `buffer` (up to `WRITE_BATCH_BYTES`),
    /// letting paused publishers go on once the outbox drained. False when `connection`
    /// has been replaced.
    pub(super) fn take_batch(&self, connection: u64, buffer: &mut Vec<u8>) -> bool {
        let mut outbox = lock(&self.outbox);
        if outbox.connection != connection {
            return false;
        }
        while buffer.len() < WRITE_BATCH_BYTES {
            let Some(frame) = outbox.frames.pop_front() else {
                break;
            };
            outbox.bytes -= frame.len();
            buffer.extend_from_slice(&frame);
        }
        outbox.relieve_if_drained(self.low_water());
        true
    }

    /// Ends a pause that outlasted `publisher_pause`: its publishers go on (their
    /// messages are queued) and nobody waits for this peer until its outbox drained.
    pub(super) fn stall_if_late(&self) {
        let mut outbox = lock(&self.outbox);
        let late = outbox
            .pause
            .as_ref()
            .is_some_and(|pause| pause.since.elapsed() >= self.publisher_pause);
        if !late {
            return;
        }
        outbox.stalled = true;
        if let Some(pause) = outbox.pause.take() {
            pause.promise.fulfil(Vec::new());
        }
        drop(outbox);
        self.stats.pause_timeouts.fetch_add(1, Ordering::Relaxed);
        if let Some(count) = self.stalls_logged.occurred(Instant::now()) {
            tracing::warn!(
                peer = self.id,
                count,
                "publishers waited limits.slow_consumer_timeout_ms for a cluster peer's outbox to drain; they go on without waiting until it has"
            );
        }
    }

    pub(super) fn dropped(&self, why: &str) {
        self.stats.dropped_frames.fetch_add(1, Ordering::Relaxed);
        if let Some(count) = self.drops_logged.occurred(Instant::now()) {
            tracing::warn!(
                peer = self.id,
                count,
                "frames for a cluster peer dropped: {why}"
            );
        }
    }
}
