//! `GET retained`, `DELETE retained/{topic}` and `POST publish`.
//!
//! A publish goes through the broker's normal path (`Broker::publish_durably`): it is
//! retained, routed, queued and stored like a client's PUBLISH, from no session (so No
//! Local never drops it), and bypasses the ACL: the operator holds the admin token. The
//! answer waits until its writes are durable.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::broker::inspect::{remaining_expiry, Page};
use crate::http::{Request, Response};
use crate::message::Message;
use crate::protocol::{PublishProperties, QoS};

use super::{json_body, paging, AdminContext};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A retained message as `GET retained` lists it.
#[derive(Debug, Serialize)]
struct RetainedView {
    topic: String,
    qos: u8,
    payload_size: usize,
    properties: PropertiesView,
    /// With `?payload=true`: the payload as text when it is UTF-8...
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    /// ...and always as base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct PropertiesView {
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_format_indicator: Option<u8>,
    /// Seconds left (listing) or to live (publish).
    #[serde(skip_serializing_if = "Option::is_none")]
    message_expiry_interval: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_topic: Option<String>,
    /// Base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_data: Option<String>,
    /// `[name, value]` pairs, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    user_properties: Vec<(String, String)>,
}

/// The body of `POST publish`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    topic: String,
    /// The payload as text; or give `payload_base64`.
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
    #[serde(default)]
    properties: PropertiesView,
}

/// `GET retained?filter=#&payload=true&limit=&offset=`
pub(super) fn list_retained(context: &AdminContext, request: &Request) -> Response {
    let (limit, offset) = match paging(request) {
        Ok(paging) => paging,
        Err(response) => return response,
    };
    let filter = request.query("filter").unwrap_or("#");
    if let Err(error) = crate::topic::validate_topic_filter(filter) {
        return Response::error(400, "bad_request", &format!("filter {filter:?}: {error}"));
    }
    let with_payload = matches!(request.query("payload"), Some("true" | "1"));
    let page = context.broker.list_retained(filter, offset, limit);
    let page = Page {
        total: page.total,
        offset: page.offset,
        limit: page.limit,
        items: page
            .items
            .iter()
            .map(|message| retained_view(message, with_payload))
            .collect(),
    };
    Response::json(200, &page)
}

fn retained_view(message: &Arc<Message>, with_payload: bool) -> RetainedView {
    let properties = &message.properties;
    RetainedView {
        topic: message.topic.to_string(),
        qos: message.qos as u8,
        payload_size: message.payload.len(),
        properties: PropertiesView {
            payload_format_indicator: properties.payload_format_indicator,
            message_expiry_interval: remaining_expiry(message),
            content_type: properties.content_type.as_ref().map(ToString::to_string),
            response_topic: properties.response_topic.as_ref().map(ToString::to_string),
            correlation_data: properties
                .correlation_data
                .as_ref()
                .map(|data| BASE64.encode(data)),
            user_properties: properties
                .user_properties
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        },
        payload: with_payload
            .then(|| {
                std::str::from_utf8(&message.payload)
                    .ok()
                    .map(str::to_string)
            })
            .flatten(),
        payload_base64: with_payload.then(|| BASE64.encode(&message.payload)),
    }
}

/// `DELETE retained/{topic}` (the topic's `/` may be sent as is or as `%2F`).
pub(super) async fn delete_retained(context: &AdminContext, topic: &str) -> Response {
    let Some(written) = context.broker.delete_retained(topic) else {
        return Response::error(
            404,
            "not_found",
            &format!("no retained message on topic {topic:?}"),
        );
    };
    if let Err(error) = written.await {
        context.broker.stats().storage_failed(&error);
        return Response::error(500, "storage_failed", &error.to_string());
    }
    tracing::info!(topic, "retained message deleted by an operator");
    Response::json(200, &json!({ "topic": topic, "deleted": true }))
}

/// `POST publish` with a JSON body (`PublishRequest`).
pub(super) async fn publish(context: &AdminContext, request: &Request) -> Response {
    let body: PublishRequest = match json_body(request) {
        Ok(body) => body,
        Err(response) => return response,
    };
    let message = match build_message(context, body) {
        Ok(message) => Arc::new(message),
        Err(message) => return Response::error(400, "bad_request", &message),
    };
    let published = context.broker.publish_durably(&message);
    for written in published.writes {
        if let Err(error) = written.await {
            context.broker.stats().storage_failed(&error);
            return Response::error(500, "storage_failed", &error.to_string());
        }
    }
    Response::json(
        200,
        &json!({ "topic": message.topic.to_string(), "routed": published.routed }),
    )
}

fn build_message(context: &AdminContext, body: PublishRequest) -> Result<Message, String> {
    crate::topic::validate_topic_name(&body.topic)
        .map_err(|error| format!("topic {:?}: {error}", body.topic))?;
    if body.topic.starts_with('$') {
        return Err("topics starting with '$' are the broker's own".to_string());
    }
    let qos = QoS::from_u8(body.qos).ok_or("qos must be 0, 1 or 2")?;
    let payload = match (body.payload, body.payload_base64) {
        (Some(_), Some(_)) => return Err("give payload or payload_base64, not both".into()),
        (Some(text), None) => Bytes::from(text),
        (None, Some(encoded)) => Bytes::from(
            BASE64
                .decode(encoded.as_bytes())
                .map_err(|error| format!("payload_base64: {error}"))?,
        ),
        (None, None) => Bytes::new(),
    };
    let max = context.broker.config().limits.max_packet_size as usize;
    if payload.len() > max {
        return Err(format!(
            "the payload exceeds limits.max_packet_size ({max} bytes)"
        ));
    }
    let view = body.properties;
    let correlation_data = match view.correlation_data {
        Some(encoded) => {
            Some(Bytes::from(BASE64.decode(encoded.as_bytes()).map_err(
                |error| format!("properties.correlation_data: {error}"),
            )?))
        }
        None => None,
    };
    if let Some(topic) = &view.response_topic {
        crate::topic::validate_topic_name(topic)
            .map_err(|error| format!("properties.response_topic: {error}"))?;
    }
    if view.payload_format_indicator.is_some_and(|value| value > 1) {
        return Err("properties.payload_format_indicator must be 0 or 1".into());
    }
    let now = crate::broker::now();
    Ok(Message {
        topic: ByteString::from(body.topic),
        payload,
        qos,
        retain: body.retain,
        properties: PublishProperties {
            payload_format_indicator: view.payload_format_indicator,
            content_type: view.content_type.map(ByteString::from),
            response_topic: view.response_topic.map(ByteString::from),
            correlation_data,
            user_properties: view
                .user_properties
                .into_iter()
                .map(|(name, value)| (ByteString::from(name), ByteString::from(value)))
                .collect(),
            ..PublishProperties::default()
        },
        expires_at: view
            .message_expiry_interval
            .and_then(|secs| now.checked_add(std::time::Duration::from_secs(u64::from(secs)))),
        publisher: None,
        cluster_id: Default::default(),
    })
}
