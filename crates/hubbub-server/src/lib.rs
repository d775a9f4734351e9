//! The HTTP face of hubbub: Mercure routes, JWT auth, limits, metrics, hot reload
//! and graceful shutdown around a [`hubbub_core::Hub`]. Knows nothing of gossip.

mod app;
pub mod auth;
pub mod config;
mod error;
pub mod metrics;
mod publish;
pub mod ratelimit;
mod serve;
mod state;
mod subscribe;

use std::sync::Arc;

use hubbub_core::{Hub, HubConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use app::HUB_PATH;
pub use config::{Config, ConfigError, DEV_JWT_KEY, Settings};
use metrics::Metrics;
use state::{AppState, SharedState};

/// A configured hub, ready to serve. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct Server {
    state: SharedState,
}

impl Server {
    /// Starts the fan-out engine (needs a tokio runtime) with `settings`.
    pub fn new(settings: Settings) -> Self {
        let metrics = Metrics::new();
        let config = HubConfig {
            limits: settings.limits.hub.clone(),
            ..HubConfig::default()
        };
        let hub = Hub::start(config, Arc::new(metrics.clone()));
        Self {
            state: Arc::new(AppState::new(hub, settings, metrics)),
        }
    }

    /// Serves on `listener` until `shutdown` is cancelled, then drains (see `serve`).
    pub async fn run(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        serve::run(listener, self.state.clone(), shutdown).await
    }

    /// Swaps in new settings without dropping a connection: keys, CORS, limits,
    /// heartbeat and history bounds apply to the next request or sweep.
    pub fn reload(&self, settings: Settings) {
        self.state.hub.set_limits(settings.limits.hub.clone());
        self.state.settings.store(Arc::new(settings));
        self.state.metrics.reloads.with_label_values(&["ok"]).inc();
    }

    /// Counts a reload that failed validation (the old settings stay).
    pub fn reload_failed(&self) {
        self.state
            .metrics
            .reloads
            .with_label_values(&["error"])
            .inc();
    }

    pub fn hub(&self) -> &Hub {
        &self.state.hub
    }
}
