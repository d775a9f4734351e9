//! Command-line options of `hubbub bench` (clap derive, `HUBBUB_BENCH_*` env vars).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The Mercure development key, as shipped by the reference hub and `hubbub serve --dev`.
pub const DEV_JWT_KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";

/// Which server dialect to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Mercure: `GET hub?topic=..` to subscribe, form `POST hub` with a JWT to publish.
    Hubbub,
    /// nginx + nchan: `GET --sub-url` (EventSource) and raw-body `POST --pub-url`.
    Nchan,
}

/// How hubbub subscribers select their topic `https://bench.hubbub/t/<i>`
/// (target hubbub). The pattern kinds publish to `<topic>/<publisher>-<seq>`,
/// a new topic each time, so every publish evaluates every pattern (no match
/// result is cached): the cost of matching itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelectorKind {
    /// 0.x `topic=<topic>`.
    Exact,
    /// 1.0 `match=<topic>`.
    Match,
    /// 0.x URI template `topic=<topic>/{id}`.
    Template,
    /// 1.0 URL Pattern `match_urlpattern=<topic>/:id`.
    Urlpattern,
}

impl SelectorKind {
    /// Whether each publish goes to a fresh topic under the subscribed one.
    pub fn is_pattern(self) -> bool {
        matches!(self, Self::Template | Self::Urlpattern)
    }

    /// The subscribe query parameter for `topic`, form-encoded.
    pub fn parameter(self, topic: &str) -> String {
        let (name, value) = match self {
            Self::Exact => ("topic", topic.to_owned()),
            Self::Match => ("match", topic.to_owned()),
            Self::Template => ("topic", format!("{topic}/{{id}}")),
            Self::Urlpattern => ("match_urlpattern", format!("{topic}/:id")),
        };
        let value: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
        format!("{name}={value}")
    }
}

