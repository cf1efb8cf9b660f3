//! The WebSocket upgrade of `ws` and `wss` listeners: only the configured path, the
//! `mqtt` subprotocol (and the older `mqttv3.1`) echoed back, and frame and message
//! sizes bounded by the MQTT packet limit so a client cannot make the broker buffer
//! more than one maximum-size packet per frame.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::WsStream;

/// Room for WebSocket framing around one maximum-size MQTT packet.
const FRAME_OVERHEAD: usize = 64;

/// Subprotocols we speak, in order of preference.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

pub(super) async fn upgrade<S>(
    stream: S,
    path: &str,
    max_packet_size: u32,
) -> std::io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limit = max_packet_size as usize + FRAME_OVERHEAD;
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    // The signature is tungstenite's `Callback`; its error type is an HTTP response.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        if request.uri().path() != path {
            let mut refusal = ErrorResponse::new(Some("no MQTT endpoint at this path".into()));
            *refusal.status_mut() = StatusCode::NOT_FOUND;
            return Err(refusal);
        }
        let offered: Vec<&str> = request
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        if let Some(chosen) = SUBPROTOCOLS.iter().find(|ours| offered.contains(ours)) {
            response
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(chosen));
        }
        Ok(response)
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
        .await
        .map_err(std::io::Error::other)?;
    Ok(WsStream::new(ws))
}
