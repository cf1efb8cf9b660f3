//! `GET stats`, `GET listeners`, `GET config`, `POST reload`, `/health`, `/ready`, and
//! the status sections of other subsystems (`GET sections`, `GET {section}`).

use serde_json::{json, Map, Value};

use crate::http::Response;

use super::AdminContext;

/// `/health` (200 while healthy) or `/ready` (200 once started and healthy); 503 with
/// the reasons otherwise.
pub(super) fn health(context: &AdminContext, readiness: bool) -> Response {
    let report = crate::health::check(&context.broker);
    let ok = if readiness {
        report.ready
    } else {
        report.healthy()
    };
    Response::json(if ok { 200 } else { 503 }, &report)
}

/// `GET stats`: the numbers of `/metrics`, as JSON: each metric name maps to its value,
/// or, for a labelled metric, to an object from the label values (joined by `,`) to
/// values. Histogram buckets are left out (their `_sum` and `_count` stay).
pub(super) fn stats(context: &AdminContext) -> Response {
    let text = context.broker.metrics().render(&context.broker);
    Response::json(
        200,
        &json!({
            "uptime_secs": context.broker.metrics().uptime().as_secs(),
            "metrics": prometheus_to_json(&text),
        }),
    )
}

/// The Prometheus text format as a JSON object (see `stats`).
pub fn prometheus_to_json(text: &str) -> Value {
    let mut metrics = Map::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        // Counters and most gauges are whole numbers: show them as such.
        let value = if value.fract() == 0.0 && value.abs() < 9e15 {
            json!(value as i64)
        } else {
            json!(value)
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, Some(labels.trim_end_matches('}'))),
            None => (series, None),
        };
        if name.ends_with("_bucket") {
            continue;
        }
        match labels {
            None => {
                metrics.insert(name.to_string(), value);
            }
            Some(labels) => {
                let key = labels
                    .split(',')
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(_, value)| value.trim_matches('"'))
                    .collect::<Vec<_>>()
                    .join(",");
                let entry = metrics
                    .entry(name.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = entry {
                    map.insert(key, value);
                }
            }
        }
    }
    Value::Object(metrics)
}

/// `GET listeners`: the MQTT listeners, and the metrics endpoint.
pub(super) fn listeners(context: &AdminContext) -> Response {
    let report = crate::health::check(&context.broker);
    let listeners: Vec<Value> = context
        .listeners
        .iter()
        .map(|listener| {
            let stopped = format!("listener {} stopped", listener.address);
            json!({
                "type": listener.kind,
                "bind": listener.bind.to_string(),
                "address": listener.address.to_string(),
                "running": !report.problems.contains(&stopped),
            })
        })
        .collect();
    Response::json(
        200,
        &json!({
            "listeners": listeners,
            "metrics": context.metrics.map(|addr| addr.to_string()),
        }),
    )
}

/// `GET config`: the configuration in force, with secrets redacted.
pub(super) fn config(context: &AdminContext) -> Response {
    let config = context.broker.config();
    match serde_json::to_value(&*config) {
        Ok(mut value) => {
            redact(&mut value);
            Response::json(200, &value)
        }
        Err(error) => Response::error(500, "internal", &error.to_string()),
    }
}

/// Replaces the value of every key that names a secret (a password, a token, a key,
/// a secret), wherever it is, so that adding such a key later cannot leak it here.
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                let key = key.to_ascii_lowercase();
                let secret = key == "key"
                    || ["password", "token", "secret", "private"]
                        .iter()
                        .any(|word| key.contains(word));
                if secret && !value.is_null() {
                    *value = Value::String("(redacted)".to_string());
                } else {
                    redact(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// `POST reload`: what SIGHUP does, answering what changed.
pub(super) async fn reload(context: &AdminContext) -> Response {
    let reload = context.reload.clone();
    // Reading files blocks: off the async workers.
    let outcome = match tokio::task::spawn_blocking(move || reload()).await {
        Ok(outcome) => outcome,
        Err(error) => return Response::error(500, "internal", &error.to_string()),
    };
    match outcome {
        Err(message) => Response::error(400, "invalid_config", &message),
        Ok(report) => {
            let change = |change: &crate::reload::Change| json!({ "key": change.key, "old": change.old, "new": change.new });
            Response::json(
                200,
                &json!({
                    "applied": report.applied.iter().map(change).collect::<Vec<_>>(),
                    "needs_restart": report.needs_restart.iter().map(change).collect::<Vec<_>>(),
                    "failures": report.failures.iter().map(|(part, error)| json!({ "part": part, "error": error })).collect::<Vec<_>>(),
                }),
            )
        }
    }
}

/// `GET sections`: the status sections registered by other subsystems.
pub(super) fn sections(context: &AdminContext) -> Response {
    let names: Vec<&str> = context
        .providers
        .iter()
        .map(|provider| provider.name())
        .collect();
    Response::json(200, &json!({ "sections": names }))
}

/// `GET bridges`, `GET cluster`...: the section's status, 404 until its subsystem
/// registered a provider.
pub(super) fn section(context: &AdminContext, name: &str) -> Response {
    match context
        .providers
        .iter()
        .find(|provider| provider.name() == name)
    {
        Some(provider) => Response::json(200, &provider.status()),
        None => Response::error(
            404,
            "not_configured",
            &format!("no {name} are configured on this broker"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_becomes_json() {
        let text = "# HELP a_total A\n# TYPE a_total counter\na_total 3\nb{reason=\"x\"} 1\nb{reason=\"y\"} 2\nh_bucket{le=\"1\"} 4\nh_sum 0.5\n";
        assert_eq!(
            prometheus_to_json(text),
            json!({ "a_total": 3, "b": { "x": 1, "y": 2 }, "h_sum": 0.5 })
        );
    }

    #[test]
    fn secrets_are_redacted_wherever_they_are() {
        let mut value = json!({
            "admin": { "token_file": "/etc/t", "bind": "x" },
            "listeners": [{ "tls": { "key": "/k.pem", "cert": "/c.pem" } }],
            "auth": { "password_file": "/p" },
        });
        redact(&mut value);
        assert_eq!(value["admin"]["token_file"], "(redacted)");
        assert_eq!(value["admin"]["bind"], "x");
        assert_eq!(value["listeners"][0]["tls"]["key"], "(redacted)");
        assert_eq!(value["listeners"][0]["tls"]["cert"], "/c.pem");
        assert_eq!(value["auth"]["password_file"], "(redacted)");
    }
}
