//! Latency histograms (microseconds) and their compact wire form between processes.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency tracked exactly; larger values are clamped (and show up as max).
const MAX_US: u64 = 600_000_000;

/// Non-empty buckets as `(value, count)`: a few hundred pairs even for millions of
/// samples, so a worker can ship one per second.
pub type HistDump = Vec<(u64, u64)>;

#[derive(Debug, Clone)]
pub struct LatencyHist(Histogram<u64>);

impl Default for LatencyHist {
    fn default() -> Self {
        // 3 significant digits over 1 µs ..= 10 min: about 30 KiB, fixed size.
        Self(Histogram::new_with_bounds(1, MAX_US, 3).expect("static bounds are valid"))
    }
}

impl LatencyHist {
    pub fn record(&mut self, us: u64) {
        self.record_n(us, 1);
    }

    pub fn record_n(&mut self, us: u64, n: u64) {
        // Clamped into range, so saturating_record never drops a sample.
        self.0.saturating_record_n(us.clamp(1, MAX_US), n);
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn reset(&mut self) {
        self.0.reset();
    }

    pub fn dump(&self) -> HistDump {
        self.0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    pub fn merge_dump(&mut self, dump: &HistDump) {
        for &(value, count) in dump {
            self.record_n(value, count);
        }
    }

    /// Value at quantile `q` (0..=1), 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(q)
        }
    }

    pub fn max(&self) -> u64 {
        if self.0.is_empty() { 0 } else { self.0.max() }
    }

    pub fn mean(&self) -> f64 {
        if self.0.is_empty() {
            0.0
        } else {
            self.0.mean()
        }
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.len(),
            p50_us: self.quantile(0.50),
            p90_us: self.quantile(0.90),
            p99_us: self.quantile(0.99),
            p999_us: self.quantile(0.999),
            max_us: self.max(),
            mean_us: self.mean(),
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

/// Human form of a microsecond value: `850µs`, `12.3ms`, `1.50s`.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_round_trips_within_precision() {
        let mut h = LatencyHist::default();
        for v in 1..=10_000u64 {
            h.record(v * 7);
        }
        h.record(0);
        h.record(u64::MAX);
        let mut back = LatencyHist::default();
        back.merge_dump(&h.dump());
        assert_eq!(back.len(), h.len());
        for q in [0.5, 0.9, 0.99, 0.999] {
            let (a, b) = (h.quantile(q), back.quantile(q));
            assert!(a.abs_diff(b) <= a / 500, "q{q}: {a} vs {b}");
        }
        assert!(h.dump().len() < 10_000);
        assert!(back.max() >= MAX_US - MAX_US / 500);
    }

    #[test]
    fn empty_is_zero() {
        let h = LatencyHist::default();
        assert_eq!((h.quantile(0.99), h.max(), h.summary().count), (0, 0, 0));
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_us(850), "850µs");
        assert_eq!(fmt_us(12_345), "12.3ms");
        assert_eq!(fmt_us(1_500_000), "1.50s");
    }
}