/// A string kept out of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Load, latency and soak benchmark for SSE hubs.
///
/// Subscribers are spread round-robin over the `--hub`s, `--topics` topics and
/// worker processes (the same binary re-run with hidden `--worker-*` flags);
/// publishers run in the parent. Timeline: connect all, settle, publish for warmup + duration (only the
/// duration is measured), drain, then count losses.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Server dialect.
    #[arg(long, value_enum, default_value_t = Target::Hubbub, env = "HUBBUB_BENCH_TARGET")]
    pub target: Target,
    /// How subscribers select their topic (target hubbub): `exact` (0.x
    /// `topic=`), `match` (1.0), `template` (0.x URI template) or
    /// `urlpattern` (1.0 URL Pattern); the last two publish to a new topic
    /// under the subscribed one each time, so matching is never cached.
    #[arg(long, value_enum, default_value_t = SelectorKind::Exact, env = "HUBBUB_BENCH_SELECTOR")]
    pub selector: SelectorKind,
    /// Mercure hub URL (target hubbub). Repeat it for a cluster: subscriber `i`
    /// connects to hub `i % n` (results are also reported per hub).
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080/.well-known/mercure",
        env = "HUBBUB_BENCH_HUB"
    )]
    pub hub: Vec<String>,
    /// Where the publishers send (target hubbub) [default: the first --hub].
    /// Repeatable: publisher `p` publishes to hub `p % n`.
    #[arg(long, env = "HUBBUB_BENCH_PUBLISH_HUB")]
    pub publish_hub: Vec<String>,
    /// Subscribe URL template, `{topic}` replaced by `bench-<i>` (target nchan).
    #[arg(
        long,
        default_value = "http://127.0.0.1:8090/sub/{topic}",
        env = "HUBBUB_BENCH_SUB_URL"
    )]
    pub sub_url: String,
    /// Publish URL template, `{topic}` replaced by `bench-<i>` (target nchan).
    #[arg(
        long,
        default_value = "http://127.0.0.1:8090/pub/{topic}",
        env = "HUBBUB_BENCH_PUB_URL"
    )]
    pub pub_url: String,
    /// Number of SSE subscribers.
    #[arg(long, default_value_t = 1000, env = "HUBBUB_BENCH_SUBSCRIBERS")]
    pub subscribers: u32,
    /// Topics the subscribers are spread over (round-robin); `https://bench.hubbub/t/<i>`.
    #[arg(long, default_value_t = 1, env = "HUBBUB_BENCH_TOPICS")]
    pub topics: u32,
    /// Publisher tasks, each on its own kept-alive connection, sharing `--rate`.
    #[arg(long, default_value_t = 4, env = "HUBBUB_BENCH_PUBLISHERS")]
    pub publishers: u32,
    /// Total publishes per second offered; 0 = idle test (connections only).
    #[arg(long, default_value_t = 100.0, env = "HUBBUB_BENCH_RATE")]
    pub rate: f64,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 10.0, env = "HUBBUB_BENCH_DURATION")]
    pub duration: f64,
    /// Publishing before the measured window, seconds.
    #[arg(long, default_value_t = 2.0, env = "HUBBUB_BENCH_WARMUP")]
    pub warmup: f64,
    /// Wait after the last publish before counting losses, seconds.
    #[arg(long, default_value_t = 2.0, env = "HUBBUB_BENCH_DRAIN")]
    pub drain: f64,
    /// Wait after all subscribers connected before sampling RSS and publishing, seconds.
    #[arg(long, default_value_t = 2.0, env = "HUBBUB_BENCH_SETTLE")]
    pub settle: f64,
    /// Message payload size in bytes (the stamp is padded up to this).
    #[arg(long, default_value_t = 64, env = "HUBBUB_BENCH_PAYLOAD")]
    pub payload: usize,
    /// New subscriber connections per second (all processes together).
    #[arg(long, default_value_t = 5000.0, env = "HUBBUB_BENCH_CONNECT_RATE")]
    pub connect_rate: f64,
    /// Subscriber worker processes [default: ceil(subscribers / 15000), and at least one
    /// per `--hub`: a lone worker thread next to several busy servers on the same cores
    /// gets too little CPU and its backlog reads as latency]; 0 = in this process.
    #[arg(long, env = "HUBBUB_BENCH_PROCESSES")]
    pub processes: Option<u32>,
    /// Loopback source addresses 127.0.0.2, .3, ... to spread subscriber connections
    /// over, with source ports assigned by the bench [default: one per 20000
    /// subscribers]; 0 = the kernel picks address and port (slow past ~10k
    /// connections: its free-port search scans the range).
    #[arg(long, env = "HUBBUB_BENCH_SOURCE_IPS")]
    pub source_ips: Option<u32>,
    /// HS256 secret used to mint the publisher JWT.
    #[arg(long, default_value = DEV_JWT_KEY, hide_default_value = true, env = "HUBBUB_BENCH_JWT_KEY")]
    pub jwt_key: Secret,
    /// Publisher JWT to use as is (instead of minting one from --jwt-key).
    #[arg(long, env = "HUBBUB_BENCH_TOKEN")]
    pub token: Option<Secret>,
    /// Server process to sample RSS and CPU of (repeatable; values are summed).
    #[arg(
        long = "server-pid",
        env = "HUBBUB_BENCH_SERVER_PID",
        value_delimiter = ','
    )]
    pub server_pids: Vec<u32>,
    /// Write the JSON report here.
    #[arg(long, env = "HUBBUB_BENCH_JSON_OUT")]
    pub json_out: Option<PathBuf>,
    /// Write PNG plots into this directory (created if missing) at the end of the run:
    /// `latency.png`, the publish-to-receive latency histogram (log scale), and
    /// `rss.png`, the RSS and CPU of each `--server-pid` over time (needs
    /// --server-pid; one sample per --sample-interval). Text needs a TrueType font:
    /// HUBBUB_PLOT_FONT=file.ttf, else DejaVu Sans or Liberation Sans from the usual
    /// system paths; without one the plots have no text.
    #[arg(long, value_name = "DIR", env = "HUBBUB_BENCH_PLOT_DIR")]
    pub plot_dir: Option<PathBuf>,
    /// Run no load: draw the plots of this saved --json-out report into --plot-dir and
    /// exit (a report from before latency histograms were kept gets only rss.png).
    #[arg(long, value_name = "REPORT_JSON", requires = "plot_dir")]
    pub plot_from: Option<PathBuf>,
    /// Subscribers closed and reopened per second while publishing (soak); they come
    /// back with `Last-Event-ID`, so a hub that resumes correctly loses nothing.
    #[arg(long, default_value_t = 0.0, env = "HUBBUB_BENCH_CHURN")]
    pub churn: f64,
    /// Server RSS/CPU sampling period, seconds.
    #[arg(long, default_value_t = 1.0, env = "HUBBUB_BENCH_SAMPLE_INTERVAL")]
    pub sample_interval: f64,
    /// Return an error if anything was lost, a subscriber failed or dropped, or
    /// (with --rate > 0) nothing was delivered.
    #[arg(long, env = "HUBBUB_BENCH_FAIL_ON_LOSS")]
    pub fail_on_loss: bool,
    /// Allow a non-loopback target (never needed on a single machine).
    #[arg(long)]
    pub allow_remote: bool,
    /// No progress lines on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Internal: run as subscriber worker number N (set by the parent).
    #[arg(long, hide = true)]
    pub worker_index: Option<u32>,
    /// Internal: total number of worker processes.
    #[arg(long, hide = true, default_value_t = 1)]
    pub worker_of: u32,
    /// Internal: the parent's run id, stamped into payloads.
    #[arg(long, hide = true, default_value_t = 0)]
    pub run_id: u32,
}

