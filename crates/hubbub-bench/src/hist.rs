//! Latency histograms (microseconds) and their compact wire form between processes.

use std::sync::OnceLock;

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

/// Upper bounds of the report's latency buckets per decade, times ten: 20 steps a decade,
/// each about 12% above the last (10^(1/20)), rounded to two digits.
const BUCKET_MANTISSAS: [u64; 20] = [
    10, 11, 13, 14, 16, 18, 20, 22, 25, 28, 32, 35, 40, 45, 50, 56, 63, 71, 79, 89,
];

/// Every bucket bound in microseconds, ascending, from 1 µs until one reaches `MAX_US`
/// (below 10 µs the bounds are rounded up to whole microseconds, and repeats dropped).
pub fn bucket_bounds() -> &'static [u64] {
    static BOUNDS: OnceLock<Vec<u64>> = OnceLock::new();
    BOUNDS.get_or_init(|| {
        let mut bounds: Vec<u64> = Vec::new();
        let mut decade = 1u64;
        loop {
            for m in BUCKET_MANTISSAS {
                let b = (m * decade).div_ceil(10);
                if bounds.last() != Some(&b) {
                    bounds.push(b);
                }
                if b >= MAX_US {
                    return bounds;
                }
            }
            decade *= 10;
        }
    })
}

/// One bucket of a log-scaled latency histogram: `count` deliveries took more than the
/// previous bound of `bucket_bounds` and at most `le_us` microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyBucket {
    pub le_us: u64,
    pub count: u64,
}

impl LatencyHist {
    /// The non-empty log-scaled buckets (at most ~180, 20 per decade): small enough for
    /// the JSON report, fine enough to plot the distribution from a saved report later.
    pub fn buckets(&self) -> Vec<LatencyBucket> {
        let bounds = bucket_bounds();
        let mut counts = vec![0u64; bounds.len()];
        for v in self.0.iter_recorded() {
            // The low end of the sample's 0.1%-wide slot, so a value right on a bound
            // counts as at most that bound (as recorded, not rounded up past it).
            let value = self.0.lowest_equivalent(v.value_iterated_to());
            let i = bounds.partition_point(|&b| b < value).min(bounds.len() - 1);
            counts[i] += v.count_at_value();
        }
        bounds
            .iter()
            .zip(counts)
            .filter(|&(_, count)| count > 0)
            .map(|(&le_us, count)| LatencyBucket { le_us, count })
            .collect()
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
    fn buckets_are_log_spaced_and_keep_every_sample() {
        let bounds = bucket_bounds();
        assert_eq!(&bounds[..10], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(&bounds[10..14], &[11, 13, 14, 16]);
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        assert!(*bounds.last().unwrap() >= MAX_US);
        assert!(bounds.len() < 200, "{}", bounds.len());

        let mut h = LatencyHist::default();
        h.record_n(1_000, 5); // exactly on a bound
        h.record_n(1_001, 3); // just above it
        h.record_n(250_000, 2);
        h.record(u64::MAX); // clamped into the last bucket
        let b = h.buckets();
        assert_eq!(
            b,
            [
                LatencyBucket {
                    le_us: 1_000,
                    count: 5
                },
                LatencyBucket {
                    le_us: 1_100,
                    count: 3
                },
                LatencyBucket {
                    le_us: 250_000,
                    count: 2
                },
                LatencyBucket {
                    le_us: *bounds.last().unwrap(),
                    count: 1
                },
            ]
        );
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), h.len());
        assert!(LatencyHist::default().buckets().is_empty());
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
