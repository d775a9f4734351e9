//! Command-line surface. Every `serve` option is a flag, a `HUBBUB_*` variable and
//! a key of the TOML config file (same name, dashes for underscores), declared
//! once on hubbub-server's `Config`; flags beat variables, which beat the file,
//! which beats the defaults. Only `--config` and `--log-format` are the binary's own.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches, Parser, Subcommand, ValueEnum};
use hubbub_server::config::{Config, parse_duration};
use serde_json::Value;

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
    /// Logs on stderr as `text` or `json` (level via RUST_LOG).
    #[arg(long, env = "HUBBUB_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Every [`Config`] option, as flags and variables.
    #[command(flatten)]
    pub given: Given,
}

impl ServeArgs {
    /// The file (if any, else the defaults) with flags and variables on top.
    pub fn config(&self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => Config::from_file(&path.to_string_lossy())?,
            None => Config::default(),
        };
        self.given.over(file)
    }
}

/// The [`Config`] options given as flags or `HUBBUB_*` variables, kept as
/// parsed so that every reload lays them over the re-read file again. The
/// flags are `Config`'s own clap attributes (hubbub-server's `cli` feature),
/// registered "for update": none is required and none has a default here, so
/// only what the user gave is present.
#[derive(Debug, Clone)]
pub struct Given(ArgMatches);

impl Given {
    /// `base` with every option given as a flag or variable on top. An on/off
    /// option's variable set to false does not switch off what the file switched
    /// on (flags can only switch on; as it always was); a tri-state one's does.
    pub fn over(&self, base: Config) -> anyhow::Result<Config> {
        let mut given = base.clone();
        given.update_from_arg_matches(&self.0)?;
        let (mut merged, given) = (to_map(&base)?, to_map(&given)?);
        // Options unset by default (`Option<bool>`, like `subscriptions`) are
        // tri-state: an explicit false does switch them off.
        let defaults = to_map(&Config::default())?;
        for id in self.0.ids().map(clap::Id::as_str) {
            let explicit = matches!(
                self.0.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            let tri_state = defaults.get(id) == Some(&Value::Null);
            if let Some(value) = given
                .get(id)
                .filter(|v| explicit && (tri_state || **v != Value::Bool(false)))
            {
                merged.insert(id.to_owned(), value.clone());
            }
        }
        Ok(serde_json::from_value(Value::Object(merged))?)
    }
}

/// A config as its keys and values (the same keys as the TOML file).
fn to_map(config: &Config) -> anyhow::Result<serde_json::Map<String, Value>> {
    match serde_json::to_value(config)? {
        Value::Object(map) => Ok(map),
        other => anyhow::bail!("a config serializes to a map, not {other}"),
    }
}

impl FromArgMatches for Given {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(matches.clone()))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0 = matches.clone();
        Ok(())
    }
}

impl Args for Given {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Config::augment_args_for_update(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Config::augment_args_for_update(cmd)
    }
}

/// Which Mercure generation `publish` and `subscribe` speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// Mercure 1.0: RFC 9068 access tokens from `--issuer`; `subscribe` selects
    /// with `--match` / `--match-urlpattern`.
    #[value(name = "1.0")]
    V1,
    /// Mercure 0.x: tokens with a `mercure` claim; `subscribe` selects with `--topic`.
    #[value(name = "0.x")]
    Legacy,
}

