//! A real hub on `127.0.0.1:0`, served by `Server::run` over real sockets.

use std::io;
use std::net::SocketAddr;

use hubbub_server::{Config, DEV_JWT_KEY, HUB_PATH, Server};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http::{HttpResponse, get, publish, subscribe_url};
use crate::sse::SseClient;
use crate::{StatusCode, WAIT, eventually, publisher};

/// A running hub. Dropping it cancels the server (without waiting); call
/// [`TestHub::shutdown`] to stop it and wait for the drain.
#[derive(Debug)]
pub struct TestHub {
    pub addr: SocketAddr,
    server: Server,
    shutdown: CancellationToken,
    task: Option<JoinHandle<io::Result<()>>>,
    publisher_token: String,
}

impl TestHub {
    /// Validates `config` (panicking if it is invalid), binds an ephemeral port and
    /// serves on it. `config.listen` is ignored.
    pub async fn start(config: Config) -> Self {
        let settings = config.settings().expect("the test config is valid");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("an ephemeral port is free");
        Self::serve(Server::new(settings), listener, &config)
    }

    /// Starts a cluster member (a config with `seeds`) with
    /// `Server::start_on`, serving HTTP on `sockets.http` and the cluster on
    /// `sockets.cluster`. The sockets are bound before the config is written,
    /// so it names their real addresses (see [`crate::MemberSockets`]).
    /// Panics if the config is invalid. Returns at once: the node may not be
    /// ready yet (see `/readyz` or [`crate::TestCluster`]).
    pub async fn start_cluster_member(config: Config, sockets: crate::MemberSockets) -> Self {
        let settings = config.settings().expect("the test config is valid");
        let server = Server::start_on(settings, sockets.cluster)
            .await
            .unwrap_or_else(|e| panic!("the cluster member starts: {e}"));
        Self::serve(server, sockets.http, &config)
    }

    fn serve(server: Server, listener: TcpListener, config: &Config) -> Self {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (server, shutdown) = (server.clone(), shutdown.clone());
            async move { server.run(listener, shutdown).await }
        });
        let key = config
            .publisher_jwt_key
            .clone()
            .or_else(|| config.jwt_key.clone())
            .unwrap_or_else(|| DEV_JWT_KEY.to_owned());
        Self {
            addr,
            server,
            shutdown,
            task: Some(task),
            publisher_token: publisher(&key),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Mercure endpoint, `http://127.0.0.1:PORT/.well-known/mercure`.
    pub fn url(&self) -> String {
        format!("{}{HUB_PATH}", self.base_url())
    }

    pub fn subscribe_url(&self, topics: &[&str]) -> String {
        subscribe_url(&self.url(), topics)
    }

    /// The server, e.g. to `reload` it.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// A token that may publish on every topic with this hub's publisher key.
    pub fn publisher_token(&self) -> &str {
        &self.publisher_token
    }

    /// Cancels the server and waits (at most [`WAIT`]) for `run` to return; a
    /// cluster member then also leaves the cluster (links, gossip, engine).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.shutdown.cancel();
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        let result = tokio::time::timeout(WAIT, task)
            .await
            .expect("the server stops within the wait bound")
            .expect("the server task did not panic");
        if let Some(cluster) = self.server.cluster() {
            tokio::time::timeout(WAIT, cluster.shutdown())
                .await
                .expect("the cluster node stops within the wait bound");
        }
        result
    }

    /// Publishes `form` with [`TestHub::publisher_token`].
    pub async fn publish(&self, form: &[(&str, &str)]) -> HttpResponse {
        publish(&self.url(), &self.publisher_token, form).await
    }

    /// Publishes `form`, asserts `200` and returns the update's id.
    pub async fn publish_ok(&self, form: &[(&str, &str)]) -> String {
        let r = self.publish(form).await;
        assert_eq!(r.status, StatusCode::OK, "publish {form:?}: {}", r.body);
        r.body
    }

    /// Publishes update `id` (its data is the id too) on `topics` (the first
    /// canonical, the rest alternates), private or not; asserts `200` and
    /// that the hub kept the id.
    pub async fn publish_on(&self, id: &str, topics: &[&str], private: bool) {
        let mut form: Vec<(&str, &str)> = topics.iter().map(|t| ("topic", *t)).collect();
        form.push(("id", id));
        form.push(("data", id));
        if private {
            form.push(("private", "on"));
        }
        assert_eq!(self.publish_ok(&form).await, id);
    }

    /// Subscribes without a token and asserts `200`.
    pub async fn subscribe(&self, topics: &[&str]) -> SseClient {
        let sse = SseClient::get(&self.subscribe_url(topics)).await;
        assert_eq!(sse.status, StatusCode::OK, "subscribe {topics:?}");
        sse
    }

    /// Subscribes with `Authorization: Bearer <token>` and asserts `200`.
    pub async fn subscribe_with(&self, topics: &[&str], token: &str) -> SseClient {
        SseClient::subscribe(&self.url(), topics, Some(token)).await
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let r = get(&format!("{}/metrics", self.base_url())).await;
        assert_eq!(r.status, StatusCode::OK, "/metrics");
        r.body
    }

    /// The value of one series, named as rendered (`name` or `name{label="v"}`);
    /// `None` when absent.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics().await, series)
    }

    /// Waits (at most [`WAIT`]) until `series` is at least `min`; returns its value.
    pub async fn wait_metric_at_least(&self, series: &str, min: f64) -> f64 {
        eventually(WAIT, &format!("{series} >= {min}"), || async {
            self.metric(series).await.filter(|v| *v >= min)
        })
        .await
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Finds `series` in a Prometheus text exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lines() {
        let text = "# HELP a x\na 3\nb{reason=\"x\"} 1.5\nab 9\n";
        assert_eq!(metric_value(text, "a"), Some(3.0));
        assert_eq!(metric_value(text, "b{reason=\"x\"}"), Some(1.5));
        assert_eq!(metric_value(text, "c"), None);
    }
}
