//! The route proposer: one task that commits this node's subscription changes, its
//! retained messages, its released sessions and an adopter's route replacement, one
//! entry at a time and in the order they happened, retrying while there is no leader.

use super::*;

impl ClusterNode {
    /// Has the proposer send this node's whole set of filters again
    /// (`Command::ReplaceRoutes`).
    pub(in crate::cluster) fn propose_all_routes(&self) {
        lock(&self.book).replace_all();
        self.book_changed.notify_one();
    }

    /// Commits that `origin` has no routes any more, together with this node's own
    /// (which include those of the sessions it just adopted from `origin`), so that at no
    /// point of the log do their filters lack a node. The proposer builds and proposes
    /// it in line with this node's other route changes (`propose_loop`). True once
    /// committed.
    pub(in crate::cluster) async fn drop_routes_of(&self, origin: NodeId) -> bool {
        let (done, committed) = tokio::sync::oneshot::channel();
        lock(&self.book).request_drop(origin, done);
        self.book_changed.notify_one();
        let committed = committed.await.unwrap_or(false);
        if committed {
            tracing::info!(origin, "node unreachable: its routes dropped");
        }
        committed
    }

    /// Proposes this node's route changes and retained messages, in order, retrying
    /// while there is no leader.
    pub(super) async fn propose_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let notified = self.book_changed.notified();
            // Releases go one at a time, before anything else is taken from the book
            // (what is taken must be proposed, or put back).
            let released = lock(&self.book).released.pop_front();
            if let Some(client_id) = released {
                self.release(client_id).await;
                continue;
            }
            // Built from the book here, when it is proposed, and in line with this
            // node's other route changes (`book.rs`): built earlier, a full set taken
            // before a filter was added and committed after that filter's own addition
            // removed it again.
            let drop = lock(&self.book).take_drop(self.me);
            if let Some((origin, done, command)) = drop {
                let committed = match self.propose(command).await {
                    Ok(_) => true,
                    Err(error) => {
                        tracing::info!(origin, %error, "dropping an unreachable node's routes failed; retrying");
                        lock(&self.book).drop_failed();
                        false
                    }
                };
                let _ = done.send(committed);
                continue;
            }
            let (command, retained) = {
                let mut book = lock(&self.book);
                let command = book.take_route_change(self.me);
                let take = book.retained.len().min(MAX_RETAINED_PER_ENTRY);
                let retained: Vec<_> = book.retained.drain(..take).collect();
                (command, retained)
            };
            if command.is_none() && retained.is_empty() {
                notified.await;
                continue;
            }
            let mut failed = false;
            if let Some(command) = command {
                if let Err(error) = self.propose(command.clone()).await {
                    tracing::debug!(%error, "route change not committed; retrying");
                    lock(&self.book).route_change_failed(command);
                    failed = true;
                }
            }
            if !retained.is_empty() {
                let command = Command::Batch(
                    retained
                        .iter()
                        .map(|change| Command::Retain {
                            topic: change.topic.clone(),
                            message: change.message.clone(),
                        })
                        .collect(),
                );
                if let Err(error) = self.propose(command).await {
                    tracing::debug!(%error, "retained messages not replicated yet; retrying");
                    let now = Instant::now();
                    let mut book = lock(&self.book);
                    for mut change in retained.into_iter().rev() {
                        change.give_up_if_late(now);
                        book.retained.push_front(change);
                    }
                    failed = true;
                } else {
                    retained.into_iter().for_each(PendingRetained::committed);
                }
            }
            if failed {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            } else {
                backoff = Duration::from_millis(50);
            }
        }
    }

    /// Queues a retained change for the proposer; returns what a QoS 1/2 publisher's
    /// acknowledgement waits for (`super::retained`).
    pub(super) fn replicate_retained(
        &self,
        broker: &Broker,
        message: &Arc<Message>,
    ) -> Option<Completion> {
        let mut book = lock(&self.book);
        if book.retained.len() >= MAX_PENDING_RETAINED {
            drop(book);
            self.stats.retained_dropped.fetch_add(1, Ordering::Relaxed);
            return PendingRetained::refused(message);
        }
        let (pending, completion) = PendingRetained::new(message, broker.wall_clock());
        book.retained.push_back(pending);
        drop(book);
        self.book_changed.notify_one();
        completion
    }
}
