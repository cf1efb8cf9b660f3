//! `GET clients`, `GET clients/{id}`, `DELETE clients/{id}` and `GET subscriptions`.

use serde_json::json;

use crate::broker::inspect::ClientFilter;
use crate::http::{Request, Response};

use super::{paging, AdminContext};

/// `GET clients?prefix=&username=&connected=true|false&limit=&offset=`
pub(super) fn list(context: &AdminContext, request: &Request) -> Response {
    let (limit, offset) = match paging(request) {
        Ok(paging) => paging,
        Err(response) => return response,
    };
    let connected = match request.query("connected") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Response::error(400, "bad_request", "connected must be true or false"),
    };
    let filter = ClientFilter {
        id_prefix: request.query("prefix").map(str::to_string),
        username: request.query("username").map(str::to_string),
        connected,
    };
    Response::json(200, &context.broker.list_clients(&filter, offset, limit))
}

/// `GET clients/{id}`: the client with its subscriptions.
pub(super) fn inspect(context: &AdminContext, client_id: &str) -> Response {
    match context.broker.client_detail(client_id) {
        Some((summary, subscriptions)) => Response::json(
            200,
            &json!({ "client": summary, "subscriptions": subscriptions }),
        ),
        None => unknown_client(client_id),
    }
}

/// `DELETE clients/{id}[?session=discard]`: disconnects the client (MQTT 5: DISCONNECT
/// 0x98); with `session=discard` its session and stored state end too. Disconnecting a
/// client that is not connected, without discarding, is a conflict (409).
pub(super) async fn kick(context: &AdminContext, request: &Request, client_id: &str) -> Response {
    let discard = match request.query("session") {
        None => false,
        Some("discard") => true,
        Some(_) => {
            return Response::error(
                400,
                "bad_request",
                "session must be \"discard\" (or left out to keep the session)",
            )
        }
    };
    let Some(kicked) = context.broker.kick(client_id, discard) else {
        return unknown_client(client_id);
    };
    if !kicked.was_connected && !kicked.session_ended {
        return Response::error(
            409,
            "not_connected",
            &format!(
                "client {client_id} is not connected; add ?session=discard to end its session"
            ),
        );
    }
    if let Some(written) = kicked.written {
        if let Err(error) = written.await {
            context.broker.stats().storage_failed(&error);
            return Response::error(
                500,
                "storage_failed",
                &format!("the session ended, but removing it from the store failed: {error}"),
            );
        }
    }
    tracing::info!(client_id, discard, "client disconnected by an operator");
    Response::json(
        200,
        &json!({
            "client_id": client_id,
            "disconnected": kicked.was_connected,
            "session_discarded": kicked.session_ended,
        }),
    )
}

/// `GET subscriptions?client=&filter=&limit=&offset=`
pub(super) fn subscriptions(context: &AdminContext, request: &Request) -> Response {
    let (limit, offset) = match paging(request) {
        Ok(paging) => paging,
        Err(response) => return response,
    };
    let page = context.broker.list_subscriptions(
        request.query("client"),
        request.query("filter"),
        offset,
        limit,
    );
    Response::json(200, &page)
}

fn unknown_client(client_id: &str) -> Response {
    Response::error(
        404,
        "not_found",
        &format!("no session with client id {client_id:?}"),
    )
}
