//! Configuration: the flat, user-facing [`Config`] (TOML keys, flags and `HUBBUB_*`
//! variables share its names) and the validated, per-subsystem [`Settings`] the
//! server runs on. Parsing and validation happen here and only here.
//!
//! Each option is declared once, in the `options!` list below: its doc comment
//! (also the `--help` text), type, default, TOML handling and, behind the `cli`
//! feature that only the binary enables, its flag and variable. The server never
//! reads flags or the environment itself: the binary parses them with the clap
//! attributes declared here and lays them over the file.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use hubbub_cluster::ClusterConfig;

use crate::auth::{Auth, KeyError};

/// The key every Mercure example uses. Only `--dev` falls back to it.
pub const DEV_JWT_KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";

/// The trusted issuer of Mercure 1.0 access tokens that `--dev` adds (HS256
/// with [`DEV_JWT_KEY`]), so 1.0 clients work out of the box as 0.x ones do.
/// `.invalid` (RFC 2606): no real issuer can ever own it.
pub const DEV_ISSUER: &str = "https://dev.hubbub.invalid";

/// Declares [`Config`] and its `Default` from one list, so an option is written
/// once: `name: Type = default` with its doc comment and attributes. The TOML
/// key is the field name; the clap `#[arg]` attributes sit behind `cli`.
macro_rules! options {
    (
        $(#[$outer:meta])*
        pub struct Config {
            $( $(#[$meta:meta])* $field:ident : $ty:ty = $default:expr ),* $(,)?
        }
    ) => {
        $(#[$outer])*
        #[derive(Clone, Serialize, Deserialize, PartialEq)]
        #[cfg_attr(feature = "cli", derive(clap::Args))]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $( $(#[$meta])* pub $field: $ty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }
    };
}

options! {
    /// Everything a user can set. Every field is optional in the file; defaults are
    /// production-safe (no anonymous access, no default key) unless `dev` is set.
    /// Precedence (the binary's): flags > `HUBBUB_*` variables > file > defaults.
    pub struct Config {
    /// HTTP address.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_LISTEN"))]
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)),
    /// Development mode: the well-known Mercure dev key for both roles, anonymous
    /// subscribers. Never in production.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_DEV"))]
    dev: bool = false,
    /// Also serve Mercure 0.x clients (`topic=` URI templates, `mercure`-claim
    /// JWTs verified with `jwt_key`, the `mercureAuthorization` cookie and the
    /// `authorization` query parameter, `lastEventID`, the `Last-Event-ID`
    /// response field), alongside 1.0 ones. Off by default because 0.x tokens
    /// skip the 1.0 checks (`typ`, `iss`, `aud`, `exp`); `--dev` turns it on.
    #[cfg_attr(feature = "cli", arg(long = "compat-0x", env = "HUBBUB_COMPAT_0X"))]
    compat_0x: bool = false,
    /// Allow subscribers without a token (public updates only).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_ANONYMOUS"))]
    anonymous: bool = false,
    /// JWT key for both roles unless a role-specific one is set (HS* secret or
    /// PEM public key).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_JWT_KEY", hide_env_values = true))]
    jwt_key: Option<String> = None,
    /// JWT algorithm for both roles unless a role-specific one is set.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_JWT_ALG"))]
    jwt_alg: String = "HS256".into(),
    /// Key for publishers' tokens only (defaults to `jwt_key`).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_PUBLISHER_JWT_KEY", hide_env_values = true))]
    publisher_jwt_key: Option<String> = None,
    /// Algorithm for publishers' tokens only (defaults to `jwt_alg`); a token's `alg` must match.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_PUBLISHER_JWT_ALG"))]
    publisher_jwt_alg: Option<String> = None,
    /// Key for subscribers' tokens only (defaults to `jwt_key`).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_SUBSCRIBER_JWT_KEY", hide_env_values = true))]
    subscriber_jwt_key: Option<String> = None,
    /// Algorithm for subscribers' tokens only (defaults to `jwt_alg`); a token's `alg` must match.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_SUBSCRIBER_JWT_ALG"))]
    subscriber_jwt_alg: Option<String> = None,
    /// The cookie a token may come in.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_COOKIE_NAME"))]
    cookie_name: String = "mercureAuthorization".into(),
    /// Trusted issuers of Mercure 1.0 (RFC 9068) tokens, one key per entry
    /// `ISSUER|ALGORITHM|KEY` (KEY: HS* secret or PEM public key; repeat an
    /// issuer for several keys), or `ISSUER|jwks|URI`: the issuer's keys are
    /// those of the JWK Set at URI (https), fetched at start-up and refreshed
    /// by its `Cache-Control: max-age` or when a token names an unknown `kid`.
    /// Comma-separated on the command line.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_OAUTH_ISSUERS", value_delimiter = ',', hide_env_values = true))]
    oauth_issuers: Vec<String> = Vec::new(),
    /// Accept `http://` JWKS URIs in `oauth_issuers`. Plain HTTP lets anyone on
    /// the path substitute the issuer's keys: for tests and local issuers only.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_OAUTH_JWKS_ALLOW_HTTP"))]
    oauth_jwks_allow_http: bool = false,
    /// The hub's resource identifier, required in a 1.0 token's `aud` (default:
    /// the hub URL on the request's origin, `http(s)://<Host>/.well-known/mercure`).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_OAUTH_RESOURCE"))]
    oauth_resource: Option<String> = None,
    /// The public URLs (`http(s)://host[:port]`, comma-separated) the hub
    /// answers on. `Host` and `X-Forwarded-Proto` are whatever the client
    /// sends, so without this list the hub's identity (the resource
    /// identifier a 1.0 token's `aud` must hold, the metadata it advertises,
    /// the base of relative URL Patterns) is the attacker's choice. When set,
    /// a request to the hub or its RFC 9728 metadata whose origin is not listed
    /// gets 421, and a listed one's identity is the listed URL: its scheme is
    /// pinned (`X-Forwarded-Proto` is only consulted when a host is listed
    /// with both schemes). Health and metrics are not affected.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_PUBLIC_URLS", value_delimiter = ','))]
    public_urls: Vec<String> = Vec::new(),
    /// The cookie a Mercure 1.0 token may come in (besides `cookie_name`).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_OAUTH_COOKIE_NAME"))]
    oauth_cookie_name: String = "__Secure-mercure_access_token".into(),
    /// Origins allowed by CORS (comma-separated; `*` is refused since credentials
    /// are allowed).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_CORS_ORIGINS", value_delimiter = ','))]
    cors_origins: Vec<String> = Vec::new(),
    /// Origins allowed to publish with a cookie token (comma-separated; CSRF guard).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_PUBLISH_ORIGINS", value_delimiter = ','))]
    publish_origins: Vec<String> = Vec::new(),
    /// Heartbeat after this long without output (e.g. 40s; 0 = off).
    #[serde(with = "duration")]
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_HEARTBEAT", value_parser = parse_duration))]
    heartbeat: Duration = Duration::from_secs(40),
    /// Maximum stream lifetime, randomized to 80-100 % per connection (0 = unlimited).
    #[serde(with = "duration")]
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_WRITE_TIMEOUT", value_parser = parse_duration))]
    write_timeout: Duration = Duration::from_secs(600),
    /// A socket write blocked this long cuts the connection (0 = never).
    #[serde(with = "duration")]
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_WRITE_DEADLINE", value_parser = parse_duration))]
    write_deadline: Duration = Duration::from_secs(10),
    /// A request body must arrive within this of its head, else 408, so a body
    /// trickled in cannot hold a connection forever (0 = no limit).
    #[serde(with = "duration")]
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_REQUEST_TIMEOUT", value_parser = parse_duration))]
    request_timeout: Duration = Duration::from_secs(30),
    /// Publish body limit in bytes (413 beyond).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_MAX_BODY_BYTES"))]
    max_body_bytes: usize = 1 << 20,
    /// `QUERY` subscription body limit in bytes (413 beyond). Apart from
    /// `max_body_bytes` because it is read before the token is checked (the
    /// parameters it holds may carry the token) and held by the control path.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_MAX_SUBSCRIBE_BODY_BYTES"))]
    max_subscribe_body_bytes: usize = 64 << 10,
    /// Topics per publish, selectors per subscribe (400 beyond).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_MAX_TOPICS"))]
    max_topics: usize = hubbub_proto::update::MAX_TOPICS,
    /// Longest topic (publish) or selector (subscribe) in bytes (400 beyond).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_MAX_TOPIC_BYTES"))]
    max_topic_bytes: usize = 2048,
    /// Most states a subscriber's URI template may compile to (400 beyond):
    /// matching one costs up to this many steps per byte of a topic.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_MAX_TEMPLATE_STATES"))]
    max_template_states: usize = 200,
    /// Mercure's active subscriptions: an event (private, SSE type `mercure`)
    /// when a subscription starts or ends, and the subscriptions API at
    /// `/.well-known/mercure/subscriptions`, cluster-wide. `--dev` turns it on.
    /// Fixed at start-up. Unset: off, but on with `--dev` (`--subscriptions=false`
    /// turns it off there too).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_SUBSCRIPTIONS", num_args = 0..=1, default_missing_value = "true", require_equals = true))]
    subscriptions: Option<bool> = None,
    /// Most active subscriptions tracked (cluster-wide); beyond, new ones are
    /// served but not tracked (no event, not listed). Fixed at start-up.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_MAX_TRACKED_SUBSCRIPTIONS"))]
    max_tracked_subscriptions: usize = 100_000,
    /// Concurrent subscribers (0 = no limit).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_MAX_SUBSCRIBERS"))]
    max_subscribers: usize = 0,
    /// Open connections (0 = derived from the open-files limit).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_MAX_CONNECTIONS"))]
    max_connections: usize = 0,
    /// Live frames waiting per subscriber before it is disconnected as slow.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_QUEUE_CAPACITY"))]
    queue_capacity: usize = 1000,
    /// When the median subscriber queue is over an eighth of `queue_capacity`
    /// (the stream writers cannot keep up, e.g. the CPU is saturated), a
    /// publish waits up to this long for them to catch up, then
    /// gets 503 + `Retry-After` (0 = refuse at once).
    #[serde(with = "duration")]
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_FANOUT_WAIT", value_parser = parse_duration))]
    fanout_wait: Duration = Duration::from_secs(1),
    /// Updates kept for resume.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_HISTORY_SIZE"))]
    history_size: usize = 10_000,
    /// Bytes of updates kept for resume.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_HISTORY_BYTES"))]
    history_bytes: usize = 64 << 20,
    /// Oldest update kept for resume (0 = no age limit).
    #[serde(with = "duration")]
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_HISTORY_MAX_AGE", value_parser = parse_duration))]
    history_max_age: Duration = Duration::from_secs(3600),
    /// Publishes per second per token, or per IP without one (0 = off).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_PUBLISH_RATE"))]
    publish_rate: f64 = 0.0,
    /// Publishes a token (or the hub) may make at once above its rate.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_PUBLISH_BURST"))]
    publish_burst: u32 = 50,
    /// Publishes per second for the whole hub (0 = off).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_GLOBAL_PUBLISH_RATE"))]
    global_publish_rate: f64 = 0.0,
    /// After streams are drained, how long connections may take to finish.
    #[serde(with = "duration")]
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_SHUTDOWN_GRACE", value_parser = parse_duration))]
    shutdown_grace: Duration = Duration::from_secs(10),
    /// On shutdown, streams end spread over at most this long, each told to
    /// reconnect (elsewhere) with an SSE `retry`, so clients do not storm.
    #[serde(with = "duration")]
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_DRAIN_WINDOW", value_parser = parse_duration))]
    drain_window: Duration = Duration::from_secs(5),
    /// Cluster members to join (comma-separated host:port of their gossip address;
    /// DNS names are re-resolved). Without seeds the node runs alone.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_SEEDS", value_delimiter = ','))]
    seeds: Vec<String> = Vec::new(),
    /// Unique per node; required in a cluster (the binary defaults it to the host name).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_NODE_ID"))]
    node_id: Option<String> = None,
    /// Nodes of other clusters are ignored.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_CLUSTER_ID"))]
    cluster_id: String = "hubbub".into(),
    /// UDP address for gossip.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_GOSSIP_LISTEN"))]
    gossip_listen: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 7946)),
    /// `ip:port` or `host:port` peers gossip to (resolved once at start-up).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_GOSSIP_ADVERTISE"))]
    gossip_advertise: Option<String> = None,
    /// TCP address for relay links between nodes.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_RELAY_LISTEN"))]
    relay_listen: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 7947)),
    /// `host:port` peers dial for relay links.
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_RELAY_ADVERTISE"))]
    relay_advertise: Option<String> = None,
    /// Shared secret authenticating relay links (required in a cluster unless `dev`).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_CLUSTER_SECRET", hide_env_values = true))]
    cluster_secret: Option<String> = None,
    /// Gossip round; failure detection takes about ten.
    #[serde(with = "duration")]
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_GOSSIP_INTERVAL", value_parser = parse_duration))]
    gossip_interval: Duration = Duration::from_millis(100),
    /// A peer silent this long no longer holds delivery back.
    #[serde(with = "duration")]
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_ORDER_WAIT", value_parser = parse_duration))]
    order_wait: Duration = Duration::from_secs(1),
    /// Least time between two watermarks a relay link sends because a peer's
    /// update is waiting for them: when the last one is older a watermark goes
    /// out at once, so light loads pay no pacing; at high rates one watermark
    /// covers all the updates of an interval. Shorter: lower delivery latency
    /// at high rates for more relay packets (0 sends every one at once). A
    /// node quiet for a second promises twice this ahead of its clock.
    #[serde(with = "duration")]
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_WATERMARK_INTERVAL", value_parser = parse_duration))]
    watermark_interval: Duration = Duration::from_millis(5),
    /// Updates each node keeps per origin to repair peers (anti-entropy).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_CLUSTER_LOG_SIZE"))]
    cluster_log_size: usize = 10_000,
    /// When a clustered publish is answered: `local` (logged on this node) or
    /// `replicated` (some peer confirmed it holds it too).
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_PUBLISH_ACK"))]
    publish_ack: PublishAck = PublishAck::Local,
    /// How long a `replicated` publish waits for a peer's confirmation (503 after).
    #[serde(with = "duration")]
    #[cfg_attr(feature = "cli", arg(long, env = "HUBBUB_PUBLISH_ACK_TIMEOUT", value_parser = parse_duration))]
    publish_ack_timeout: Duration = Duration::from_secs(2),
    }
}

