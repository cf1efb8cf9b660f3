//! Wills a restarting cluster node holds back until it knows whether the sessions that
//! owe them are still its own.
//!
//! A cluster node that was down may find, once it caught up with the cluster's log, that
//! a backup adopted its sessions meanwhile (`crate::cluster::adoption`) and published
//! their wills. The wills its restore finds due (a client connected when the node died,
//! a delay that ran out while it was down, a session that expired) and the delayed ones
//! that come due before it caught up are therefore kept here, with their client ids, and
//! published afterwards only for the sessions the node still owns. A single node never
//! holds anything.

use bytestring::ByteString;

use crate::protocol::Will;

use super::{lock, Broker};

impl Broker {
    /// From now until `release_held_wills`, wills of stored sessions are held instead of
    /// published. Call before `restore`.
    pub fn hold_wills(&self) {
        *lock(&self.held_wills) = Some(Vec::new());
    }

    /// Publishes the will of `client_id`'s session, or holds it while wills are held.
    pub(super) fn publish_will_of(&self, client_id: &ByteString, will: Will) {
        {
            let mut held = lock(&self.held_wills);
            if let Some(held) = held.as_mut() {
                held.push((client_id.clone(), will));
                return;
            }
        }
        self.publish_will(will);
    }

    /// Stops holding wills: publishes those of the sessions `still_owned` says are this
    /// node's, drops the others (their new owner published them). Returns how many were
    /// published and how many dropped.
    pub fn release_held_wills(&self, still_owned: impl Fn(&str) -> bool) -> (usize, usize) {
        let Some(held) = lock(&self.held_wills).take() else {
            return (0, 0);
        };
        let mut published = 0;
        let mut dropped = 0;
        for (client_id, will) in held {
            if still_owned(&client_id) {
                published += 1;
                self.publish_will(will);
            } else {
                dropped += 1;
                tracing::info!(
                    %client_id,
                    "will not published here: the session moved to another node while this one was down"
                );
            }
        }
        (published, dropped)
    }
}
