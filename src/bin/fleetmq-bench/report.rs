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
    ("puback_p50_us", "PUBACK latency p50 µs", Better::Lower),
    ("puback_p99_us", "PUBACK latency p99 µs", Better::Lower),
    ("puback_p999_us", "PUBACK latency p99.9 µs", Better::Lower),
    ("connect_per_s", "connections/s", Better::Higher),
    ("bytes_per_conn", "RSS bytes/connection", Better::Lower),
    ("cpu_us_per_conn", "broker CPU µs/connection", Better::Lower),
    ("resumed_ratio", "resumed handshakes / all", Better::Neither),
    ("admitted_per_s", "admitted connections/s", Better::Neither),
    ("all_connected_ms", "all connected, ms", Better::Lower),
    (
        "peak_bytes_per_conn",
        "peak RSS bytes/connection",
        Better::Lower,
    ),
    (
        "probe_p50_us",
        "connected client's PINGREQ p50 µs",
        Better::Lower,
    ),
    (
        "probe_p99_us",
        "connected client's PINGREQ p99 µs",
        Better::Lower,
    ),
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
    (
        "broker_load_cores",
        "broker CPU while publishing, cores busy",
        Better::Neither,
    ),
    // Where the run left the broker's memory: with persistence, RocksDB's memtables too.
    (
        "broker_rss_kib",
        "broker RSS at the end, KiB",
        Better::Lower,
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
    /// One per pair given to `rows`: median of the first broker / median of the
    /// second, when both exist.
    pub ratios: Vec<Option<f64>>,
}

/// A ratio column: the median of `.0` divided by the median of `.1`.
pub type Pair = (String, String);

/// Parses "A/B" into a pair of broker labels.
pub fn parse_pair(text: &str) -> Option<Pair> {
    let (a, b) = text.split_once('/')?;
    let (a, b) = (a.trim(), b.trim());
    (!a.is_empty() && !b.is_empty()).then(|| (a.to_owned(), b.to_owned()))
}

/// Which scenarios to show: only those of `only` when it is not empty, never those of
/// `skip`.
#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    pub only: Vec<String>,
    pub skip: Vec<String>,
}

impl CaseFilter {
    fn admits(&self, case: &str) -> bool {
        (self.only.is_empty() || self.only.iter().any(|c| c == case))
            && !self.skip.iter().any(|c| c == case)
    }
}

/// Brokers with results in an admitted scenario, in display order: those named by
/// `pairs` (in order), then the others in the order they were seen.
pub fn brokers_of(records: &[Record], pairs: &[Pair], filter: &CaseFilter) -> Vec<String> {
    let seen: Vec<&str> = records
        .iter()
        .filter(|r| r.get_text("case").is_some_and(|case| filter.admits(case)))
        .filter_map(|r| r.get_text("broker"))
        .collect();
    let mut out: Vec<String> = Vec::new();
    let named = pairs.iter().flat_map(|(a, b)| [a.as_str(), b.as_str()]);
    for label in named.chain(seen.iter().copied()) {
        if seen.contains(&label) && !out.iter().any(|b| b == label) {
            out.push(label.to_owned());
        }
    }
    out
}