/// When a clustered publish is acknowledged (see `Config::publish_ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishAck {
    /// Once this node has logged it: fastest; a kill -9 right after the
    /// answer can lose it if no peer received it yet.
    #[default]
    Local,
    /// Once some live peer confirmed it holds it: a crash of this node then
    /// cannot lose it.
    Replicated,
}

impl std::str::FromStr for PublishAck {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Self::Local),
            "replicated" => Ok(Self::Replicated),
            other => Err(format!(
                "publish_ack must be local or replicated, not {other:?}"
            )),
        }
    }
}

/// Only for `--dev` clusters on one machine; said loudly at start-up.
pub const DEV_CLUSTER_SECRET: &str = "hubbub-dev-cluster-secret";

impl std::fmt::Debug for Config {
    /// Secrets never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hide = |k: &Option<String>| k.as_ref().map(|_| "<hidden>");
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("dev", &self.dev)
            .field("anonymous", &self.anonymous)
            .field("jwt_key", &hide(&self.jwt_key))
            .field("publisher_jwt_key", &hide(&self.publisher_jwt_key))
            .field("subscriber_jwt_key", &hide(&self.subscriber_jwt_key))
            .field("oauth_issuers", &self.oauth_issuers.len())
            .field("oauth_jwks_allow_http", &self.oauth_jwks_allow_http)
            .field("oauth_resource", &self.oauth_resource)
            .field("cors_origins", &self.cors_origins)
            .field("public_urls", &self.public_urls)
            .field("heartbeat", &self.heartbeat)
            .field("max_subscribers", &self.max_subscribers)
            .field("max_connections", &self.max_connections)
            .field("subscriptions", &self.subscriptions)
            .field("seeds", &self.seeds)
            .field("node_id", &self.node_id)
            .field("cluster_secret", &hide(&self.cluster_secret))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error(
        "no JWT key configured: compat_0x needs jwt_key (or publisher_jwt_key and subscriber_jwt_key), or run with --dev"
    )]
    NoKey,
    #[error(
        "no trusted token issuer: set oauth_issuers (Mercure 1.0), or compat_0x = true with jwt_key to serve Mercure 0.x clients, or run with --dev"
    )]
    NoIssuer,
    #[error(
        "{0} is a Mercure 0.x setting, used only with compat_0x = true (which also accepts 0.x clients' weaker tokens)"
    )]
    V0Only(&'static str),
    #[error("{role} key: {source}")]
    Key {
        role: &'static str,
        source: KeyError,
    },
    #[error("invalid {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("a cluster needs cluster_secret (to authenticate relay links between nodes)")]
    NoClusterSecret,
    #[error(
        "{key} is {addr}, which peers cannot dial: set {advertise} to this node's reachable address"
    )]
    Unadvertisable {
        key: &'static str,
        addr: SocketAddr,
        advertise: &'static str,
    },
}

