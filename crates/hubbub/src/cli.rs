//! Command-line surface. Every `serve` option is a flag, a `HUBBUB_*` variable and
//! a key of the TOML config file (same name, dashes for underscores); flags and
//! variables override the file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hubbub_server::config::{Config, parse_duration};

#[derive(Debug, Parser)]
#[command(
    name = "hubbub",
    version,
    about = "A clustered, Mercure-compatible Server-Sent-Events hub"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub.
    Serve(Box<ServeArgs>),
    /// Publish one update.
    Publish(PublishArgs),
    /// Subscribe and print events as they arrive.
    Subscribe(SubscribeArgs),
    /// Load, latency and soak benchmarks against hubbub or nchan.
    Bench(Box<hubbub_bench::BenchArgs>),
    /// Health check for containers (the image has no curl): exit 0 when the
    /// local hub answers 200 on `--path`, 1 otherwise.
    Probe(ProbeArgs),
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The hub's listen address (an unspecified IP means loopback).
    #[arg(long, env = "HUBBUB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[arg(long, default_value = "/readyz")]
    pub path: String,
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    parse_duration(s)
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file; re-read on SIGHUP.
    #[arg(long, env = "HUBBUB_CONFIG")]
    pub config: Option<PathBuf>,
    /// Development mode: the well-known Mercure dev key, anonymous subscribers. Never in production.
    #[arg(long, env = "HUBBUB_DEV")]
    pub dev: bool,
    #[arg(long, env = "HUBBUB_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[arg(long, env = "HUBBUB_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Allow subscribers without a token (public updates only).
    #[arg(long, env = "HUBBUB_ANONYMOUS")]
    pub anonymous: bool,
    /// JWT key for both roles (HS* secret or PEM public key).
    #[arg(long, env = "HUBBUB_JWT_KEY", hide_env_values = true)]
    pub jwt_key: Option<String>,
    #[arg(long, env = "HUBBUB_JWT_ALG")]
    pub jwt_alg: Option<String>,
    #[arg(long, env = "HUBBUB_PUBLISHER_JWT_KEY", hide_env_values = true)]
    pub publisher_jwt_key: Option<String>,
    #[arg(long, env = "HUBBUB_PUBLISHER_JWT_ALG")]
    pub publisher_jwt_alg: Option<String>,
    #[arg(long, env = "HUBBUB_SUBSCRIBER_JWT_KEY", hide_env_values = true)]
    pub subscriber_jwt_key: Option<String>,
    #[arg(long, env = "HUBBUB_SUBSCRIBER_JWT_ALG")]
    pub subscriber_jwt_alg: Option<String>,
    #[arg(long, env = "HUBBUB_COOKIE_NAME")]
    pub cookie_name: Option<String>,
    /// Origins allowed by CORS (comma-separated; `*` is refused since credentials are allowed).
    #[arg(long, env = "HUBBUB_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Origins allowed to publish with a cookie (comma-separated).
    #[arg(long, env = "HUBBUB_PUBLISH_ORIGINS", value_delimiter = ',')]
    pub publish_origins: Option<Vec<String>>,
    /// Heartbeat after this long without output (e.g. 40s; 0 = off).
    #[arg(long, env = "HUBBUB_HEARTBEAT", value_parser = duration)]
    pub heartbeat: Option<std::time::Duration>,
    /// Maximum stream lifetime, randomized to 80-100 % (0 = unlimited).
    #[arg(long, env = "HUBBUB_WRITE_TIMEOUT", value_parser = duration)]
    pub write_timeout: Option<std::time::Duration>,
    /// A socket write blocked this long cuts the connection (0 = never).
    #[arg(long, env = "HUBBUB_WRITE_DEADLINE", value_parser = duration)]
    pub write_deadline: Option<std::time::Duration>,
    /// A request body must arrive within this of its head, else 408 (0 = no limit).
    #[arg(long, env = "HUBBUB_REQUEST_TIMEOUT", value_parser = duration)]
    pub request_timeout: Option<std::time::Duration>,
    #[arg(long, env = "HUBBUB_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    #[arg(long, env = "HUBBUB_MAX_TOPICS")]
    pub max_topics: Option<usize>,
    /// Longest topic or selector in bytes (400 beyond).
    #[arg(long, env = "HUBBUB_MAX_TOPIC_BYTES")]
    pub max_topic_bytes: Option<usize>,
    /// Most states a subscriber's URI template may compile to (400 beyond).
    #[arg(long, env = "HUBBUB_MAX_TEMPLATE_STATES")]
    pub max_template_states: Option<usize>,
    /// 0 = no limit.
    #[arg(long, env = "HUBBUB_MAX_SUBSCRIBERS")]
    pub max_subscribers: Option<usize>,
    /// 0 = from the open-files limit.
    #[arg(long, env = "HUBBUB_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    #[arg(long, env = "HUBBUB_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    #[arg(long, env = "HUBBUB_HISTORY_SIZE")]
    pub history_size: Option<usize>,
    #[arg(long, env = "HUBBUB_HISTORY_BYTES")]
    pub history_bytes: Option<usize>,
    #[arg(long, env = "HUBBUB_HISTORY_MAX_AGE", value_parser = duration)]
    pub history_max_age: Option<std::time::Duration>,
    /// Publishes per second per token (0 = off).
    #[arg(long, env = "HUBBUB_PUBLISH_RATE")]
    pub publish_rate: Option<f64>,
    #[arg(long, env = "HUBBUB_PUBLISH_BURST")]
    pub publish_burst: Option<u32>,
    /// Publishes per second for the whole hub (0 = off).
    #[arg(long, env = "HUBBUB_GLOBAL_PUBLISH_RATE")]
    pub global_publish_rate: Option<f64>,
    /// After streams are drained, how long connections may take to finish.
    #[arg(long, env = "HUBBUB_SHUTDOWN_GRACE", value_parser = duration)]
    pub shutdown_grace: Option<std::time::Duration>,
    /// On shutdown, streams end spread over at most this long, each told to
    /// reconnect (elsewhere) with an SSE `retry`.
    #[arg(long, env = "HUBBUB_DRAIN_WINDOW", value_parser = duration)]
    pub drain_window: Option<std::time::Duration>,
    /// Cluster members to join (comma-separated host:port of their gossip address;
    /// DNS names are re-resolved). Without seeds the node runs alone.
    #[arg(long, env = "HUBBUB_SEEDS", value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    /// Defaults to the host name.
    #[arg(long, env = "HUBBUB_NODE_ID")]
    pub node_id: Option<String>,
    #[arg(long, env = "HUBBUB_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// UDP address for gossip.
    #[arg(long, env = "HUBBUB_GOSSIP_LISTEN")]
    pub gossip_listen: Option<SocketAddr>,
    /// ip:port or host:port peers gossip to (resolved at start-up).
    #[arg(long, env = "HUBBUB_GOSSIP_ADVERTISE")]
    pub gossip_advertise: Option<String>,
    /// TCP address for relay links between nodes.
    #[arg(long, env = "HUBBUB_RELAY_LISTEN")]
    pub relay_listen: Option<SocketAddr>,
    /// host:port peers dial for relay links.
    #[arg(long, env = "HUBBUB_RELAY_ADVERTISE")]
    pub relay_advertise: Option<String>,
    /// Shared secret authenticating relay links (required in a cluster unless --dev).
    #[arg(long, env = "HUBBUB_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    #[arg(long, env = "HUBBUB_GOSSIP_INTERVAL", value_parser = duration)]
    pub gossip_interval: Option<std::time::Duration>,
    /// A peer silent this long no longer holds delivery back.
    #[arg(long, env = "HUBBUB_ORDER_WAIT", value_parser = duration)]
    pub order_wait: Option<std::time::Duration>,
    /// When a clustered publish is answered: `local` (logged here) or
    /// `replicated` (a peer confirmed it holds it).
    #[arg(long, env = "HUBBUB_PUBLISH_ACK")]
    pub publish_ack: Option<hubbub_server::config::PublishAck>,
    /// How long a `replicated` publish waits for a peer's confirmation (503 after).
    #[arg(long, env = "HUBBUB_PUBLISH_ACK_TIMEOUT", value_parser = duration)]
    pub publish_ack_timeout: Option<std::time::Duration>,
    /// Updates kept per origin to repair other nodes.
    #[arg(long, env = "HUBBUB_CLUSTER_LOG_SIZE")]
    pub cluster_log_size: Option<usize>,
}