/// Rows of the admitted scenarios, with one ratio per pair.
pub fn rows(
    records: &[Record],
    brokers: &[String],
    pairs: &[Pair],
    filter: &CaseFilter,
) -> Vec<Row> {
    let mut cases: Vec<&str> = Vec::new();
    // (case, figure, broker) -> values
    let mut values: BTreeMap<(&str, &str, &str), Vec<f64>> = BTreeMap::new();
    for record in records {
        let (Some(case), Some(broker)) = (record.get_text("case"), record.get_text("broker"))
        else {
            continue;
        };
        if !filter.admits(case) {
            continue;
        }
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
            let median_of = |label: &str| {
                let index = brokers.iter().position(|b| b == label)?;
                medians[index]
            };
            let ratios = pairs
                .iter()
                .map(|(a, b)| match (median_of(a), median_of(b)) {
                    (Some(a), Some(b)) if b != 0.0 => Some(a / b),
                    _ => None,
                })
                .collect();
            out.push(Row {
                case: case.to_owned(),
                figure: description,
                better,
                medians,
                runs: series.iter().map(|s| s.len()).collect(),
                ratios,
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

fn ratio_cells(row: &Row, pairs: &[Pair]) -> String {
    pairs
        .iter()
        .zip(&row.ratios)
        .map(|((a, b), ratio)| format!("{a}/{b} {}", cell(*ratio)))
        .collect::<Vec<_>>()
        .join("  ")
}

pub fn render_text(rows: &[Row], brokers: &[String], pairs: &[Pair]) -> String {
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
            ratio_cells(row, pairs)
        );
    }
    out
}

pub fn render_markdown(rows: &[Row], brokers: &[String], pairs: &[Pair]) -> String {
    let mut out = String::from("| scenario | figure (↑ higher is better, ↓ lower) |");
    for broker in brokers {
        out += &format!(" {broker} |");
    }
    for (a, b) in pairs {
        out += &format!(" {a} / {b} |");
    }
    out += "\n|---|---|";
    for _ in 0..brokers.len() + pairs.len() {
        out += "---:|";
    }
    out += "\n";
    for row in rows {
        out += &format!("| {} | {} |", row.case, label(row));
        for median in &row.medians {
            out += &format!(" {} |", cell(*median));
        }
        for ratio in &row.ratios {
            out += &format!(
                " {} |",
                ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
            );
        }
        out += "\n";
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
        let pairs = vec![("fleetmq".to_owned(), "mosquitto".to_owned())];
        let all = CaseFilter::default();
        let brokers = brokers_of(&records, &pairs, &all);
        assert_eq!(brokers, ["fleetmq", "mosquitto", "discard"]);
        let rows = rows(&records, &brokers, &pairs, &all);
        assert_eq!(rows.len(), 3, "{rows:#?}");
        assert_eq!(rows[0].case, "fanin-q1");
        assert_eq!(rows[0].medians, [Some(200.0), Some(125.0), None]);
        assert_eq!(rows[0].runs, [3, 2, 0]);
        assert_eq!(rows[0].ratios, [Some(1.6)]);
        let p99 = &rows[2];
        assert_eq!(
            (p99.case.as_str(), p99.figure),
            ("latency-q1", "latency p99 µs")
        );
        assert_eq!(p99.medians, [None, Some(900.0), Some(5.0)]);
        assert_eq!(p99.ratios, [None]);
        assert!(rows.iter().all(|r| r.figure != "qos"));

        let markdown = render_markdown(&rows, &brokers, &pairs);
        let lines: Vec<&str> = markdown.lines().collect();
        assert_eq!(lines.len(), 2 + rows.len());
        assert_eq!(lines[1], "|---|---|---:|---:|---:|---:|");
        assert_eq!(
            lines[2],
            "| fanin-q1 | delivered msg/s ↑ | 200 | 125 | - | 1.60 |"
        );
        let text = render_text(&rows, &brokers, &pairs);
        assert!(
            text.contains("fleetmq 200 (n=3)  mosquitto 125 (n=2)"),
            "{text}"
        );
    }

    #[test]
    fn several_ratio_columns_and_a_case_filter() {
        let records = vec![
            run("persist-q1", "fleetmq-batch", 700.0, None),
            run("persist-q1", "fleetmq-never", 1000.0, None),
            run("persist-q1", "mosquitto-persist", 350.0, None),
            run("fanin-q1", "fleetmq", 5.0, None),
            run("fanin-q1", "mosquitto", 1.0, None),
        ];
        let pairs: Vec<Pair> = [
            "fleetmq-batch/fleetmq-never",
            "fleetmq-batch/mosquitto-persist",
        ]
        .iter()
        .map(|p| parse_pair(p).unwrap())
        .collect();
        let filter = CaseFilter {
            only: vec!["persist-q1".to_owned()],
            skip: Vec::new(),
        };
        let brokers = brokers_of(&records, &pairs, &filter);
        assert_eq!(
            brokers,
            ["fleetmq-batch", "fleetmq-never", "mosquitto-persist"]
        );
        let absent = vec![("fleetmq-always".to_owned(), "fleetmq-never".to_owned())];
        assert_eq!(
            brokers_of(&records, &absent, &filter),
            ["fleetmq-never", "fleetmq-batch", "mosquitto-persist"],
            "a broker without results gets no column"
        );
        let rows = rows(&records, &brokers, &pairs, &filter);
        assert_eq!(rows.len(), 1, "{rows:#?}");
        assert_eq!(rows[0].ratios, [Some(0.7), Some(2.0)]);
        let markdown = render_markdown(&rows, &brokers, &pairs);
        let lines: Vec<&str> = markdown.lines().collect();
        assert!(lines[0]
            .ends_with("| fleetmq-batch / fleetmq-never | fleetmq-batch / mosquitto-persist |"));
        assert_eq!(lines[1], "|---|---|---:|---:|---:|---:|---:|");
        assert_eq!(
            lines[2],
            "| persist-q1 | delivered msg/s ↑ | 700 | 1000 | 350 | 0.70 | 2.00 |"
        );
        let skip = CaseFilter {
            only: Vec::new(),
            skip: vec!["persist-q1".to_owned()],
        };
        let skipped = super::rows(&records, &brokers, &pairs, &skip);
        assert!(skipped.iter().all(|r| r.case == "fanin-q1"));
        assert_eq!(parse_pair("a/"), None);
        assert_eq!(parse_pair("nothing"), None);
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(format_number(123456.789), "123457");
        assert_eq!(format_number(12.345), "12.35");
        assert_eq!(format_number(0.12345), "0.123");
    }
}
