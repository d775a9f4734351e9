//! Logging set-up: `tracing` to stderr, text or JSON, level from `RUST_LOG`,
//! and repeated warnings rate-limited per call site.
//!
//! Why the limit: some warnings are triggered by whoever can send us a packet
//! (chitchat warns once per undecodable gossip datagram, for instance), so
//! without a bound a stranger decides how much we write to the log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::LogFormat;

/// chitchat logs every failed UDP send (with a backtrace): during a partition
/// that floods the log, and our own cluster logs already tell the story.
const DEFAULT_LOG: &str = "info,chitchat=error";
/// Warnings and errors per call site per window; the rest are dropped until
/// the window ends.
const BURST: u32 = 10;
const WINDOW: Duration = Duration::from_secs(10);

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(layer.with_filter(RateLimit::default()))
            .init(),
        LogFormat::Json => registry
            .with(layer.json().with_filter(RateLimit::default()))
            .init(),
    }
}

/// Lets at most [`BURST`] warnings or errors per call site through per
/// [`WINDOW`]; other levels pass untouched.
#[derive(Debug, Default)]
pub struct RateLimit {
    windows: Mutex<HashMap<Identifier, (Instant, u32)>>,
}

impl RateLimit {
    fn admit(&self, site: Identifier, now: Instant) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let (start, count) = windows.entry(site).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            (*start, *count) = (now, 0);
        }
        *count += 1;
        *count <= BURST
    }
}

impl<S> Filter<S> for RateLimit {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        !meta.is_event()
            || *meta.level() > Level::WARN
            || self.admit(meta.callsite(), Instant::now())
    }

    /// Asked again for every event: the answer changes with time.
    fn callsite_enabled(&self, _: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Site;
    impl tracing::callsite::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unreachable!("not asked in these tests")
        }
    }
    static A: Site = Site;
    static B: Site = Site;

    #[test]
    fn a_burst_per_site_per_window() {
        let limit = RateLimit::default();
        let t0 = Instant::now();
        let a = || Identifier(&A);
        let admitted = (0..100).filter(|_| limit.admit(a(), t0)).count();
        assert_eq!(admitted, BURST as usize);
        assert!(
            limit.admit(Identifier(&B), t0),
            "another site has its own budget"
        );
        assert!(!limit.admit(a(), t0 + WINDOW / 2));
        assert!(limit.admit(a(), t0 + WINDOW), "a new window");
    }
}
