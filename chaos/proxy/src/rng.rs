//! A small lock-free random source (splitmix64 over an atomic counter): jitter,
//! toxicity and slice sizes need no cryptographic quality.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static STATE: AtomicU64 = AtomicU64::new(0);
static SEEDED: OnceLock<()> = OnceLock::new();

fn next() -> u64 {
    SEEDED.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        STATE.store(t ^ (std::process::id() as u64) << 32, Ordering::Relaxed);
    });
    let mut z = STATE
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in [0, 1).
pub fn unit() -> f64 {
    (next() >> 11) as f64 / (1u64 << 53) as f64
}

/// Uniform in [0, n) (n > 0).
pub fn below(n: u64) -> u64 {
    next() % n.max(1)
}
