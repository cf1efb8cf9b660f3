//! Measurement helpers: latency percentiles, and the broker's CPU time and resident
//! memory read from `/proc/PID/stat` and `/proc/PID/status`.

use std::time::Duration;

use anyhow::Context;

/// Latency summary in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// Nearest-rank percentile (`fraction` in 0..=1) of sorted samples: the smallest value
/// with at least `fraction` of the samples at or below it.
pub fn percentile(sorted: &[u64], fraction: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (fraction.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}

/// Sorts the samples and summarises them; `None` when there are none.
pub fn summarize(mut samples: Vec<u64>) -> Option<Summary> {
    samples.sort_unstable();
    let max = *samples.last()?;
    let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
    Some(Summary {
        count: samples.len(),
        p50: percentile(&samples, 0.50)?,
        p99: percentile(&samples, 0.99)?,
        p999: percentile(&samples, 0.999)?,
        max,
        mean: sum as f64 / samples.len() as f64,
    })
}

/// Median of a set of measurements (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// utime + stime in clock ticks from the text of `/proc/PID/stat`.
///
/// The command name (field 2) may contain spaces and parentheses, so fields are
/// counted from the last `)`: state is field 3, utime field 14, stime field 15.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in KiB from the text of `/proc/PID/status`.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Reads one process's counters (the broker's, or the generator's own); without a PID
/// every reading is absent.
#[derive(Debug, Clone, Copy)]
pub struct ProcProbe {
    pid: Option<u32>,
    clock_ticks_per_sec: u64,
}

/// One reading of the broker's counters.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    cpu_ticks: u64,
    pub rss_kib: u64,
}

impl ProcProbe {
    pub fn new(pid: Option<u32>, clock_ticks_per_sec: u64) -> ProcProbe {
        ProcProbe {
            pid,
            clock_ticks_per_sec: clock_ticks_per_sec.max(1),
        }
    }

    pub fn sample(&self) -> anyhow::Result<Option<ProcSample>> {
        let Some(pid) = self.pid else {
            return Ok(None);
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat (is --broker-pid right?)"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let cpu_ticks = parse_cpu_ticks(&stat).context("unexpected /proc/PID/stat format")?;
        let rss_kib = parse_rss_kib(&status).context("no VmRSS in /proc/PID/status")?;
        Ok(Some(ProcSample { cpu_ticks, rss_kib }))
    }

    /// Broker CPU time (user + system) between two samples.
    pub fn cpu_between(&self, before: &ProcSample, after: &ProcSample) -> Duration {
        let ticks = after.cpu_ticks.saturating_sub(before.cpu_ticks);
        Duration::from_micros(ticks * 1_000_000 / self.clock_ticks_per_sec)
    }
}

/// Broker CPU microseconds per unit of work (message, connection), if measurable.
pub fn cpu_us_per(
    probe: &ProcProbe,
    before: Option<ProcSample>,
    after: Option<ProcSample>,
    units: u64,
) -> Option<f64> {
    let (before, after) = (before?, after?);
    (units > 0).then(|| probe.cpu_between(&before, &after).as_secs_f64() * 1e6 / units as f64)
}

/// CPU seconds per wall-clock second between two samples: 1.0 is one core kept busy.
pub fn cores_busy(
    probe: &ProcProbe,
    before: Option<ProcSample>,
    after: Option<ProcSample>,
    wall: Duration,
) -> Option<f64> {
    let (before, after) = (before?, after?);
    (!wall.is_zero()).then(|| probe.cpu_between(&before, &after).as_secs_f64() / wall.as_secs_f64())
}

/// Messages per second, 0 for an empty interval.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&samples, 0.5), Some(500));
        assert_eq!(percentile(&samples, 0.99), Some(990));
        assert_eq!(percentile(&samples, 0.999), Some(999));
        assert_eq!(percentile(&samples, 1.0), Some(1000));
        assert_eq!(percentile(&samples, 0.0), Some(1));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7], 0.999), Some(7));
        // Ten samples: p99 is the largest, p50 the fifth.
        let ten: Vec<u64> = (10..20).collect();
        assert_eq!(percentile(&ten, 0.99), Some(19));
        assert_eq!(percentile(&ten, 0.5), Some(14));
    }

    #[test]
    fn summarize_sorts_its_input() {
        let mut samples: Vec<u64> = (1..=100).rev().collect();
        samples.push(10_000);
        let summary = summarize(samples).unwrap();
        assert_eq!(summary.count, 101);
        assert_eq!(summary.p50, 51);
        assert_eq!(summary.p99, 100);
        assert_eq!(summary.p999, 10_000);
        assert_eq!(summary.max, 10_000);
        assert!((summary.mean - (5050.0 + 10_000.0) / 101.0).abs() < 1e-9);
        assert_eq!(summarize(Vec::new()), None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn parses_proc_stat_with_a_hostile_command_name() {
        let stat = "4242 (my (odd) broker) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    150 25 0 0 20 0 3 0 12345 100000 500 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(175));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(parse_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tmosquitto\nVmPeak:\t  20000 kB\nVmRSS:\t    6144 kB\nThreads:\t1\n";
        assert_eq!(parse_rss_kib(status), Some(6144));
        assert_eq!(parse_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn cpu_per_unit_uses_the_clock_tick_rate() {
        let probe = ProcProbe::new(Some(1), 100);
        let before = ProcSample {
            cpu_ticks: 100,
            rss_kib: 0,
        };
        let after = ProcSample {
            cpu_ticks: 150,
            rss_kib: 0,
        };
        assert_eq!(
            probe.cpu_between(&before, &after),
            Duration::from_millis(500)
        );
        assert_eq!(
            cpu_us_per(&probe, Some(before), Some(after), 1000),
            Some(500.0)
        );
        assert_eq!(cpu_us_per(&probe, Some(before), Some(after), 0), None);
        assert_eq!(cpu_us_per(&probe, None, Some(after), 10), None);
        let busy = cores_busy(&probe, Some(before), Some(after), Duration::from_secs(2));
        assert_eq!(busy, Some(0.25));
        assert_eq!(
            cores_busy(&probe, Some(before), Some(after), Duration::ZERO),
            None
        );
        assert_eq!(rate(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(rate(5, Duration::ZERO), 0.0);
    }

    #[test]
    fn reads_this_process() {
        let probe = ProcProbe::new(Some(std::process::id()), 100);
        let sample = probe.sample().unwrap().unwrap();
        assert!(sample.rss_kib > 0);
        assert!(ProcProbe::new(None, 100).sample().unwrap().is_none());
    }
}
