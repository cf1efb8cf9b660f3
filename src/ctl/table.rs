//! Human-readable output of `fleetmq ctl`: aligned tables for lists, `key: value`
//! lines for single objects, from the API's JSON.

use serde_json::Value;

use super::CtlCommand;

/// The text `ctl` prints for `command`'s successful answer `value`.
pub(super) fn render(command: &CtlCommand, value: &Value) -> String {
    match command {
        CtlCommand::Clients { .. } => page(
            value,
            &[
                ("CLIENT ID", "client_id"),
                ("CONNECTED", "connected"),
                ("USERNAME", "username"),
                ("PEER", "peer"),
                ("PROTO", "protocol"),
                ("SUBS", "subscriptions"),
                ("QUEUED", "queued_messages"),
                ("INFLIGHT", "inflight_messages"),
                ("DROPPED", "dropped_messages"),
            ],
        ),
        CtlCommand::Subscriptions { .. } => page(
            value,
            &[
                ("CLIENT ID", "client_id"),
                ("FILTER", "filter"),
                ("QOS", "qos"),
                ("NO LOCAL", "no_local"),
                ("RAP", "retain_as_published"),
                ("RH", "retain_handling"),
                ("SUB ID", "subscription_id"),
            ],
        ),
        CtlCommand::Retained {
            delete: None,
            payload,
            ..
        } => {
            let mut columns = vec![("TOPIC", "topic"), ("QOS", "qos"), ("SIZE", "payload_size")];
            if *payload {
                columns.push(("PAYLOAD", "payload"));
            }
            page(value, &columns)
        }
        CtlCommand::Client { .. } => {
            let mut text = fields(&value["client"]);
            text.push_str("\nsubscriptions:\n");
            let subscriptions = value["subscriptions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            text.push_str(&table(
                &subscriptions,
                &[
                    ("FILTER", "filter"),
                    ("QOS", "qos"),
                    ("NO LOCAL", "no_local"),
                    ("RAP", "retain_as_published"),
                    ("RH", "retain_handling"),
                    ("SUB ID", "subscription_id"),
                ],
            ));
            text
        }
        CtlCommand::Reload => {
            let mut text = String::new();
            for (title, key) in [("applied", "applied"), ("needs a restart", "needs_restart")] {
                let changes = value[key].as_array().cloned().unwrap_or_default();
                if changes.is_empty() {
                    continue;
                }
                text.push_str(&format!("{title}:\n"));
                for change in changes {
                    text.push_str(&format!(
                        "  {}: {} -> {}\n",
                        plain(&change["key"]),
                        plain(&change["old"]),
                        plain(&change["new"])
                    ));
                }
            }
            for failure in value["failures"].as_array().cloned().unwrap_or_default() {
                text.push_str(&format!(
                    "failed: {}: {}\n",
                    plain(&failure["part"]),
                    plain(&failure["error"])
                ));
            }
            if text.is_empty() {
                text.push_str("reloaded: nothing changed\n");
            }
            text
        }
        CtlCommand::Stats => {
            let mut text = format!("uptime_secs: {}\n", plain(&value["uptime_secs"]));
            if let Some(metrics) = value["metrics"].as_object() {
                for (name, value) in metrics {
                    match value.as_object() {
                        Some(labelled) => {
                            for (label, value) in labelled {
                                text.push_str(&format!("{name}{{{label}}} {}\n", plain(value)));
                            }
                        }
                        None => text.push_str(&format!("{name} {}\n", plain(value))),
                    }
                }
            }
            text
        }
        CtlCommand::Kick { .. } | CtlCommand::Retained { .. } | CtlCommand::Publish { .. } => {
            fields(value)
        }
    }
}

/// A page of items as a table, with its position in the whole list.
fn page(value: &Value, columns: &[(&str, &str)]) -> String {
    let items = value["items"].as_array().cloned().unwrap_or_default();
    let mut text = table(&items, columns);
    let offset = value["offset"].as_u64().unwrap_or(0);
    let total = value["total"].as_u64().unwrap_or(0);
    let shown = items.len() as u64;
    if shown < total {
        text.push_str(&format!(
            "({}-{} of {total}; use --offset for more)\n",
            offset + 1.min(shown),
            offset + shown
        ));
    }
    text
}

/// `items` as aligned columns under a header row.
pub(super) fn table(items: &[Value], columns: &[(&str, &str)]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| columns.iter().map(|(_, key)| plain(&item[*key])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(index, (title, _))| {
            rows.iter()
                .map(|row| row[index].chars().count())
                .max()
                .unwrap_or(0)
                .max(title.len())
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut text = line(columns.iter().map(|(title, _)| title.to_string()).collect());
    for row in rows {
        text.push_str(&line(row));
    }
    text
}

/// An object as `key: value` lines.
fn fields(value: &Value) -> String {
    match value.as_object() {
        Some(object) => object
            .iter()
            .map(|(key, value)| format!("{key}: {}\n", plain(value)))
            .collect(),
        None => format!("{}\n", plain(value)),
    }
}

/// A JSON value as table text: strings without quotes, null as `-`.
fn plain(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(text) => text.replace(['\n', '\r', '\t'], " "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_show_missing_values_as_dashes() {
        let items = [
            json!({"a": "x", "b": 10}),
            json!({"a": "long value", "b": null}),
        ];
        assert_eq!(
            table(&items, &[("A", "a"), ("B", "b")]),
            "A           B\nx           10\nlong value  -\n"
        );
    }
}
