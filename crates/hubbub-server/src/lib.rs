//! The HTTP face of hubbub: Mercure routes, JWT auth, limits, metrics, hot reload
//! and graceful shutdown around a [`hubbub_core::Hub`]. Knows nothing of gossip.

mod app;
pub mod auth;
mod clustering;
pub mod config;
mod conn;
mod connection;
mod error;
pub mod fuzzing;
mod io;
pub mod jwks;
mod lifecycle;
pub mod metrics;
pub mod oauth;
pub mod origin;
pub mod presence;
mod publish;
pub mod ratelimit;
mod serve;
mod state;
mod subscribe;
mod subscriptions;

use std::sync::Arc;

use hubbub_core::{Hub, HubConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, ConfigError, DEV_ISSUER, DEV_JWT_KEY, Settings};
pub use connection::HUB_PATH;
use lifecycle::Lifecycle;
pub use lifecycle::ShutdownStep;
use metrics::Metrics;
use state::{AppState, SharedState};

/// A configured hub, ready to serve. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct Server {
    state: SharedState,
    lifecycle: Arc<Lifecycle>,
}

impl Server {
    /// A single node (cluster settings, if any, are ignored: see [`start`](Self::start)).
    /// Starts the fan-out engine, so it needs a tokio runtime.
    pub fn new(settings: Settings) -> Self {
        let (hub, metrics) = start_hub(&settings);
        settings.auth.start_jwks(&metrics.jwks_fetches);
        let state = Arc::new(AppState::new(hub, settings, metrics, None));
        let lifecycle = Arc::new(Lifecycle::default());
        let presence = state.presence.clone();
        lifecycle.spawn(|stop| presence.run(stop));
        Self { state, lifecycle }
    }

    /// A single node, or a cluster member when the settings have seeds: joins
    /// gossip, opens relay links and feeds the ordered cluster log to the hub.
    /// The cluster binds `gossip_listen` and `relay_listen` itself.
    pub async fn start(settings: Settings) -> Result<Self, hubbub_cluster::ClusterError> {
        Self::start_with(settings, None).await
    }

    /// As [`start`](Self::start), on cluster sockets the caller bound (tests
    /// bind port 0 and configure the addresses they got, rather than guess
    /// free ports). Without cluster settings the sockets are dropped.
    pub async fn start_on(
        settings: Settings,
        sockets: hubbub_cluster::Sockets,
    ) -> Result<Self, hubbub_cluster::ClusterError> {
        Self::start_with(settings, Some(sockets)).await
    }

    async fn start_with(
        settings: Settings,
        sockets: Option<hubbub_cluster::Sockets>,
    ) -> Result<Self, hubbub_cluster::ClusterError> {
        let Some(cluster_config) = settings.cluster.clone() else {
            return Ok(Self::new(settings));
        };
        let (hub, metrics) = start_hub(&settings);
        settings.auth.start_jwks(&metrics.jwks_fetches);
        let (cluster, ordered) = match sockets {
            Some(sockets) => hubbub_cluster::Cluster::start_on(cluster_config, sockets).await?,
            None => hubbub_cluster::Cluster::start(cluster_config).await?,
        };
        let (delivered_tx, delivered) = tokio::sync::watch::channel(0);
        let lifecycle = Arc::new(Lifecycle::default());
        let (h, c) = (hub.clone(), cluster.clone());
        lifecycle.spawn(|stop| clustering::report_subscribers(h, c, stop));
        let mut state = AppState::new(hub.clone(), settings, metrics, Some(cluster));
        state.delivered = Some(delivered);
        let presence = state.presence.clone();
        lifecycle
            .spawn(|stop| clustering::deliver(hub, presence.clone(), ordered, delivered_tx, stop));
        lifecycle.spawn(|stop| presence.run(stop));
        Ok(Self {
            state: Arc::new(state),
            lifecycle,
        })
    }

    /// The cluster node, when this server is part of one.
    pub fn cluster(&self) -> Option<&hubbub_cluster::Cluster> {
        self.state.cluster.as_ref()
    }

    /// Serves on `listener` until `shutdown` is cancelled, then stops in the
    /// order of [`ShutdownStep`] (cluster node included) and returns.
    pub async fn run(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        serve::run(
            listener,
            self.state.clone(),
            self.lifecycle.clone(),
            shutdown,
        )
        .await
    }

    /// The shutdown steps done so far, updated as each finishes (for logs,
    /// process supervisors and tests).
    pub fn shutdown_steps(&self) -> tokio::sync::watch::Receiver<Vec<ShutdownStep>> {
        self.lifecycle.steps()
    }

    /// What `/readyz` says: serving, not shutting down and, in a cluster, caught up.
    pub fn is_ready(&self) -> bool {
        self.state.is_ready()
    }

    /// Swaps in new settings without dropping a connection: keys, CORS, limits,
    /// heartbeat and history bounds apply to the next request or sweep. A
    /// trusted issuer's JWK Set whose URI did not change keeps its cache (no
    /// refetch, never a moment without keys); new ones start fetching.
    pub fn reload(&self, mut settings: Settings) {
        settings.auth.adopt_jwks(&self.state.settings.load().auth);
        settings.auth.start_jwks(&self.state.metrics.jwks_fetches);
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

fn start_hub(settings: &Settings) -> (Hub, Metrics) {
    let metrics = Metrics::new();
    let config = HubConfig {
        limits: settings.limits.hub.clone(),
        ..HubConfig::default()
    };
    (Hub::start(config, Arc::new(metrics.clone())), metrics)
}
