//! What every layer knows about a connection: where the hub answers
//! ([`HUB_PATH`]), who is on the other end ([`Peer`]) and what counts it while it
//! is open ([`ConnGuard`]). A leaf: it imports nothing from this crate, so the
//! accept loop (`serve`), the connection (`conn`), the router (`app`) and the
//! handlers depend on it rather than on each other.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The Mercure endpoint.
pub const HUB_PATH: &str = "/.well-known/mercure";

/// The client's address, as a request extension (rate limits, logs).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Held for as long as a connection is open: its slot under the cap, and the
/// open-connections gauge.
pub struct ConnGuard {
    _slot: Slot,
    _gauge: GaugeGuard,
}

impl ConnGuard {
    /// Counts a connection in `gauge` until the guard is dropped.
    pub fn new(slot: Slot, gauge: prometheus::IntGauge) -> Self {
        gauge.inc();
        Self {
            _slot: slot,
            _gauge: GaugeGuard(gauge),
        }
    }
}

/// Decrements the open-connections gauge when the connection is gone.
struct GaugeGuard(prometheus::IntGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One open connection under the cap, counted until dropped.
pub struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A slot if fewer than `max` are open.
    pub fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()?;
        Some(Self(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sets each header to its static value (replacing what was there).
pub fn set_static(headers: &mut http::HeaderMap, pairs: &[(http::HeaderName, &'static str)]) {
    for (name, value) in pairs {
        headers.insert(name.clone(), http::HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_given_back() {
        let open = Arc::new(AtomicUsize::new(0));
        let gauge = prometheus::IntGauge::new("g", "g").unwrap();
        let first = ConnGuard::new(Slot::take(&open, 1).unwrap(), gauge.clone());
        assert!(Slot::take(&open, 1).is_none(), "the cap holds");
        assert_eq!(gauge.get(), 1);
        drop(first);
        assert_eq!((open.load(Ordering::Acquire), gauge.get()), (0, 0));
        assert!(Slot::take(&open, 1).is_some());
    }
}
