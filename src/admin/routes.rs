//! Method and path to handler. A known path with another method answers 405 with the
//! methods it takes (`Allow`); anything else 404.

use crate::http::{Request, Response};

use super::{clients, cluster, messages, system, AdminContext, DASHBOARD_HTML};

const API: &str = "/api/v1/";

/// The methods a path takes; empty when the path is unknown.
fn allowed(segments: &[String]) -> &'static [&'static str] {
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    match parts.as_slice() {
        ["clients"]
        | ["subscriptions"]
        | ["retained"]
        | ["listeners"]
        | ["stats"]
        | ["config"]
        | ["sections"] => &["GET"],
        ["clients", _] => &["GET", "DELETE"],
        ["retained", topic @ ..] if !topic.is_empty() => &["DELETE"],
        ["publish"] | ["reload"] | ["cluster", "nodes"] => &["POST"],
        ["cluster", "nodes", _] => &["DELETE"],
        [section] if super::KNOWN_SECTIONS.contains(section) => &["GET"],
        _ => &[],
    }
}

pub(super) async fn dispatch(context: &AdminContext, request: &Request) -> Response {
    let method = request.method.as_str();
    match request.path.as_str() {
        "/" => {
            return match method {
                "GET" => {
                    Response::new(200, "text/html; charset=utf-8", DASHBOARD_HTML)
                        .with_header(
                            "Content-Security-Policy",
                            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:",
                        )
                }
                _ => not_allowed(&["GET"]),
            }
        }
        "/health" | "/ready" => {
            return match method {
                "GET" => system::health(context, request.path == "/ready"),
                _ => not_allowed(&["GET"]),
            }
        }
        _ => {}
    }
    let Some(segments) = request.segments_after(API) else {
        return not_found(request);
    };
    let methods = allowed(&segments);
    if methods.is_empty() {
        return not_found(request);
    }
    if !methods.contains(&method) {
        return not_allowed(methods);
    }
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (method, parts.as_slice()) {
        ("GET", ["clients"]) => clients::list(context, request),
        ("GET", ["clients", id]) => clients::inspect(context, id),
        ("DELETE", ["clients", id]) => clients::kick(context, request, id).await,
        ("GET", ["subscriptions"]) => clients::subscriptions(context, request),
        ("GET", ["retained"]) => messages::list_retained(context, request),
        ("DELETE", ["retained", topic @ ..]) => {
            messages::delete_retained(context, &topic.join("/")).await
        }
        ("POST", ["publish"]) => messages::publish(context, request).await,
        ("GET", ["listeners"]) => system::listeners(context),
        ("GET", ["stats"]) => system::stats(context),
        ("GET", ["config"]) => system::config(context),
        ("POST", ["reload"]) => system::reload(context).await,
        ("GET", ["sections"]) => system::sections(context),
        ("POST", ["cluster", "nodes"]) => cluster::add_node(context, request).await,
        ("DELETE", ["cluster", "nodes", id]) => cluster::remove_node(context, id).await,
        ("GET", [section]) => system::section(context, section),
        _ => not_found(request),
    }
}

fn not_found(request: &Request) -> Response {
    Response::error(
        404,
        "not_found",
        &format!("no such endpoint: {}", request.path),
    )
}

fn not_allowed(methods: &[&str]) -> Response {
    Response::error(
        405,
        "method_not_allowed",
        &format!("this endpoint takes {}", methods.join(", ")),
    )
    .with_header("Allow", methods.join(", "))
}
