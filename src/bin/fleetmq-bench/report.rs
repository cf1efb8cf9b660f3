//! Summarises repeated runs: the median of each headline figure per scenario and
//! broker, and the ratio of one broker to another, as text and as a markdown table.
//!
//! Only ratios between brokers measured in the same interleaved session mean much on a
//! shared machine; the absolute numbers move with whatever else runs there.

use std::collections::BTreeMap;

use crate::record::Record;
use crate::stats::median;

/// Whether a bigger value of a figure is better for the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// Context, not a score (CPU use, for instance).
    Neither,
}

/// The figures worth a row, in display order: key, description, direction.
pub const FIGURES: &[(&str, &str, Better)] = &[
    ("delivered_per_s", "delivered msg/s", Better::Higher),
    ("published_per_s", "published msg/s", Better::Higher),
    ("acked_per_s", "acked msg/s", Better::Higher),
    ("delivery_ratio", "delivered / expected", Better::Higher),
    ("p50_us", "latency p50 µs", Better::Lower),
    ("p99_us", "latency p99 µs", Better::Lower),
    ("p999_us", "latency p99.9 µs", Better::Lower),
    ("max_us", "latency max µs", Better::Lower),
    ("connect_per_s", "connections/s", Better::Higher),
    ("bytes_per_conn", "RSS bytes/connection", Better::Lower),
    ("cpu_us_per_conn", "broker CPU µs/connection", Better::Lower),
    ("store_per_s", "retained stored/s", Better::Higher),
    ("receive_ms", "all retained received, ms", Better::Lower),
    ("cpu_us_per_stored", "broker CPU µs/stored", Better::Lower),
    (
        "cpu_us_per_msg",
        "broker CPU µs/delivered msg",
        Better::Lower,
    ),
    (
        "broker_cpu_cores",
        "broker CPU, cores busy",
        Better::Neither,
    ),
    // The generator's own load: far below the CPU it may use means it was not the limit.
    (
        "bench_cpu_cores",
        "generator CPU, cores busy",
        Better::Neither,
    ),
];

/// One figure of one scenario: the median per broker (in `brokers` order).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub case: String,
    pub figure: &'static str,
    pub better: Better,
    pub medians: Vec<Option<f64>>,
    pub runs: Vec<usize>,
    /// medians[0] / medians[1] when both exist.
    pub ratio: Option<f64>,
}

/// Brokers in display order: `first`, `second`, then any other label seen.
pub fn brokers(records: &[Record], first: &str, second: &str) -> Vec<String> {
    let mut out = vec![first.to_owned(), second.to_owned()];
    for record in records {
        if let Some(broker) = record.get_text("broker") {
            if !out.iter().any(|b| b == broker) {
                out.push(broker.to_owned());
            }
        }
    }
    out
}

pub fn rows(records: &[Record], brokers: &[String]) -> Vec<Row> {
    let mut cases: Vec<&str> = Vec::new();
    // (case, figure, broker) -> values
    let mut values: BTreeMap<(&str, &str, &str), Vec<f64>> = BTreeMap::new();
    for record in records {
        let (Some(case), Some(broker)) = (record.get_text("case"), record.get_text("broker"))
        else {
            continue;
        };
        if !cases.contains(&case) {
            cases.push(case);
        }
        for (key, value) in record.numbers() {
            values.entry((case, key, broker)).or_default().push(value);
        }
    }
    let mut out = Vec::new();
    for case in cases {
        for &(key, description, better) in FIGURES {
            let series: Vec<&[f64]> = brokers
                .iter()
                .map(|b| {
                    values
                        .get(&(case, key, b.as_str()))
                        .map_or(&[][..], Vec::as_slice)
                })
                .collect();
            if series.iter().all(|s| s.is_empty()) {
                continue;
            }
            let medians: Vec<Option<f64>> = series.iter().map(|s| median(s)).collect();
            let ratio = match (medians.first(), medians.get(1)) {
                (Some(Some(a)), Some(Some(b))) if *b != 0.0 => Some(a / b),
                _ => None,
            };
            out.push(Row {
                case: case.to_owned(),
                figure: description,
                better,
                medians,
                runs: series.iter().map(|s| s.len()).collect(),
                ratio,
            });
        }
    }
    out
}