/// Where `publish` and `subscribe` talk to, and with which token.
#[derive(Debug, Args)]
pub struct HubArgs {
    /// The hub URL.
    #[arg(
        long,
        env = "HUBBUB_HUB",
        default_value = "http://127.0.0.1:8080/.well-known/mercure"
    )]
    pub hub: String,
    /// The protocol generation: which token is minted and, for `subscribe`,
    /// which query parameters select topics.
    #[arg(long, value_enum, default_value = "1.0")]
    pub protocol: Protocol,
    /// JWT sent as a bearer token, as is (without it one is minted with --jwt-key).
    #[arg(long, env = "HUBBUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// HS256 key to mint a token with (defaults to the development key).
    #[arg(long, env = "HUBBUB_JWT_KEY", hide_env_values = true)]
    pub jwt_key: Option<String>,
    /// `iss` of a minted 1.0 token (one of the hub's trusted issuers; `serve
    /// --dev` trusts this default with the development key).
    #[arg(long, default_value = hubbub_server::DEV_ISSUER)]
    pub issuer: String,
    /// `aud` of a minted 1.0 token (repeatable): the hub's resource identifier.
    /// Defaults to the --hub URL, which is what a hub without `oauth_resource` expects.
    #[arg(long)]
    pub audience: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub to: HubArgs,
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
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    #[command(flatten)]
    pub to: HubArgs,
    /// Mercure 1.0: exact topic to receive (repeatable; `*` for all).
    #[arg(
        long = "match",
        required_unless_present_any = ["match_urlpattern", "topic", "presence"]
    )]
    pub match_exact: Vec<String>,
    /// Mercure 1.0: URL pattern of the topics to receive (repeatable), e.g.
    /// `https://example.com/books/:id`.
    #[arg(long)]
    pub match_urlpattern: Vec<String>,
    /// Mercure 0.x topic selector (repeatable): exact topic, `*` or URI
    /// template; needs `--protocol 0.x`.
    #[arg(long)]
    pub topic: Vec<String>,
    /// Subscribe without a token (only public updates). Without this, --token
    /// or a minted token (subscribe on `*`) is sent.
    #[arg(long, conflicts_with = "token")]
    pub anonymous: bool,
    /// Resume after this id (or `earliest`).
    #[arg(long)]
    pub last_event_id: Option<String>,
    /// Print events as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Who is here: list the hub's active subscriptions (Mercure's
    /// subscription API), then follow them live from the list's cursor
    /// (`+`/`-` lines). Needs a token whose subscribe grants cover
    /// `/.well-known/mercure/subscriptions` (a minted one does).
    #[arg(
        long,
        conflicts_with_all = ["match_exact", "match_urlpattern", "topic", "anonymous", "last_event_id"]
    )]
    pub presence: bool,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use clap::CommandFactory;

    use super::*;

    fn serve_args(args: &[&str]) -> ServeArgs {
        let argv = ["hubbub", "serve"].iter().chain(args);
        match Cli::try_parse_from(argv).expect("the flags parse").command {
            Command::Serve(args) => *args,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let file = Config::from_toml(
            "max_topics = 3\nheartbeat = \"7s\"\ndev = true\nseeds = [\"a:1\"]",
            "t",
        )
        .unwrap();
        let given = serve_args(&[
            "--max-topics",
            "9",
            "--seeds",
            "b:2,c:3",
            "--order-wait",
            "250ms",
        ]);
        let c = given.given.over(file).unwrap();
        assert_eq!(c.max_topics, 9, "flag over file");
        assert_eq!(c.seeds, ["b:2", "c:3"], "flag over file");
        assert_eq!(
            c.order_wait,
            Duration::from_millis(250),
            "flag over default"
        );
        assert_eq!(c.heartbeat, Duration::from_secs(7), "file over default");
        assert!(
            c.dev,
            "an absent on/off flag does not switch off the file's"
        );
        assert_eq!(c.queue_capacity, Config::default().queue_capacity);

        let c = serve_args(&["--anonymous", "--node-id", "n7"])
            .given
            .over(Config::default())
            .unwrap();
        assert!(c.anonymous && !c.dev);
        assert_eq!(c.node_id.as_deref(), Some("n7"));
        assert_eq!(
            serve_args(&[]).given.over(Config::default()).unwrap(),
            Config::default(),
            "nothing given: the defaults, untouched"
        );
    }

    #[test]
    fn a_tri_state_option_can_be_switched_off_explicitly() {
        let on = Config::from_toml("subscriptions = true", "t").unwrap();
        let off = |args: &[&str]| {
            serve_args(args)
                .given
                .over(on.clone())
                .unwrap()
                .subscriptions
        };
        assert_eq!(off(&[]), Some(true), "the file's");
        assert_eq!(off(&["--subscriptions=false"]), Some(false));
        assert_eq!(off(&["--subscriptions"]), Some(true));
        let dev = serve_args(&["--dev", "--subscriptions=false"])
            .given
            .over(Config::default())
            .unwrap();
        assert!(
            !dev.settings().unwrap().presence.enabled,
            "--dev's default overridden"
        );
        let dev = serve_args(&["--dev"])
            .given
            .over(Config::default())
            .unwrap();
        assert!(dev.settings().unwrap().presence.enabled, "on with --dev");
    }

    #[test]
    fn a_bad_flag_value_is_refused_by_name() {
        let argv = ["hubbub", "serve", "--heartbeat", "2 weeks"];
        let err = Cli::try_parse_from(argv).unwrap_err().to_string();
        assert!(err.contains("--heartbeat"), "{err}");
    }

    /// One row of README's configuration table, as keys.
    struct Documented {
        /// Flag, variable and TOML key.
        everywhere: BTreeSet<String>,
        /// Marked "(flag/env only)": not a TOML key.
        flag_env_only: BTreeSet<String>,
    }

    /// The key column of the table under README's "## Configuration": every
    /// backticked name; `publisher_jwt_key`/`_alg` names `publisher_jwt_alg` too.
    fn documented() -> Documented {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("\n## Configuration\n")
            .nth(1)
            .expect("README has a Configuration section");
        let mut doc = Documented {
            everywhere: BTreeSet::new(),
            flag_env_only: BTreeSet::new(),
        };
        let rows = section.lines().skip_while(|l| !l.starts_with('|')).skip(2);
        for row in rows.take_while(|l| l.starts_with('|')) {
            let cell = row.split('|').nth(1).expect("a key cell");
            let set = if cell.contains("(flag/env only)") {
                &mut doc.flag_env_only
            } else {
                &mut doc.everywhere
            };
            let mut previous = String::new();
            for name in cell.split('`').skip(1).step_by(2) {
                let name = match name.strip_prefix('_') {
                    Some(suffix) => {
                        let stem = previous.rsplit_once('_').expect("a stem").0;
                        format!("{stem}_{suffix}")
                    }
                    None => name.to_owned(),
                };
                set.insert(name.clone());
                previous = name;
            }
        }
        doc
    }

    #[test]
    fn readme_documents_every_option_as_flag_variable_and_key() {
        let doc = documented();
        let cmd = Cli::command();
        let serve = cmd.find_subcommand("serve").expect("a serve command");
        let mut flags = BTreeSet::new();
        for arg in serve.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "config" || id == "help" {
                continue; // named in README's text, not the table
            }
            assert_eq!(arg.get_long(), Some(id.replace('_', "-").as_str()));
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            assert_eq!(env, Some(format!("HUBBUB_{}", id.to_uppercase())), "{id}");
            flags.insert(id.to_owned());
        }
        let all: BTreeSet<String> = doc.everywhere.union(&doc.flag_env_only).cloned().collect();
        let undocumented: Vec<_> = flags.symmetric_difference(&all).collect();
        assert!(
            undocumented.is_empty(),
            "flags vs README's table: {undocumented:?}"
        );

        let keys: BTreeSet<String> = to_map(&Config::default())
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let undocumented: Vec<_> = keys.symmetric_difference(&doc.everywhere).collect();
        assert!(
            undocumented.is_empty(),
            "TOML keys vs README's table: {undocumented:?}"
        );
        assert_eq!(doc.flag_env_only, BTreeSet::from(["log_format".to_owned()]));
    }
}