impl BenchArgs {
    /// Worker processes to start (0 = subscribers run inside this process).
    pub fn effective_processes(&self) -> u32 {
        self.processes.unwrap_or_else(|| {
            let hubs = match self.target {
                Target::Hubbub => u32::try_from(self.hub.len()).unwrap_or(u32::MAX),
                Target::Nchan => 1,
            };
            let by_count = self.subscribers.div_ceil(15_000);
            if by_count == 0 {
                0
            } else {
                by_count.max(hubs.min(self.subscribers))
            }
        })
    }

    pub fn effective_source_ips(&self) -> u32 {
        self.source_ips
            .unwrap_or_else(|| self.subscribers.div_ceil(20_000).max(1))
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let finite_nonneg = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!("--{name} must be a finite number >= 0"))
            }
        };
        finite_nonneg("rate", self.rate)?;
        finite_nonneg("duration", self.duration)?;
        finite_nonneg("warmup", self.warmup)?;
        finite_nonneg("drain", self.drain)?;
        finite_nonneg("settle", self.settle)?;
        finite_nonneg("churn", self.churn)?;
        if self.hub.is_empty() {
            return Err("--hub needs at least one URL".into());
        }
        if self.target == Target::Nchan && (self.hub.len() > 1 || !self.publish_hub.is_empty()) {
            return Err(
                "--hub and --publish-hub are for target hubbub; nchan takes --sub-url and --pub-url"
                    .into(),
            );
        }
        if self.topics == 0 {
            return Err("--topics must be at least 1".into());
        }
        if self.rate > 0.0 && self.publishers == 0 {
            return Err("--publishers must be at least 1 when --rate > 0".into());
        }
        if !(self.connect_rate.is_finite() && self.connect_rate > 0.0) {
            return Err("--connect-rate must be > 0".into());
        }
        if !(self.sample_interval.is_finite() && self.sample_interval >= 0.05) {
            return Err("--sample-interval must be >= 0.05".into());
        }
        let ips = self.effective_source_ips();
        if ips > 250 {
            return Err("--source-ips must be at most 250 (127.0.0.2 ..= 127.0.0.251)".into());
        }
        if ips == 0 && self.subscribers > 28_000 {
            return Err("more than 28,000 subscribers need --source-ips (one per 20,000)".into());
        }
        if ips > 0 && self.subscribers.div_ceil(ips) > 40_000 {
            return Err("at most 40,000 subscribers per source address: raise --source-ips".into());
        }
        let procs = self.effective_processes();
        if procs > 0 && self.subscribers.div_ceil(procs) > 19_800 {
            return Err(format!(
                "{} subscribers over {procs} processes exceeds the ~19,900 sockets one process may open; raise --processes",
                self.subscribers
            ));
        }
        if procs == 0 && self.subscribers > 19_800 {
            return Err("in-process mode (--processes 0) holds at most 19,800 subscribers".into());
        }
        Ok(())
    }
}

