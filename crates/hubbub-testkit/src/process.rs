//! The real `hubbub` binary as child processes, for what only a process shows:
//! command-line parsing, log lines, signals, exit codes, a node killed outright.
//! The binary's path comes from the calling test
//! (`env!("CARGO_BIN_EXE_hubbub")`, which only that crate's tests can name).

use std::net::SocketAddr;
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

use crate::http::get;
use crate::{StatusCode, WAIT, lock, metric_value};

/// `bin ARGS` with a clean environment (no `HUBBUB_*` or backtrace settings
/// from the caller), `info` logs, no stdin, killed when dropped.
pub fn command(bin: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("RUST_LOG", "info")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, _) in std::env::vars() {
        if name.starts_with("HUBBUB_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Runs `bin ARGS` (see [`command`]) to completion, within [`WAIT`].
pub async fn run(bin: &str, args: &[&str]) -> Output {
    timeout(WAIT, command(bin, args).output())
        .await
        .unwrap_or_else(|_| panic!("`hubbub {}` finishes in time", args.join(" ")))
        .expect("the hubbub binary runs")
}

/// A running `hubbub serve`; its stderr is collected line by line.
#[derive(Debug)]
pub struct HubProcess {
    /// Where it serves HTTP, as its `listening` log line says.
    pub addr: SocketAddr,
    /// Where a cluster member listens for gossip, as its `cluster node
    /// started` line says (the bound address: with port 0, the kernel's pick).
    pub gossip: Option<SocketAddr>,
    /// Where a cluster member listens for relay links (same line).
    pub relay: Option<SocketAddr>,
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl HubProcess {
    /// Starts `bin serve ARGS` (see [`command`]) and waits (at most [`WAIT`])
    /// for its `listening` line; panics, with its stderr, if it exits first.
    pub async fn serve(bin: &str, args: &[&str]) -> Self {
        Self::serve_with_env(bin, args, &[]).await
    }

    /// [`serve`](Self::serve) with these environment variables set.
    pub async fn serve_with_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::try_serve_with_env(bin, args, env)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`serve_with_env`](Self::serve_with_env), but a process that exits
    /// before it listens is an `Err` (with its exit status and stderr), for
    /// callers that retry (e.g. a port still held after a restart).
    pub async fn try_serve_with_env(
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        let mut child = command(bin, &all)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the hubbub binary starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        tokio::spawn({
            let stderr = stderr.clone();
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    lock(&stderr).push(line);
                }
            }
        });
        let addr = wait_listening(&mut child, &stderr).await?;
        // The cluster starts (and logs) before the server listens.
        let cluster = |field| {
            lock(&stderr)
                .iter()
                .find_map(|l| logged_addr(l, "cluster node started", field))
        };
        Ok(Self {
            addr,
            gossip: cluster("gossip"),
            relay: cluster("relay"),
            child,
            stderr,
        })
    }

    /// `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Mercure endpoint, `http://ADDR/.well-known/mercure`.
    pub fn url(&self) -> String {
        format!("{}{}", self.base_url(), hubbub_server::HUB_PATH)
    }

    /// Everything it logged so far.
    pub fn stderr(&self) -> String {
        lock(&self.stderr).join("\n")
    }

    /// The value of one `/metrics` series (see [`metric_value`]).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let r = get(&format!("{}/metrics", self.base_url())).await;
        assert_eq!(r.status, StatusCode::OK, "/metrics");
        metric_value(&r.body, series)
    }

    /// Sends a signal by name (`HUP`, `TERM`, ...) with `kill`.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// SIGKILL: no drain, no goodbye. Returns what it logged.
    pub async fn kill(mut self) -> String {
        self.child.kill().await.expect("SIGKILL is delivered");
        self.stderr()
    }

    /// Waits (at most [`WAIT`]) for it to exit on its own.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("hubbub did not exit in time: {}", self.stderr()))
            .expect("waiting on the child works")
    }
}

async fn wait_listening(
    child: &mut Child,
    stderr: &Mutex<Vec<String>>,
) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(addr) = lock(stderr)
            .iter()
            .find_map(|l| logged_addr(l, "listening", "addr"))
        {
            return Ok(addr);
        }
        let logs = || lock(stderr).join("\n");
        if let Ok(Some(status)) = child.try_wait() {
            // Let the reader catch the last lines (why it exited).
            sleep(Duration::from_millis(50)).await;
            return Err(format!("hubbub serve exited with {status}: {}", logs()));
        }
        assert!(
            Instant::now() < deadline,
            "no `listening` line in time: {}",
            logs()
        );
        sleep(Duration::from_millis(20)).await;
    }
}

/// The address in `field=ADDR` of a log line with `message`, with or
/// without ANSI colours: `... listening addr=127.0.0.1:PORT ...`.
fn logged_addr(line: &str, message: &str, field: &str) -> Option<SocketAddr> {
    let plain = strip_ansi(line);
    if !plain.contains(message) {
        return None;
    }
    let key = format!(" {field}=");
    let rest = &plain[plain.find(&key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines() {
        let listening = |l| logged_addr(l, "listening", "addr");
        let colored = "\u{1b}[2m2024\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m listening \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:4242 max_connections=10";
        assert_eq!(
            listening(colored),
            Some("127.0.0.1:4242".parse().expect("an address"))
        );
        assert_eq!(
            listening("INFO listening addr=[::1]:80"),
            Some("[::1]:80".parse().expect("an address"))
        );
        assert_eq!(listening("INFO stopped addr=127.0.0.1:1"), None);
    }

    #[test]
    fn cluster_lines() {
        let line = "INFO hubbub_cluster::cluster: cluster node started node=n1/7 gossip=127.0.0.1:5 relay=127.0.0.1:6 gossip_advertise=10.0.0.1:5 relay_advertise=h:6";
        let field = |f| logged_addr(line, "cluster node started", f);
        assert_eq!(
            field("gossip"),
            Some("127.0.0.1:5".parse().expect("an address"))
        );
        assert_eq!(
            field("relay"),
            Some("127.0.0.1:6".parse().expect("an address"))
        );
        assert_eq!(
            field("gossip_advertise"),
            Some("10.0.0.1:5".parse().expect("an address"))
        );
        assert_eq!(logged_addr(line, "listening", "gossip"), None);
    }
}
