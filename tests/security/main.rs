//! Black-box security tests through the real broker: TLS and mutual TLS, WebSocket,
//! password files made by the real `mosquitto_passwd`, ACLs, SCRAM-SHA-256, every
//! configured limit, and a corpus of hostile inputs. Each test checks that the broker
//! goes on serving other clients after refusing or closing one.

mod access;
mod acl_deliveries;
mod common;
mod hostile;
mod limits;
mod proxy_protocol;
mod tls;
mod tls_ciphers;
mod tls_parking;
mod websocket;
