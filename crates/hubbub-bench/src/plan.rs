//! The run plan resolved from `BenchArgs`: addresses, per-topic request bytes, the
//! token, and which subscriber goes to which topic and source address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::args::{BenchArgs, Target};
use crate::error::BenchError;
use crate::http::{self, HttpUrl};
use crate::report::PlanSummary;

/// Where one hub's subscribers connect, with a ready-to-send request per topic.
#[derive(Debug)]
pub struct SubTarget {
    pub addr: SocketAddr,
    /// Subscribe request per topic.
    pub requests: Vec<Vec<u8>>,
}

/// Where a publisher sends.
#[derive(Debug)]
pub struct PubTarget {
    pub addr: SocketAddr,
    pub host: String,
    /// Publish path per topic (nchan) or one shared path (hubbub).
    pub paths: Vec<String>,
}

#[derive(Debug)]
pub struct Plan {
    pub target: Target,
    pub run_id: u32,
    pub subscribers: u32,
    pub topics: u32,
    pub publishers: u32,
    pub rate: f64,
    pub payload: usize,
    pub connect_rate: f64,
    pub churn: f64,
    pub processes: u32,
    pub warmup: Duration,
    pub duration: Duration,
    pub drain: Duration,
    pub settle: Duration,
    pub sample_interval: Duration,
    pub connect_timeout: Duration,
    /// One per `--hub` (one for nchan); subscriber `slot` uses `hub_of(slot)`.
    pub sub_targets: Vec<SubTarget>,
    /// One per `--publish-hub` (one for nchan); publisher `p` uses `p % len`.
    pub pub_targets: Vec<PubTarget>,
    /// Form body prefix `topic=...&data=` per topic (hubbub only); for a
    /// pattern selector `topic=...%2F`, completed per publish.
    pub pub_form_prefix: Vec<String>,
    pub selector: crate::args::SelectorKind,
    /// Empty: let the kernel pick the source address.
    pub source_ips: Vec<IpAddr>,
    pub source_ports: SourcePorts,
    pub token: Option<String>,
    /// For the report: the URLs as given, in the order of `sub_targets`/`pub_targets`.
    pub sub_urls: Vec<String>,
    pub pub_urls: Vec<String>,
}

/// Topic URI (hubbub) or channel id (nchan) of topic `i`.
pub fn topic_name(target: Target, i: u32) -> String {
    match target {
        Target::Hubbub => format!("https://bench.hubbub/t/{i}"),
        Target::Nchan => format!("bench-{i}"),
    }
}