/// Short, readable numbers: no decimals for big values, a few for small ones.
pub fn format_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), format_number)
}

/// The figure's description with its direction arrow.
fn label(row: &Row) -> String {
    match row.better {
        Better::Higher => format!("{} ↑", row.figure),
        Better::Lower => format!("{} ↓", row.figure),
        Better::Neither => row.figure.to_owned(),
    }
}

pub fn render_text(rows: &[Row], brokers: &[String]) -> String {
    let mut out = String::new();
    for row in rows {
        let medians: Vec<String> = brokers
            .iter()
            .zip(&row.medians)
            .zip(&row.runs)
            .map(|((broker, median), runs)| format!("{broker} {} (n={runs})", cell(*median)))
            .collect();
        out += &format!(
            "{:<12} {:<30} {}  ratio {}\n",
            row.case,
            label(row),
            medians.join("  "),
            cell(row.ratio)
        );
    }
    out
}

pub fn render_markdown(rows: &[Row], brokers: &[String]) -> String {
    let mut out = String::from("| scenario | figure (↑ higher is better, ↓ lower) |");
    for broker in brokers {
        out += &format!(" {broker} |");
    }
    let ratio_name = format!("{} / {}", brokers[0], brokers[1]);
    out += &format!(" {ratio_name} |\n|---|---|");
    for _ in brokers {
        out += "---:|";
    }
    out += "---:|\n";
    for row in rows {
        out += &format!("| {} | {} |", row.case, label(row));
        for median in &row.medians {
            out += &format!(" {} |", cell(*median));
        }
        out += &format!(
            " {} |\n",
            row.ratio
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(case: &str, broker: &str, delivered: f64, p99: Option<f64>) -> Record {
        let mut record = Record::new(case, broker);
        record
            .number("delivered_per_s", delivered)
            .number("qos", 1.0)
            .maybe("p99_us", p99);
        record
    }

    #[test]
    fn medians_and_ratios_per_case_and_broker() {
        let records = vec![
            run("fanin-q1", "fleetmq", 300.0, None),
            run("fanin-q1", "mosquitto", 100.0, None),
            run("fanin-q1", "fleetmq", 100.0, None),
            run("fanin-q1", "mosquitto", 150.0, None),
            run("fanin-q1", "fleetmq", 200.0, None),
            run("latency-q1", "mosquitto", 50.0, Some(900.0)),
            run("latency-q1", "discard", 10.0, Some(5.0)),
        ];
        let brokers = brokers(&records, "fleetmq", "mosquitto");
        assert_eq!(brokers, ["fleetmq", "mosquitto", "discard"]);
        let rows = rows(&records, &brokers);
        assert_eq!(rows.len(), 3, "{rows:#?}");
        assert_eq!(rows[0].case, "fanin-q1");
        assert_eq!(rows[0].medians, [Some(200.0), Some(125.0), None]);
        assert_eq!(rows[0].runs, [3, 2, 0]);
        assert_eq!(rows[0].ratio, Some(1.6));
        let p99 = &rows[2];
        assert_eq!(
            (p99.case.as_str(), p99.figure),
            ("latency-q1", "latency p99 µs")
        );
        assert_eq!(p99.medians, [None, Some(900.0), Some(5.0)]);
        assert_eq!(p99.ratio, None);
        assert!(rows.iter().all(|r| r.figure != "qos"));

        let markdown = render_markdown(&rows, &brokers);
        let lines: Vec<&str> = markdown.lines().collect();
        assert_eq!(lines.len(), 2 + rows.len());
        assert_eq!(lines[1], "|---|---|---:|---:|---:|---:|");
        assert_eq!(
            lines[2],
            "| fanin-q1 | delivered msg/s ↑ | 200 | 125 | - | 1.60 |"
        );
        let text = render_text(&rows, &brokers);
        assert!(
            text.contains("fleetmq 200 (n=3)  mosquitto 125 (n=2)"),
            "{text}"
        );
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(format_number(123456.789), "123457");
        assert_eq!(format_number(12.345), "12.35");
        assert_eq!(format_number(0.12345), "0.123");
    }
}
