//! Where the broker records state changes (sessions, subscriptions, retained messages,
//! queued and inflight messages) so that they survive the connection and the process.