impl Plan {
    pub async fn resolve(args: &BenchArgs, run_id: u32) -> Result<Self, BenchError> {
        args.validate().map_err(BenchError::Config)?;
        let (sub_urls, pub_urls) = match args.target {
            Target::Hubbub => {
                let publish = if args.publish_hub.is_empty() {
                    args.hub[..1].to_vec()
                } else {
                    args.publish_hub.clone()
                };
                (args.hub.clone(), publish)
            }
            Target::Nchan => (vec![args.sub_url.clone()], vec![args.pub_url.clone()]),
        };
        let topics = args.topics;
        let names: Vec<String> = (0..topics).map(|i| topic_name(args.target, i)).collect();
        let fill = |template: &str, name: &str| template.replace("{topic}", name);
        // Parses one instance of a template (`{topic}` only ever lands in the path or
        // query, so it tells the host) and resolves it, loopback only unless allowed.
        let base = async |url: &str| -> Result<(HttpUrl, SocketAddr), BenchError> {
            let base = HttpUrl::parse(&fill(url, &names[0]))?;
            let addr = base.resolve().await?;
            if !args.allow_remote && !http::is_loopback(&addr) {
                return Err(BenchError::NotLoopback(format!("{url} ({addr})")));
            }
            Ok((base, addr))
        };

        let mut sub_targets = Vec::with_capacity(sub_urls.len());
        for sub_url in &sub_urls {
            let (sub_base, addr) = base(sub_url).await?;
            let sub_host = sub_base.authority();
            let requests = names
                .iter()
                .map(|name| {
                    let path = match args.target {
                        Target::Hubbub => {
                            let sep = if sub_base.path.contains('?') {
                                '&'
                            } else {
                                '?'
                            };
                            format!("{}{sep}{}", sub_base.path, args.selector.parameter(name))
                        }
                        Target::Nchan => HttpUrl::parse(&fill(sub_url, name))?.path,
                    };
                    Ok(http::subscribe_request(&sub_host, &path))
                })
                .collect::<Result<Vec<_>, BenchError>>()?;
            sub_targets.push(SubTarget { addr, requests });
        }
        let mut pub_targets = Vec::with_capacity(pub_urls.len());
        for pub_url in &pub_urls {
            let (pub_base, addr) = base(pub_url).await?;
            let paths = match args.target {
                Target::Hubbub => vec![pub_base.path.clone()],
                Target::Nchan => names
                    .iter()
                    .map(|n| Ok(HttpUrl::parse(&fill(pub_url, n))?.path))
                    .collect::<Result<Vec<_>, BenchError>>()?,
            };
            pub_targets.push(PubTarget {
                addr,
                host: pub_base.authority(),
                paths,
            });
        }
        let pub_form_prefix = match args.target {
            Target::Hubbub => names
                .iter()
                .map(|n| {
                    let topic = form_urlencoded::byte_serialize(n.as_bytes()).collect::<String>();
                    if args.selector.is_pattern() {
                        format!("topic={topic}%2F")
                    } else {
                        format!("topic={topic}&data=")
                    }
                })
                .collect(),
            Target::Nchan => Vec::new(),
        };

        let source_ips = if sub_targets
            .iter()
            .all(|t| t.addr.ip().is_loopback() && t.addr.is_ipv4())
        {
            (0..args.effective_source_ips())
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i).unwrap_or(0))))
                .collect()
        } else {
            Vec::new()
        };
        let token = match (args.target, &args.token) {
            (Target::Nchan, _) => None,
            (Target::Hubbub, Some(t)) => Some(t.0.clone()),
            (Target::Hubbub, None) if args.rate > 0.0 => {
                Some(crate::token::mint_token(&args.jwt_key.0)?)
            }
            (Target::Hubbub, None) => None,
        };
        let secs = Duration::from_secs_f64;
        Ok(Self {
            target: args.target,
            run_id,
            subscribers: args.subscribers,
            topics,
            publishers: if args.rate > 0.0 { args.publishers } else { 0 },
            rate: args.rate,
            payload: args.payload,
            connect_rate: args.connect_rate,
            churn: args.churn,
            processes: args.effective_processes(),
            warmup: secs(args.warmup),
            duration: secs(args.duration),
            drain: secs(args.drain),
            settle: secs(args.settle),
            sample_interval: secs(args.sample_interval),
            connect_timeout: Duration::from_secs(15),
            sub_targets,
            pub_targets,
            pub_form_prefix,
            selector: args.selector,
            source_ips,
            source_ports: SourcePorts::outside(ephemeral_range()),
            token,
            sub_urls,
            pub_urls,
        })
    }

    /// Number of hubs the subscribers are spread over (1 for nchan).
    pub fn hubs(&self) -> u32 {
        self.sub_targets.len().max(1) as u32
    }

    /// Subscriber `slot` (global index) connects to this hub: round-robin.
    pub fn hub_of(&self, slot: u32) -> u32 {
        slot % self.hubs()
    }

    /// Subscriber `slot` listens on this topic: round-robin within its hub, so every
    /// hub gets the same mix of topics whatever the numbers of hubs and topics
    /// (with one hub: `slot % topics`).
    pub fn topic_of(&self, slot: u32) -> u32 {
        (slot / self.hubs()) % self.topics
    }

    /// Publisher `p` sends to this entry of `pub_targets`: round-robin.
    pub fn publish_hub_of(&self, publisher: u32) -> u32 {
        publisher % self.pub_targets.len().max(1) as u32
    }

    /// Source address and port for connection number `generation` (0 first, then
    /// one per reconnect) of subscriber `slot`; `None` lets the kernel choose.
    ///
    /// Ports are assigned here rather than by `bind(ip:0)`: the kernel's search for a
    /// free port at bind time (it cannot know the destination yet) gets slower with
    /// every port in use and, at ~20k sockets per address, stalls the whole client.
    /// Each reconnect moves to another port so it never meets its own TIME_WAIT, and
    /// each run starts at its own offset so it rarely meets the previous run's.
    pub fn source_of(&self, slot: u32, generation: u32) -> Option<SocketAddr> {
        let ips = self.source_ips.len() as u64;
        if ips == 0 {
            return None;
        }
        let (slot, generation) = (u64::from(slot), u64::from(generation));
        let per_ip = u64::from(self.subscribers).div_ceil(ips);
        let port = self
            .source_ports
            .nth(slot / ips + generation * per_ip + u64::from(self.run_id));
        Some(SocketAddr::new(
            self.source_ips[(slot % ips) as usize],
            port,
        ))
    }

    /// How many subscribers listen on each topic, all hubs together.
    pub fn subscribers_per_topic(&self) -> Vec<u64> {
        let mut v = vec![0u64; self.topics as usize];
        for per_hub in self.subscribers_per_hub_topic() {
            for (sum, n) in v.iter_mut().zip(per_hub) {
                *sum += n;
            }
        }
        v
    }

    /// `[hub][topic]`: how many subscribers of each hub listen on each topic.
    pub fn subscribers_per_hub_topic(&self) -> Vec<Vec<u64>> {
        let mut v = vec![vec![0u64; self.topics as usize]; self.hubs() as usize];
        for slot in 0..self.subscribers {
            v[self.hub_of(slot) as usize][self.topic_of(slot) as usize] += 1;
        }
        v
    }

    /// The full request publisher `publisher` sends to publish `payload` on `topic`.
    pub fn publish_request(&self, publisher: u32, topic: u32, payload: &str) -> Vec<u8> {
        let to = &self.pub_targets[self.publish_hub_of(publisher) as usize];
        match self.target {
            Target::Hubbub => {
                // The payload alphabet ([0-9a-z:]) needs no form escaping.
                let mut body = String::with_capacity(
                    self.pub_form_prefix[topic as usize].len() + payload.len(),
                );
                body.push_str(&self.pub_form_prefix[topic as usize]);
                if self.selector.is_pattern() {
                    // `<publisher>-<seq>` from the stamp: a topic never seen before.
                    let mut fields = payload.split(':').skip(1);
                    let (p, seq) = (fields.next(), fields.next());
                    body.push_str(p.unwrap_or("0"));
                    body.push('-');
                    body.push_str(seq.unwrap_or("0"));
                    body.push_str("&data=");
                }
                body.push_str(payload);
                http::post_request(
                    &to.host,
                    &to.paths[0],
                    "application/x-www-form-urlencoded",
                    self.token.as_deref(),
                    body.as_bytes(),
                )
            }
            Target::Nchan => http::post_request(
                &to.host,
                &to.paths[topic as usize],
                "text/plain",
                None,
                payload.as_bytes(),
            ),
        }
    }

    /// Echo of the settings for the report.
    pub fn summary(&self) -> PlanSummary {
        PlanSummary {
            target: self.target,
            sub_url: self.sub_urls.first().cloned().unwrap_or_default(),
            pub_url: self.pub_urls.first().cloned().unwrap_or_default(),
            hubs: self.sub_urls.clone(),
            publish_hubs: self.pub_urls.clone(),
            subscribers: self.subscribers,
            topics: self.topics,
            publishers: self.publishers,
            rate: self.rate,
            payload_bytes: self.payload,
            warmup_s: self.warmup.as_secs_f64(),
            duration_s: self.duration.as_secs_f64(),
            drain_s: self.drain.as_secs_f64(),
            connect_rate: self.connect_rate,
            churn: self.churn,
            processes: self.processes,
            source_ips: self.source_ips.len(),
        }
    }
}