impl Config {
    pub fn from_toml(text: &str, path: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            source: Box::new(e),
        })
    }

    pub fn from_file(path: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Validates and turns the flat config into what each subsystem needs.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.into(),
        };
        if self.max_topics == 0 {
            return Err(invalid("max_topics", "must be at least 1"));
        }
        if self.queue_capacity == 0 {
            return Err(invalid("queue_capacity", "must be at least 1"));
        }
        if self.max_body_bytes == 0 {
            return Err(invalid("max_body_bytes", "must be at least 1"));
        }
        if self.max_subscribe_body_bytes == 0 {
            return Err(invalid("max_subscribe_body_bytes", "must be at least 1"));
        }
        let public_urls = crate::origin::PublicUrls::parse(&self.public_urls).map_err(|e| {
            ConfigError::Invalid {
                key: "public_urls",
                reason: e.to_string(),
            }
        })?;
        if !(self.publish_rate >= 0.0 && self.global_publish_rate >= 0.0) {
            return Err(invalid("publish_rate", "must be zero (off) or positive"));
        }
        if self.cors_origins.iter().any(|o| o == "*") {
            return Err(invalid(
                "cors_origins",
                "\"*\" cannot be combined with credentials; list the origins",
            ));
        }
        Ok(Settings {
            auth: self.auth()?,
            limits: self.limits(),
            cors_origins: self.cors_origins.clone(),
            publish_origins: self.publish_origins.clone(),
            public_urls,
            shutdown_grace: self.shutdown_grace,
            drain_window: self.drain_window,
            publish_ack: (self.publish_ack == PublishAck::Replicated && !self.seeds.is_empty())
                .then_some(self.publish_ack_timeout),
            cluster: self.cluster()?,
            presence: PresenceSettings {
                enabled: self.subscriptions.unwrap_or(self.dev),
                max_tracked: self.max_tracked_subscriptions.max(1),
            },
        })
    }

    /// `None` without seeds: a single node, exactly as without clustering.
    fn cluster(&self) -> Result<Option<ClusterConfig>, ConfigError> {
        if self.seeds.is_empty() {
            return Ok(None);
        }
        let secret = match (&self.cluster_secret, self.dev) {
            (Some(s), _) if !s.is_empty() => s.clone(),
            (_, true) => DEV_CLUSTER_SECRET.to_owned(),
            _ => return Err(ConfigError::NoClusterSecret),
        };
        let gossip_advertise = match &self.gossip_advertise {
            Some(a) => resolve(a, "gossip_advertise")?,
            None => advertised(
                None,
                self.gossip_listen,
                "gossip_listen",
                "gossip_advertise",
            )?,
        };
        let relay_advertise = match &self.relay_advertise {
            Some(a) => a.clone(),
            None => {
                advertised(None, self.relay_listen, "relay_listen", "relay_advertise")?.to_string()
            }
        };
        let node_id = self.node_id.clone().ok_or(ConfigError::Invalid {
            key: "node_id",
            reason: "required in a cluster".into(),
        })?;
        let mut c = ClusterConfig::new(node_id, self.gossip_listen, self.relay_listen, secret);
        c.cluster_id = self.cluster_id.clone();
        c.gossip_advertise = gossip_advertise;
        c.relay_advertise = relay_advertise;
        c.http_advertise = (!self.listen.ip().is_unspecified()).then(|| self.listen.to_string());
        c.seeds = self.seeds.clone();
        c.gossip_interval = self.gossip_interval;
        c.order_wait = self.order_wait;
        c.watermark_interval = self.watermark_interval;
        c.limits.log_entries = self.cluster_log_size.max(1);
        c.want_acks = self.publish_ack == PublishAck::Replicated;
        Ok(Some(c))
    }

    fn auth(&self) -> Result<Auth, ConfigError> {
        let anonymous = self.anonymous || self.dev;
        let auth = if self.compat_0x || self.dev {
            self.v0_auth(anonymous)?
        } else {
            for (key, set) in [
                ("jwt_key", self.jwt_key.is_some()),
                ("publisher_jwt_key", self.publisher_jwt_key.is_some()),
                ("subscriber_jwt_key", self.subscriber_jwt_key.is_some()),
            ] {
                if set {
                    return Err(ConfigError::V0Only(key));
                }
            }
            if self.oauth_issuers.is_empty() {
                return Err(ConfigError::NoIssuer);
            }
            Auth::v1_only(anonymous, self.cookie_name.clone())
        };
        let mut entries = self.oauth_issuers.clone();
        if self.dev {
            entries.push(format!("{DEV_ISSUER}|HS256|{DEV_JWT_KEY}"));
        }
        let options = crate::oauth::IssuerOptions {
            jwks_allow_http: self.oauth_jwks_allow_http,
        };
        let issuers = crate::oauth::Issuers::parse_with(&entries, options).map_err(|e| {
            ConfigError::Invalid {
                key: "oauth_issuers",
                reason: e.to_string(),
            }
        })?;
        Ok(auth.with_oauth(
            issuers,
            self.oauth_resource.clone(),
            self.oauth_cookie_name.clone(),
        ))
    }

    /// The 0.x keys, one per role (`compat_0x`).
    fn v0_auth(&self, anonymous: bool) -> Result<Auth, ConfigError> {
        let shared = self
            .jwt_key
            .clone()
            .or_else(|| self.dev.then(|| DEV_JWT_KEY.to_owned()));
        let publisher = self
            .publisher_jwt_key
            .clone()
            .or_else(|| shared.clone())
            .ok_or(ConfigError::NoKey)?;
        let subscriber = self
            .subscriber_jwt_key
            .clone()
            .or(shared)
            .ok_or(ConfigError::NoKey)?;
        let publisher_alg = self.publisher_jwt_alg.as_deref().unwrap_or(&self.jwt_alg);
        let subscriber_alg = self.subscriber_jwt_alg.as_deref().unwrap_or(&self.jwt_alg);
        Auth::new(
            (&publisher, publisher_alg),
            (&subscriber, subscriber_alg),
            anonymous,
            self.cookie_name.clone(),
        )
        .map_err(|(role, source)| ConfigError::Key { role, source })
    }

    fn limits(&self) -> LimitSettings {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        LimitSettings {
            hub: hubbub_core::Limits {
                queue_capacity: self.queue_capacity,
                max_subscribers: self.max_subscribers,
                history: hubbub_core::HistoryLimits {
                    max_entries: self.history_size,
                    max_bytes: self.history_bytes,
                    max_age: nonzero(self.history_max_age),
                },
                heartbeat: nonzero(self.heartbeat),
            },
            max_body_bytes: self.max_body_bytes,
            max_subscribe_body_bytes: self.max_subscribe_body_bytes,
            max_topics: self.max_topics,
            max_topic_bytes: self.max_topic_bytes,
            max_template_states: self.max_template_states,
            max_connections: self.max_connections,
            lifetime: nonzero(self.write_timeout),
            write_deadline: nonzero(self.write_deadline),
            request_timeout: nonzero(self.request_timeout),
            fanout_wait: self.fanout_wait,
            publish_rate: (self.publish_rate > 0.0)
                .then_some((self.publish_rate, self.publish_burst.max(1))),
            global_publish_rate: (self.global_publish_rate > 0.0)
                .then_some((self.global_publish_rate, self.publish_burst.max(1))),
        }
    }
}

