//! The per-client task: moves bytes between the socket and the session.
