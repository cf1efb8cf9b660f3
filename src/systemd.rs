//! The systemd service protocol (`Type=notify`): READY=1 once the listeners accept,
//! RELOADING=1 / READY=1 around a reload, STOPPING=1 at shutdown, and WATCHDOG=1 pings
//! while the broker is healthy.
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every call does nothing. A failed send is
//! logged, never fatal: the broker serves its clients whether or not a service manager
//! listens.

use std::time::Duration;

use sd_notify::NotifyState;

/// Talks to the service manager, if any.
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    /// `WATCHDOG_USEC`, when the service manager expects pings.
    watchdog: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier {
            watchdog: sd_notify::watchdog_enabled().filter(|timeout| !timeout.is_zero()),
        }
    }

    /// How often to ping: half the watchdog timeout, as sd_watchdog_enabled(3) advises,
    /// so one late tick does not get the broker killed.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|timeout| timeout / 2)
    }

    /// The broker serves: state restored, listeners accepting.
    pub fn ready(&self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload begins; `ready` ends it.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[NotifyState::Reloading, now]),
            Err(_) => send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&self) {
        send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
    }

    pub fn watchdog(&self) {
        send(&[NotifyState::Watchdog]);
    }
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify the service manager");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_at_half_the_watchdog_timeout() {
        let notifier = Notifier {
            watchdog: Some(Duration::from_secs(30)),
        };
        assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(15)));
        let without = Notifier { watchdog: None };
        assert_eq!(without.watchdog_interval(), None);
    }
}