/// The source ports the bench assigns to subscriber connections: every port
/// above 1023 outside the kernel's ephemeral range. That range stays free for
/// the connections the kernel numbers itself (publishers, the hubs' relay
/// links): a port bound explicitly on any address is skipped by the kernel's
/// own choice on every address, so 100k subscribers bound inside it left the
/// publishers without a port (`no_local_port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePorts {
    low: u16,
    high: u16,
}

impl SourcePorts {
    const FIRST: u16 = 1024;
    /// Below this many ports outside the range (a kernel configured to use
    /// nearly all of them), the bench shares the range as before.
    const MIN_SPAN: u32 = 20_000;

    pub fn outside((low, high): (u16, u16)) -> Self {
        let ports = Self { low, high };
        if low < Self::FIRST || high < low || ports.span() < Self::MIN_SPAN {
            // 20000..=65535 (nothing below, all above 19999), sharing the range.
            return Self {
                low: Self::FIRST,
                high: 20_000 - 1,
            };
        }
        ports
    }

    fn span(&self) -> u32 {
        u32::from(self.low - Self::FIRST) + u32::from(u16::MAX - self.high)
    }

    /// The `i`-th port, wrapping around.
    pub fn nth(&self, i: u64) -> u16 {
        let below = u64::from(self.low - Self::FIRST);
        let i = i % u64::from(self.span());
        let port = if i < below {
            u64::from(Self::FIRST) + i
        } else {
            u64::from(self.high) + 1 + (i - below)
        };
        u16::try_from(port).unwrap_or(0)
    }
}