impl ServeArgs {
    /// The file (if any) with flags and variables on top.
    pub fn config(&self) -> Result<Config, hubbub_server::ConfigError> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(&path.to_string_lossy())?,
            None => Config::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = &self.$field { c.$field = v.clone(); } )* };
        }
        macro_rules! set_opt {
            ($($field:ident),*) => { $( if let Some(v) = &self.$field { c.$field = Some(v.clone()); } )* };
        }
        set!(
            listen,
            jwt_alg,
            cookie_name,
            cors_origins,
            publish_origins,
            heartbeat,
            write_timeout
        );
        set!(
            write_deadline,
            max_body_bytes,
            max_topics,
            max_subscribers,
            max_connections,
            queue_capacity
        );
        set!(
            history_size,
            history_bytes,
            history_max_age,
            publish_rate,
            publish_burst,
            global_publish_rate
        );
        set!(
            shutdown_grace,
            seeds,
            cluster_id,
            gossip_listen,
            relay_listen,
            gossip_interval,
            order_wait
        );
        set!(cluster_log_size, drain_window, request_timeout);
        set!(publish_ack, publish_ack_timeout);
        set!(max_topic_bytes, max_template_states);
        set_opt!(node_id, gossip_advertise, relay_advertise, cluster_secret);
        set_opt!(
            jwt_key,
            publisher_jwt_key,
            publisher_jwt_alg,
            subscriber_jwt_key,
            subscriber_jwt_alg
        );
        c.dev |= self.dev;
        c.anonymous |= self.anonymous;
        Ok(c)
    }
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The hub URL.
    #[arg(
        long,
        env = "HUBBUB_HUB",
        default_value = "http://127.0.0.1:8080/.well-known/mercure"
    )]
    pub hub: String,
    /// Topic (repeat for alternates).
    #[arg(long, required = true)]
    pub topic: Vec<String>,
    #[arg(long, default_value = "")]
    pub data: String,
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long = "type")]
    pub event_type: Option<String>,
    #[arg(long)]
    pub private: bool,
    /// Publisher JWT. Without it, one is minted with --jwt-key.
    #[arg(long, env = "HUBBUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// HS256 key to mint a token with (defaults to the development key).
    #[arg(long, env = "HUBBUB_JWT_KEY", hide_env_values = true)]
    pub jwt_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    #[arg(
        long,
        env = "HUBBUB_HUB",
        default_value = "http://127.0.0.1:8080/.well-known/mercure"
    )]
    pub hub: String,
    /// Topic selector (repeatable): exact topic, `*` or URI template.
    #[arg(long, required = true)]
    pub topic: Vec<String>,
    /// Resume after this id (or `earliest`).
    #[arg(long)]
    pub last_event_id: Option<String>,
    /// Subscriber JWT (for private updates).
    #[arg(long, env = "HUBBUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print events as JSON lines.
    #[arg(long)]
    pub json: bool,
}
