//! chaosproxy: a TCP proxy with Toxiproxy's HTTP API and toxics.
//!
//!   chaosproxy [-host 0.0.0.0] [-port 8474] [-config proxies.json]
//!
//! Flags as `toxiproxy-server`'s (one or two dashes). Toxics: latency (+jitter),
//! bandwidth, slow_close, timeout, reset_peer, slicer, limit_data, noop; each
//! with a stream (upstream/downstream) and a toxicity drawn once per connection.
//! Adding or removing a toxic applies to live connections at once; disabling a
//! proxy closes its connections and stops listening. See chaos/README.md.

mod api;
mod http;
mod proxy;
mod rng;
mod toxic;

use std::sync::Arc;

fn usage() -> ! {
    eprintln!("usage: chaosproxy [-host ADDR] [-port PORT] [-config FILE]");
    std::process::exit(2);
}

fn main() {
    let mut host = "127.0.0.1".to_owned();
    let mut port = 8474u16;
    let mut config = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let flag = a.trim_start_matches('-');
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (flag.to_owned(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| usage())
        };
        match flag.as_str() {
            "host" => host = value(),
            "port" => port = value().parse().unwrap_or_else(|_| usage()),
            "config" => config = Some(value()),
            "version" => {
                println!("{}", api::VERSION);
                return;
            }
            "h" | "help" => {
                eprintln!(
                    "{}",
                    include_str!("main.rs")
                        .lines()
                        .take(9)
                        .map(|l| l.trim_start_matches("//!").trim_start())
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                return;
            }
            _ => usage(),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let state = Arc::new(api::State::default());
        if let Some(path) = config {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                eprintln!("chaosproxy: cannot read {path}: {e}");
                std::process::exit(1);
            });
            match state.load(&text) {
                Ok(n) => eprintln!("chaosproxy: {n} proxies from {path}"),
                Err(e) => {
                    eprintln!("chaosproxy: {path}: {e}");
                    std::process::exit(1);
                }
            }
        }
        let listener = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .unwrap_or_else(|e| {
                eprintln!("chaosproxy: API listen {host}:{port}: {e}");
                std::process::exit(1);
            });
        eprintln!(
            "chaosproxy {}: API on {}",
            api::VERSION,
            listener.local_addr().unwrap()
        );
        let handler = {
            let state = state.clone();
            Arc::new(move |req| state.handle(req))
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal");
        tokio::select! {
            _ = http::serve(listener, handler) => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("chaosproxy: stopping");
    });
    // Links are detached tasks: do not wait for them.
    rt.shutdown_background();
}