/// The kernel's ephemeral port range (Linux), or its default.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(str::parse::<u16>);
            Some((it.next()?.ok()?, it.next()?.ok()?))
        })
        .unwrap_or((32_768, 60_999))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::testing::parse as args;

    async fn plan(argv: &[&str]) -> Plan {
        Plan::resolve(&args(argv), 7).await.unwrap()
    }

    #[tokio::test]
    async fn source_ports_are_unique_per_generation() {
        let p = plan(&["--subscribers", "45000", "--processes", "3"]).await;
        assert_eq!(p.source_ips.len(), 3);
        let mut seen = std::collections::HashSet::new();
        for slot in 0..45_000 {
            assert!(seen.insert(p.source_of(slot, 0).unwrap()), "slot {slot}");
        }
        for slot in 0..45_000 {
            assert!(
                seen.insert(p.source_of(slot, 1).unwrap()),
                "slot {slot} gen 1"
            );
        }
        assert_eq!(
            p.source_of(1, 0).unwrap().ip(),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))
        );
        assert_eq!(
            plan(&["--subscribers", "100", "--source-ips", "0"])
                .await
                .source_of(5, 0),
            None
        );
    }

    #[test]
    fn source_ports_avoid_the_ephemeral_range() {
        let ports = SourcePorts::outside((32_768, 60_999));
        assert_eq!(ports.nth(0), 1024);
        assert_eq!(ports.nth(32_767 - 1024), 32_767);
        assert_eq!(ports.nth(32_768 - 1024), 61_000);
        assert_eq!(ports.nth(u64::from(ports.span()) - 1), 65_535);
        assert_eq!(ports.nth(u64::from(ports.span())), 1024, "wraps");
        for i in (0..200_000).step_by(7) {
            let p = ports.nth(i);
            assert!((1024..32_768).contains(&p) || p > 60_999, "{i} -> {p}");
        }
        // Nearly the whole range ephemeral: fall back to 20000..=65535.
        let shared = SourcePorts::outside((2_000, 65_000));
        assert_eq!(shared.nth(0), 20_000);
        assert_eq!(shared.nth(45_535), 65_535);
        assert_eq!(shared.nth(45_536), 20_000);
    }

    #[tokio::test]
    async fn builds_requests_per_dialect() {
        let p = plan(&["--topics", "2", "--hub", "http://localhost:9/hub?x=1"]).await;
        let req = String::from_utf8(p.sub_targets[0].requests[1].clone()).unwrap();
        assert!(req.starts_with("GET /hub?x=1&topic=https%3A%2F%2Fbench.hubbub%2Ft%2F1 HTTP/1.1\r\nHost: localhost:9\r\n"), "{req}");
        let publish = String::from_utf8(p.publish_request(0, 1, "b1:0:1:2:")).unwrap();
        assert!(publish.contains("Authorization: Bearer ey"));
        assert!(
            publish.ends_with("\r\n\r\ntopic=https%3A%2F%2Fbench.hubbub%2Ft%2F1&data=b1:0:1:2:"),
            "{publish}"
        );
        let pattern = plan(&["--topics", "2", "--selector", "urlpattern"]).await;
        let req = String::from_utf8(pattern.sub_targets[0].requests[1].clone()).unwrap();
        assert!(
            req.starts_with("GET /.well-known/mercure?match_urlpattern=https%3A%2F%2Fbench.hubbub%2Ft%2F1%2F%3Aid HTTP/1.1"),
            "{req}"
        );
        let publish = String::from_utf8(pattern.publish_request(0, 1, "b1:3:17:2:")).unwrap();
        assert!(
            publish.ends_with(
                "\r\n\r\ntopic=https%3A%2F%2Fbench.hubbub%2Ft%2F1%2F3-17&data=b1:3:17:2:"
            ),
            "a fresh topic per publish: {publish}"
        );
        let template = plan(&["--selector", "template"]).await;
        let req = String::from_utf8(template.sub_targets[0].requests[0].clone()).unwrap();
        assert!(
            req.contains("?topic=https%3A%2F%2Fbench.hubbub%2Ft%2F0%2F%7Bid%7D HTTP"),
            "{req}"
        );
        let n = plan(&["--target", "nchan", "--topics", "3"]).await;
        assert!(
            String::from_utf8(n.sub_targets[0].requests[2].clone())
                .unwrap()
                .starts_with("GET /sub/bench-2 HTTP/1.1")
        );
        let publish = String::from_utf8(n.publish_request(3, 2, "b1:0:1:2:")).unwrap();
        assert!(
            publish.starts_with("POST /pub/bench-2 HTTP/1.1") && !publish.contains("Authorization")
        );
        assert_eq!(n.subscribers_per_topic().iter().sum::<u64>(), 1000);
    }

    #[tokio::test]
    async fn one_hub_keeps_the_single_hub_layout() {
        let p = plan(&["--subscribers", "10", "--topics", "3"]).await;
        assert_eq!((p.hubs(), p.sub_urls.len(), p.pub_targets.len()), (1, 1, 1));
        assert_eq!(p.pub_urls, p.sub_urls);
        for slot in 0..10 {
            assert_eq!((p.hub_of(slot), p.topic_of(slot)), (0, slot % 3));
        }
        assert_eq!(p.subscribers_per_topic(), vec![4, 3, 3]);
        assert_eq!(p.subscribers_per_hub_topic(), vec![vec![4, 3, 3]]);
        assert_eq!(p.summary().hubs, p.sub_urls);
    }

    #[tokio::test]
    async fn subscribers_spread_over_hubs_and_publishers_default_to_the_first() {
        let hubs = [
            "http://127.0.0.11:8080/.well-known/mercure",
            "http://127.0.0.12:8080/.well-known/mercure",
            "http://127.0.0.13:8080/.well-known/mercure",
        ];
        let p = plan(&[
            "--hub",
            hubs[0],
            "--hub",
            hubs[1],
            "--hub",
            hubs[2],
            "--subscribers",
            "14",
            "--topics",
            "2",
            "--publishers",
            "3",
        ])
        .await;
        assert_eq!(p.hubs(), 3);
        // Subscriber i -> hub i % 3; within each hub the topics alternate.
        let layout: Vec<(u32, u32)> = (0..7).map(|s| (p.hub_of(s), p.topic_of(s))).collect();
        assert_eq!(
            layout,
            [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 0)]
        );
        // 14 = 5 + 5 + 4 subscribers; every hub has both topics.
        assert_eq!(
            p.subscribers_per_hub_topic(),
            vec![vec![3, 2], vec![3, 2], vec![2, 2]]
        );
        assert_eq!(p.subscribers_per_topic(), vec![8, 6]);
        for (i, t) in p.sub_targets.iter().enumerate() {
            assert_eq!(t.addr, format!("127.0.0.1{}:8080", i + 1).parse().unwrap());
            let req = String::from_utf8(t.requests[0].clone()).unwrap();
            assert!(
                req.contains(&format!("\r\nHost: 127.0.0.1{}:8080\r\n", i + 1)),
                "{req}"
            );
        }
        // No --publish-hub: everyone publishes to the first hub.
        assert_eq!(p.pub_urls, [hubs[0]]);
        for publisher in 0..3 {
            assert_eq!(p.publish_hub_of(publisher), 0);
            let r = String::from_utf8(p.publish_request(publisher, 0, "b1:0:1:2:")).unwrap();
            assert!(r.contains("Host: 127.0.0.11:8080\r\n"), "{r}");
        }
        // Source addresses are shared by all hubs, so ports stay unique per slot.
        let mut seen = std::collections::HashSet::new();
        assert!((0..14).all(|s| seen.insert(p.source_of(s, 0).unwrap())));
        let summary = p.summary();
        assert_eq!((summary.sub_url.as_str(), summary.hubs.len()), (hubs[0], 3));
        assert_eq!(summary.publish_hubs, [hubs[0]]);
    }

    #[tokio::test]
    async fn publish_hubs_are_round_robin_over_publishers() {
        let p = plan(&[
            "--hub",
            "http://127.0.0.11:8080/hub",
            "--publish-hub",
            "http://127.0.0.12:8080/hub",
            "--publish-hub",
            "http://127.0.0.13:8081/other",
            "--publishers",
            "4",
        ])
        .await;
        assert_eq!(p.pub_targets.len(), 2);
        let to = |publisher| {
            let r = String::from_utf8(p.publish_request(publisher, 0, "b1:0:1:2:")).unwrap();
            r.lines().take(2).collect::<Vec<_>>().join(" ")
        };
        assert_eq!(to(0), "POST /hub HTTP/1.1 Host: 127.0.0.12:8080");
        assert_eq!(to(1), "POST /other HTTP/1.1 Host: 127.0.0.13:8081");
        assert_eq!(to(2), to(0));
        assert_eq!(p.publish_hub_of(3), 1);
        assert_eq!(p.hubs(), 1);
    }

    #[tokio::test]
    async fn hub_flags_are_checked() {
        // nchan has its own URL templates.
        for argv in [
            &[
                "--target",
                "nchan",
                "--hub",
                "http://127.0.0.1:1/a",
                "--hub",
                "http://127.0.0.1:2/b",
            ][..],
            &["--target", "nchan", "--publish-hub", "http://127.0.0.1:1/a"],
        ] {
            assert!(args(argv).validate().is_err(), "{argv:?}");
        }
        // Every URL must be loopback, the publish ones too.
        let remote = args(&["--publish-hub", "http://192.0.2.1:80/x"]);
        assert!(matches!(
            Plan::resolve(&remote, 1).await,
            Err(BenchError::NotLoopback(_))
        ));
        let remote = args(&[
            "--hub",
            "http://127.0.0.1:1/x",
            "--hub",
            "http://192.0.2.1:80/x",
        ]);
        assert!(matches!(
            Plan::resolve(&remote, 1).await,
            Err(BenchError::NotLoopback(_))
        ));
    }
}