/// The flags parsed the way `hubbub bench` parses them, for the tests of every module
/// of this crate (which all need a `BenchArgs` to start from).
#[cfg(test)]
pub(crate) mod testing {
    use clap::Parser;

    use super::BenchArgs;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    /// `argv` without the program name.
    pub fn try_parse(argv: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied())).map(|c| c.args)
    }

    pub fn parse(argv: &[&str]) -> BenchArgs {
        try_parse(argv).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{parse, try_parse};
    use super::*;

    #[test]
    fn defaults_scale_processes_and_source_ips() {
        let a = parse(&["--subscribers", "19000"]);
        assert_eq!((a.effective_processes(), a.effective_source_ips()), (2, 1));
        let a = parse(&["--subscribers", "45000", "--processes", "3"]);
        assert_eq!((a.effective_processes(), a.effective_source_ips()), (3, 3));
        assert!(a.validate().is_ok());
        assert_eq!(a.jwt_key.0, DEV_JWT_KEY);
        assert_eq!(format!("{:?}", a.jwt_key), "Secret(***)");
    }

    #[test]
    fn validates() {
        assert!(
            parse(&["--subscribers", "45000", "--processes", "2"])
                .validate()
                .is_err()
        );
        assert!(parse(&["--topics", "0"]).validate().is_err());
        assert!(
            parse(&[
                "--subscribers",
                "30000",
                "--processes",
                "2",
                "--source-ips",
                "0"
            ])
            .validate()
            .is_err()
        );
        assert!(
            parse(&["--subscribers", "30000", "--processes", "2"])
                .validate()
                .is_ok()
        );
        assert!(parse(&["--rate=-1"]).validate().is_err());
        assert!(
            parse(&[
                "--target",
                "nchan",
                "--server-pid",
                "1,2",
                "--server-pid",
                "3"
            ])
            .server_pids
                == [1, 2, 3]
        );
    }

    #[test]
    fn hubs_repeat_and_raise_the_default_process_count() {
        let a = parse(&[]);
        assert_eq!(a.hub, ["http://127.0.0.1:8080/.well-known/mercure"]);
        assert!(a.publish_hub.is_empty());
        let hubs = [
            "--hub",
            "http://127.0.0.11:8080/h",
            "--hub",
            "http://127.0.0.12:8080/h",
            "--hub",
            "http://127.0.0.13:8080/h",
        ];
        let with = |extra: &[&str]| parse(&[&hubs[..], extra].concat());
        let a = with(&["--publish-hub", "http://127.0.0.12:8080/h"]);
        assert_eq!((a.hub.len(), a.publish_hub.len()), (3, 1));
        assert!(a.validate().is_ok());
        // One worker per hub, unless the subscriber count asks for more or fewer.
        assert_eq!(with(&["--subscribers", "9000"]).effective_processes(), 3);
        assert_eq!(with(&["--subscribers", "50000"]).effective_processes(), 4);
        assert_eq!(with(&["--subscribers", "2"]).effective_processes(), 2);
        assert_eq!(with(&["--subscribers", "0"]).effective_processes(), 0);
        assert_eq!(with(&["--processes", "1"]).effective_processes(), 1);
        assert!(parse(&["--hub", "http://127.0.0.1:1/x"]).effective_processes() == 1);
    }

    #[test]
    fn plot_options() {
        let a = parse(&["--plot-dir", "/tmp/p"]);
        assert_eq!(a.plot_dir.as_deref(), Some(std::path::Path::new("/tmp/p")));
        assert!(a.plot_from.is_none());
        let a = parse(&["--plot-from", "r.json", "--plot-dir", "d"]);
        assert_eq!(a.plot_from.as_deref(), Some(std::path::Path::new("r.json")));
        let e = try_parse(&["--plot-from", "r.json"]).unwrap_err();
        assert!(e.to_string().contains("--plot-dir"), "{e}");
    }

    #[test]
    fn worker_flags_are_hidden_but_parse() {
        let a = parse(&["--worker-index", "1", "--worker-of", "2", "--run-id", "7"]);
        assert_eq!((a.worker_index, a.worker_of, a.run_id), (Some(1), 2, 7));
    }
}