fn advertised(
    explicit: Option<SocketAddr>,
    listen: SocketAddr,
    key: &'static str,
    advertise: &'static str,
) -> Result<SocketAddr, ConfigError> {
    match explicit {
        Some(a) => Ok(a),
        None if listen.ip().is_unspecified() => Err(ConfigError::Unadvertisable {
            key,
            addr: listen,
            advertise,
        }),
        None => Ok(listen),
    }
}

fn resolve(addr: &str, key: &'static str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    let invalid = |reason: String| ConfigError::Invalid { key, reason };
    addr.to_socket_addrs()
        .map_err(|e| invalid(format!("cannot resolve {addr:?}: {e}")))?
        .next()
        .ok_or_else(|| invalid(format!("{addr:?} resolves to no address")))
}

/// What the running server reads (through an `ArcSwap`, so SIGHUP can swap it).
#[derive(Debug, Clone)]
pub struct Settings {
    pub auth: Auth,
    pub limits: LimitSettings,
    pub cors_origins: Vec<String>,
    pub publish_origins: Vec<String>,
    /// `public_urls`, parsed (empty: every origin is answered).
    pub public_urls: crate::origin::PublicUrls,
    pub shutdown_grace: Duration,
    pub drain_window: Duration,
    /// In a cluster with `publish_ack = replicated`: how long a publish waits
    /// for a peer to confirm it holds the update.
    pub publish_ack: Option<Duration>,
    /// Fixed at start-up (a reload does not change it).
    pub cluster: Option<ClusterConfig>,
    /// Active subscriptions (fixed at start-up).
    pub presence: PresenceSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceSettings {
    pub enabled: bool,
    pub max_tracked: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LimitSettings {
    pub hub: hubbub_core::Limits,
    pub max_body_bytes: usize,
    pub max_subscribe_body_bytes: usize,
    pub max_topics: usize,
    pub max_topic_bytes: usize,
    pub max_template_states: usize,
    pub max_connections: usize,
    pub lifetime: Option<Duration>,
    pub write_deadline: Option<Duration>,
    /// How long a request body may take to arrive (`None`: no limit).
    pub request_timeout: Option<Duration>,
    /// How long a publish waits for the fan-out backlog to shrink (then 503).
    pub fanout_wait: Duration,
    /// (per second, burst)
    pub publish_rate: Option<(f64, u32)>,
    pub global_publish_rate: Option<(f64, u32)>,
}

/// Accepts `40`, `40s`, `500ms`, `5m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Durations in the file: bare seconds (`40`) or text [`parse_duration`] reads;
/// written back as text it reads exactly (the binary merges through serde).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => super::parse_duration(&t).map_err(serde::de::Error::custom),
        }
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_text(*d))
    }

    /// Whole milliseconds as `Nms`, anything finer as seconds with nine decimals.
    pub(super) fn to_text(d: Duration) -> String {
        if d.subsec_nanos().is_multiple_of(1_000_000) {
            format!("{}ms", d.as_millis())
        } else {
            format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("40"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("-1s").is_err());
        for d in [
            Duration::from_millis(1500),
            Duration::new(3, 7),
            Duration::ZERO,
        ] {
            assert_eq!(parse_duration(&duration::to_text(d)), Ok(d), "{d:?}");
        }
    }

    #[test]
    fn toml_keys_and_errors() {
        let c = Config::from_toml(
            "heartbeat = \"2s\"\nmax_topics = 5\ncompat_0x = true\njwt_key = \"k\"\nrequest_timeout = \"1500ms\"",
            "t",
        )
        .unwrap();
        assert_eq!((c.heartbeat, c.max_topics), (Duration::from_secs(2), 5));
        let limits = c.settings().unwrap().limits;
        assert_eq!(limits.request_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(
            Config::default().limits().request_timeout,
            Some(Duration::from_secs(30))
        );
        assert!(Config::from_toml("nonsense = 1", "t").is_err());
        assert!(matches!(
            Config::default().settings(),
            Err(ConfigError::NoIssuer)
        ));
        let compat = Config {
            compat_0x: true,
            ..Config::default()
        };
        assert!(matches!(compat.settings(), Err(ConfigError::NoKey)));
        let dev = Config {
            dev: true,
            ..Config::default()
        };
        let settings = dev.settings().unwrap();
        assert!(settings.auth.anonymous());
        assert!(settings.auth.compat_0x(), "--dev serves both generations");
        assert_eq!(settings.auth.issuer_names(), [DEV_ISSUER]);
        let star = Config {
            dev: true,
            cors_origins: vec!["*".into()],
            ..Config::default()
        };
        assert!(star.settings().is_err());
    }

    #[test]
    fn cluster_needs_a_secret_and_a_dialable_address() {
        let base = Config {
            compat_0x: true,
            jwt_key: Some("k".into()),
            seeds: vec!["127.0.0.1:7946".into()],
            ..Config::default()
        };
        assert!(matches!(base.settings(), Err(ConfigError::NoClusterSecret)));
        let secret = Config {
            cluster_secret: Some("s".into()),
            ..base.clone()
        };
        assert!(matches!(
            secret.settings(),
            Err(ConfigError::Unadvertisable { .. })
        ));
        let unnamed = Config {
            gossip_listen: "127.0.0.1:7000".parse().unwrap(),
            relay_listen: "127.0.0.1:7001".parse().unwrap(),
            ..secret
        };
        assert!(
            matches!(
                unnamed.settings(),
                Err(ConfigError::Invalid { key: "node_id", .. })
            ),
            "the server reads no host name: the binary names the node"
        );
        let ok = Config {
            node_id: Some("n1".into()),
            ..unnamed
        };
        let cluster = ok.settings().unwrap().cluster.unwrap();
        assert_eq!(
            (cluster.node_id.as_str(), cluster.relay_advertise.as_str()),
            ("n1", "127.0.0.1:7001")
        );
        assert!(
            Config {
                oauth_issuers: vec!["https://issuer.example|HS256|k".into()],
                ..Config::default()
            }
            .settings()
            .unwrap()
            .cluster
            .is_none()
        );
    }

    /// 0.x is served only when asked for: a 0.x key alone is an error, not
    /// a silently unused setting (nor a silently weaker hub).
    #[test]
    fn mercure_0x_is_explicit() {
        let issuer = vec!["https://issuer.example|HS256|k".into()];
        let v1 = Config {
            oauth_issuers: issuer.clone(),
            ..Config::default()
        };
        assert!(!v1.settings().unwrap().auth.compat_0x());
        for (key, config) in [
            (
                "jwt_key",
                Config {
                    jwt_key: Some("k".into()),
                    ..v1.clone()
                },
            ),
            (
                "subscriber_jwt_key",
                Config {
                    subscriber_jwt_key: Some("k".into()),
                    ..v1.clone()
                },
            ),
        ] {
            match config.settings() {
                Err(ConfigError::V0Only(k)) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
        let both = Config {
            compat_0x: true,
            jwt_key: Some("k".into()),
            oauth_issuers: issuer,
            ..Config::default()
        };
        let auth = both.settings().unwrap().auth;
        assert!(auth.compat_0x());
        assert_eq!(auth.issuer_names(), ["https://issuer.example"]);
    }

    #[test]
    fn jwks_uris_are_https_unless_allowed() {
        let toml = |allow: bool| {
            format!(
                "oauth_issuers = [\"https://i.example|jwks|http://127.0.0.1:9/jwks\"]\noauth_jwks_allow_http = {allow}"
            )
        };
        let refused = Config::from_toml(&toml(false), "t").unwrap();
        assert!(matches!(
            refused.settings(),
            Err(ConfigError::Invalid {
                key: "oauth_issuers",
                ..
            })
        ));
        let allowed = Config::from_toml(&toml(true), "t").unwrap();
        assert!(allowed.oauth_jwks_allow_http);
        assert_eq!(
            allowed.settings().unwrap().auth.issuer_names(),
            ["https://i.example"]
        );
    }

    #[test]
    fn secrets_are_hidden() {
        let c = Config {
            jwt_key: Some("s3cret".into()),
            ..Config::default()
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
