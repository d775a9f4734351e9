//! Shared server state behind one `Arc`: the hub, the hot-swappable settings,
//! metrics, rate limiters and the compiled-selector cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use hubbub_core::Hub;
use hubbub_proto::{Selector, SelectorError};

use crate::config::Settings;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;

/// Compiled templates are reused across requests; the cache is cleared when full.
const SELECTOR_CACHE_CAPACITY: usize = 10_000;

#[derive(Debug)]
pub struct AppState {
    pub hub: Hub,
    pub settings: ArcSwap<Settings>,
    pub metrics: Metrics,
    pub client_limiter: RateLimiter,
    pub global_limiter: RateLimiter,
    selectors: Mutex<HashMap<String, Selector>>,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    pub fn new(hub: Hub, settings: Settings, metrics: Metrics) -> Self {
        Self {
            hub,
            settings: ArcSwap::from_pointee(settings),
            metrics,
            client_limiter: RateLimiter::default(),
            global_limiter: RateLimiter::default(),
            selectors: Mutex::default(),
        }
    }

    /// Counts the rejection, then hands the error back for the response.
    pub fn reject(&self, err: ApiError) -> ApiError {
        self.metrics.reject(err.reason);
        err
    }

    /// Parses a selector, reusing the compiled form of templates seen before.
    pub fn selector(&self, s: &str) -> Result<Selector, SelectorError> {
        if !s.contains('{') {
            return Selector::parse(s);
        }
        let mut cache = self
            .selectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(sel) = cache.get(s) {
            return Ok(sel.clone());
        }
        let sel = Selector::parse(s)?;
        if cache.len() >= SELECTOR_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(s.to_owned(), sel.clone());
        Ok(sel)
    }
}
