//! The run plan resolved from `BenchArgs`: addresses, per-topic request bytes, the
//! token, and which subscriber goes to which topic and source address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use crate::args::{BenchArgs, Target};
use crate::error::BenchError;
use crate::http::{self, HttpUrl};

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
    pub sub_addr: SocketAddr,
    /// Ready-to-send subscribe request per topic.
    pub sub_requests: Vec<Vec<u8>>,
    pub pub_addr: SocketAddr,
    pub pub_host: String,
    /// Publish path per topic (nchan) or one shared path (hubbub).
    pub pub_paths: Vec<String>,
    /// Form body prefix `topic=...&data=` per topic (hubbub only).
    pub pub_form_prefix: Vec<String>,
    /// Empty: let the kernel pick the source address.
    pub source_ips: Vec<IpAddr>,
    pub token: Option<String>,
    /// For the report: the URLs as given.
    pub sub_url: String,
    pub pub_url: String,
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
        let (sub_url, pub_url) = match args.target {
            Target::Hubbub => (args.hub.clone(), args.hub.clone()),
            Target::Nchan => (args.sub_url.clone(), args.pub_url.clone()),
        };
        let topics = args.topics;
        let names: Vec<String> = (0..topics).map(|i| topic_name(args.target, i)).collect();
        let fill = |template: &str, name: &str| template.replace("{topic}", name);

        // Parse one instance of each template to learn the host; `{topic}` only ever
        // lands in the path or query.
        let sub_base = HttpUrl::parse(&fill(&sub_url, &names[0]))?;
        let pub_base = HttpUrl::parse(&fill(&pub_url, &names[0]))?;
        let sub_addr = sub_base.resolve().await?;
        let pub_addr = pub_base.resolve().await?;
        for (url, addr) in [(&sub_url, sub_addr), (&pub_url, pub_addr)] {
            if !args.allow_remote && !http::is_loopback(&addr) {
                return Err(BenchError::NotLoopback(format!("{url} ({addr})")));
            }
        }
        let sub_host = sub_base.authority();
        let sub_requests = names
            .iter()
            .map(|name| {
                let path = match args.target {
                    Target::Hubbub => {
                        let sep = if sub_base.path.contains('?') {
                            '&'
                        } else {
                            '?'
                        };
                        let topic: String =
                            form_urlencoded::byte_serialize(name.as_bytes()).collect();
                        format!("{}{sep}topic={topic}", sub_base.path)
                    }
                    Target::Nchan => HttpUrl::parse(&fill(&sub_url, name))?.path,
                };
                Ok(http::subscribe_request(&sub_host, &path))
            })
            .collect::<Result<Vec<_>, BenchError>>()?;
        let (pub_paths, pub_form_prefix) = match args.target {
            Target::Hubbub => {
                let prefixes = names
                    .iter()
                    .map(|n| {
                        format!(
                            "topic={}&data=",
                            form_urlencoded::byte_serialize(n.as_bytes()).collect::<String>()
                        )
                    })
                    .collect();
                (vec![pub_base.path.clone()], prefixes)
            }
            Target::Nchan => {
                let paths = names
                    .iter()
                    .map(|n| Ok(HttpUrl::parse(&fill(&pub_url, n))?.path))
                    .collect::<Result<Vec<_>, BenchError>>()?;
                (paths, Vec::new())
            }
        };

        let source_ips = if sub_addr.ip().is_loopback() && sub_addr.is_ipv4() {
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
                Some(crate::publisher::mint_token(&args.jwt_key.0)?)
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
            sub_addr,
            sub_requests,
            pub_addr,
            pub_host: pub_base.authority(),
            pub_paths,
            pub_form_prefix,
            source_ips,
            token,
            sub_url,
            pub_url,
        })
    }

    /// Subscriber `slot` (global index) listens on this topic.
    pub fn topic_of(&self, slot: u32) -> u32 {
        slot % self.topics
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
        const PORT_BASE: u64 = 20_000;
        const PORT_SPAN: u64 = 65_536 - PORT_BASE;
        let ips = self.source_ips.len() as u64;
        if ips == 0 {
            return None;
        }
        let (slot, generation) = (u64::from(slot), u64::from(generation));
        let per_ip = u64::from(self.subscribers).div_ceil(ips);
        let port =
            PORT_BASE + (slot / ips + generation * per_ip + u64::from(self.run_id)) % PORT_SPAN;
        Some(SocketAddr::new(
            self.source_ips[(slot % ips) as usize],
            u16::try_from(port).unwrap_or(0),
        ))
    }

    /// How many subscribers listen on each topic.
    pub fn subscribers_per_topic(&self) -> Vec<u64> {
        let mut v = vec![0u64; self.topics as usize];
        for slot in 0..self.subscribers {
            v[self.topic_of(slot) as usize] += 1;
        }
        v
    }

    /// The full request publishing `payload` on `topic`.
    pub fn publish_request(&self, topic: u32, payload: &str) -> Vec<u8> {
        match self.target {
            Target::Hubbub => {
                // The payload alphabet ([0-9a-z:]) needs no form escaping.
                let mut body = String::with_capacity(
                    self.pub_form_prefix[topic as usize].len() + payload.len(),
                );
                body.push_str(&self.pub_form_prefix[topic as usize]);
                body.push_str(payload);
                http::post_request(
                    &self.pub_host,
                    &self.pub_paths[0],
                    "application/x-www-form-urlencoded",
                    self.token.as_deref(),
                    body.as_bytes(),
                )
            }
            Target::Nchan => http::post_request(
                &self.pub_host,
                &self.pub_paths[topic as usize],
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
            sub_url: self.sub_url.clone(),
            pub_url: self.pub_url.clone(),
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

/// The settings a report was made with.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PlanSummary {
    pub target: Target,
    pub sub_url: String,
    pub pub_url: String,
    pub subscribers: u32,
    pub topics: u32,
    pub publishers: u32,
    pub rate: f64,
    pub payload_bytes: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub drain_s: f64,
    pub connect_rate: f64,
    pub churn: f64,
    pub processes: u32,
    pub source_ips: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    async fn plan(argv: &[&str]) -> Plan {
        let args = Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))
            .unwrap()
            .args;
        Plan::resolve(&args, 7).await.unwrap()
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

    #[tokio::test]
    async fn builds_requests_per_dialect() {
        let p = plan(&["--topics", "2", "--hub", "http://localhost:9/hub?x=1"]).await;
        let req = String::from_utf8(p.sub_requests[1].clone()).unwrap();
        assert!(req.starts_with("GET /hub?x=1&topic=https%3A%2F%2Fbench.hubbub%2Ft%2F1 HTTP/1.1\r\nHost: localhost:9\r\n"), "{req}");
        let publish = String::from_utf8(p.publish_request(1, "b1:0:1:2:")).unwrap();
        assert!(publish.contains("Authorization: Bearer ey"));
        assert!(
            publish.ends_with("\r\n\r\ntopic=https%3A%2F%2Fbench.hubbub%2Ft%2F1&data=b1:0:1:2:"),
            "{publish}"
        );
        let n = plan(&["--target", "nchan", "--topics", "3"]).await;
        assert!(
            String::from_utf8(n.sub_requests[2].clone())
                .unwrap()
                .starts_with("GET /sub/bench-2 HTTP/1.1")
        );
        let publish = String::from_utf8(n.publish_request(2, "b1:0:1:2:")).unwrap();
        assert!(
            publish.starts_with("POST /pub/bench-2 HTTP/1.1") && !publish.contains("Authorization")
        );
        assert_eq!(n.subscribers_per_topic().iter().sum::<u64>(), 1000);
    }
}
