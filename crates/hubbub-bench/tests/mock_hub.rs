//! End-to-end runs of `run` (in-process workers) against a tiny Mercure-ish hub that
//! speaks chunked SSE, with and without deliberately dropped messages.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clap::Parser;
use hubbub_bench::{BenchArgs, BenchError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
#[command(args_override_self = true)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

#[derive(Default)]
struct Topic {
    /// Every (id, frame) published, for `Last-Event-ID` replay.
    history: Vec<(u64, Vec<u8>)>,
    subscribers: Vec<mpsc::UnboundedSender<Vec<u8>>>,
}

#[derive(Default)]
struct Hub {
    topics: Mutex<HashMap<String, Topic>>,
    next_id: AtomicU64,
    /// Drop every n-th publish for everyone (0 = never).
    drop_every: u64,
    /// Ignore `Last-Event-ID`.
    no_resume: bool,
}

async fn serve(hub: Arc<Hub>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(connection(hub.clone(), stream));
        }
    });
    port
}

async fn connection(hub: Arc<Hub>, mut stream: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let (method, path, body, last_id) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                let len: usize = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |h| {
                        std::str::from_utf8(h.value).unwrap().parse().unwrap()
                    });
                let last_id: Option<u64> = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("last-event-id"))
                    .map(|h| {
                        std::str::from_utf8(h.value)
                            .unwrap()
                            .trim_start_matches("urn:uuid:")
                            .parse()
                            .unwrap()
                    });
                if buf.len() >= n + len {
                    let out = (
                        req.method.unwrap().to_owned(),
                        req.path.unwrap().to_owned(),
                        buf[n..n + len].to_vec(),
                        last_id,
                    );
                    buf.drain(..n + len);
                    break out;
                }
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        if method == "GET" {
            let query = path.split_once('?').map_or("", |(_, q)| q);
            let topic = form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "topic")
                .unwrap()
                .1
                .into_owned();
            let (tx, mut rx) = mpsc::unbounded_channel();
            {
                let mut topics = hub.topics.lock().unwrap();
                let t = topics.entry(topic).or_default();
                if let Some(after) = last_id.filter(|_| !hub.no_resume) {
                    for (_, frame) in t.history.iter().filter(|(id, _)| *id > after) {
                        tx.send(frame.clone()).unwrap();
                    }
                }
                t.subscribers.push(tx);
            }
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n:\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            while let Some(frame) = rx.recv().await {
                let mut chunk = format!("{:x}\r\n", frame.len()).into_bytes();
                chunk.extend_from_slice(&frame);
                chunk.extend_from_slice(b"\r\n");
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            return;
        }
        let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
        let id = hub.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        if hub.drop_every == 0 || !id.is_multiple_of(hub.drop_every) {
            let frame = format!("id: urn:uuid:{id}\ndata: {}\n\n", form["data"]).into_bytes();
            let mut topics = hub.topics.lock().unwrap();
            let t = topics.entry(form["topic"].clone()).or_default();
            t.history.push((id, frame.clone()));
            t.subscribers.retain(|s| s.send(frame.clone()).is_ok());
        }
        let body = format!("urn:uuid:{id}");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn args(port: u16, extra: &[&str]) -> BenchArgs {
    let hub = format!("http://127.0.0.1:{port}/.well-known/mercure");
    let mut argv = vec![
        "bench",
        "--hub",
        &hub,
        "--processes",
        "0",
        "--quiet",
        "--fail-on-loss",
    ];
    argv.extend_from_slice(&[
        "--warmup",
        "0.5",
        "--duration",
        "1",
        "--drain",
        "0.5",
        "--settle",
        "0.2",
    ]);
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).unwrap().args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_run_counts_every_delivery() {
    let port = serve(Arc::new(Hub::default())).await;
    let extra = [
        "--subscribers",
        "60",
        "--topics",
        "3",
        "--publishers",
        "2",
        "--rate",
        "60",
        "--payload",
        "100",
    ];
    let report = hubbub_bench::run(args(port, &extra)).await.unwrap();
    assert_eq!(report.connect.connected, 60);
    assert_eq!(report.delivery.counts.lost, 0);
    assert_eq!(report.delivery.counts.duplicated, 0);
    assert!(report.publish.ok_total >= 60, "{}", report.publish.ok_total);
    // Every accepted publish reaches the 20 subscribers of its topic.
    assert_eq!(report.delivery.counts.total, report.publish.ok_total * 20);
    assert!(report.delivery.counts.in_window > 0);
    assert!(report.latency.count == report.delivery.counts.in_window);
    assert!(report.latency.p99_us > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_spread_over_hubs_are_reported_per_hub() {
    // Two listeners on one hub state: a two-node "cluster" that delivers every
    // publish to the subscribers of both.
    let hub = Arc::new(Hub::default());
    let (a, b) = (serve(hub.clone()).await, serve(hub).await);
    let url = |port: u16| format!("http://127.0.0.1:{port}/.well-known/mercure");
    let (url_a, url_b) = (url(a), url(b));
    let extra = [
        "--hub",
        &url_b,
        "--publish-hub",
        &url_b,
        "--subscribers",
        "30",
        "--topics",
        "2",
        "--rate",
        "40",
        "--publishers",
        "2",
    ];
    // `args` puts its own `--hub` (a) first: subscribers 0, 2, 4.. go to a.
    let mut args = args(a, &extra);
    assert_eq!(args.hub, [url_a.clone(), url_b.clone()]);
    args.quiet = true;
    let report = hubbub_bench::run(args).await.unwrap();
    assert_eq!(report.plan.hubs, [url_a.clone(), url_b.clone()]);
    assert_eq!(report.plan.publish_hubs, std::slice::from_ref(&url_b));
    assert_eq!(report.per_hub.len(), 2);
    let ok = report.publish.ok_total;
    for (h, want_url) in report.per_hub.iter().zip([&url_a, &url_b]) {
        assert_eq!(&h.url, want_url);
        assert_eq!((h.subscribers, h.connected_at_end), (15, 15));
        // Topics alternate within each hub and publishes alternate over topics.
        assert!(
            h.counts.total.abs_diff(ok * 15 / 2) <= 15,
            "{} vs {ok}",
            h.counts.total
        );
        assert_eq!(
            (h.counts.lost, h.counts.duplicated, h.counts.reordered),
            (0, 0, 0)
        );
        assert_eq!(h.latency.count, h.counts.in_window);
        assert!(h.counts.in_window > 0 && h.counts.expected_per_second > 0.0);
    }
    assert_eq!(
        (report.per_hub[0].publish, report.per_hub[1].publish),
        (false, true)
    );
    let sum = |f: fn(&hubbub_bench::HubStats) -> u64| report.per_hub.iter().map(f).sum::<u64>();
    assert_eq!(sum(|h| h.counts.total), report.delivery.counts.total);
    assert_eq!(
        sum(|h| h.counts.in_window),
        report.delivery.counts.in_window
    );
    // 8 + 8 subscribers on topic 0, 7 + 7 on topic 1.
    assert!(report.delivery.counts.total.abs_diff(ok * 15) <= 1);
    let text = report.to_string();
    assert!(
        text.contains(&format!("hub 1        {url_b} (publish): 15 subscribers")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_messages_fail_the_run() {
    let port = serve(Arc::new(Hub {
        drop_every: 7,
        ..Hub::default()
    }))
    .await;
    let extra = ["--subscribers", "10", "--rate", "40"];
    let err = hubbub_bench::run(args(port, &extra)).await.unwrap_err();
    let BenchError::Failed { report, reasons } = err else {
        panic!("{err}")
    };
    // Every 7th publish reached nobody: each of the 10 subscribers misses it.
    let published = report.publish.ok_total;
    assert_eq!(
        report.delivery.counts.lost,
        published / 7 * 10,
        "{reasons:?}"
    );
    assert_eq!(
        report.delivery.counts.total,
        (published - published / 7) * 10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_run_and_resumed_churn_lose_nothing() {
    let port = serve(Arc::new(Hub::default())).await;
    let report = hubbub_bench::run(args(port, &["--subscribers", "30", "--rate", "0"]))
        .await
        .unwrap();
    assert_eq!(
        (report.connect.connected, report.delivery.counts.total),
        (30, 0)
    );
    // Churned streams come back with Last-Event-ID and the hub replays the gap.
    let extra = ["--subscribers", "30", "--rate", "50", "--churn", "20"];
    let report = hubbub_bench::run(args(port, &extra)).await.unwrap();
    assert!(report.delivery.churned > 10, "{}", report.delivery.churned);
    assert_eq!(report.delivery.counts.lost, 0);
    assert_eq!(report.connect.connected_at_end, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_without_resume_shows_the_gaps() {
    let port = serve(Arc::new(Hub {
        no_resume: true,
        ..Hub::default()
    }))
    .await;
    // A gap needs a publish while a stream is away: a high rate and many
    // reconnects make that certain even on a loaded machine (at 200/s and 20
    // reconnects, a busy CI run once saw none).
    let extra = ["--subscribers", "30", "--rate", "1000", "--churn", "100"];
    let err = hubbub_bench::run(args(port, &extra)).await.unwrap_err();
    let BenchError::Failed { report, .. } = err else {
        panic!("{err}")
    };
    assert!(report.delivery.counts.lost > 0);
    // Nothing was dropped, only never delivered to a reconnecting subscriber.
    assert_eq!(
        report.delivery.counts.total + report.delivery.counts.lost,
        report.publish.ok_total * 30
    );
}

#[tokio::test]
async fn refuses_remote_targets_and_reports_refused_connections() {
    let a = Cli::try_parse_from(["bench", "--hub", "http://192.0.2.1:80/x"])
        .unwrap()
        .args;
    assert!(matches!(
        hubbub_bench::run(a).await,
        Err(BenchError::NotLoopback(_))
    ));
    // Nothing listens on port 1.
    let a = args(1, &["--subscribers", "5", "--rate", "0", "--duration", "0"]);
    let Err(BenchError::Failed { report, .. }) = hubbub_bench::run(a).await else {
        panic!()
    };
    assert_eq!(report.connect.never_connected, 5);
    assert_eq!(report.connect.errors.get("refused"), Some(&5));
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(path: &std::path::Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..16], b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR");
    assert!(bytes.len() > 4_000, "{} bytes", bytes.len());
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plots_after_a_run_and_from_its_saved_report() {
    let port = serve(Arc::new(Hub::default())).await;
    let dir = std::env::temp_dir().join(format!("hubbub-bench-e2e-plots-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (json, plots, again) = (dir.join("r.json"), dir.join("run"), dir.join("again"));
    // The test process stands in for the server (sampled by pid, twice over).
    let pid = std::process::id().to_string();
    let pids = format!("{pid},{pid}");
    let extra = [
        "--subscribers",
        "20",
        "--rate",
        "40",
        "--server-pid",
        &pids,
        "--sample-interval",
        "0.1",
        "--json-out",
        json.to_str().unwrap(),
        "--plot-dir",
        plots.to_str().unwrap(),
    ];
    std::fs::create_dir_all(&dir).unwrap();
    let report = hubbub_bench::run(args(port, &extra)).await.unwrap();
    let buckets = report.latency_histogram.as_deref().unwrap();
    let in_buckets: u64 = buckets.iter().map(|b| b.count).sum();
    assert_eq!(in_buckets, report.latency.count);
    assert!(buckets.windows(2).all(|w| w[0].le_us < w[1].le_us));
    let server = report.server.as_ref().unwrap();
    assert!(server.samples.len() > 10, "{}", server.samples.len());
    assert!(server.samples.iter().all(|s| s.per_pid.len() == 2));
    assert_eq!(png_size(&plots.join("latency.png")), (1000, 600));
    assert_eq!(png_size(&plots.join("rss.png")), (1200, 800));

    // The same plots from the saved report, without a load.
    let from = Cli::try_parse_from([
        "bench",
        "--plot-from",
        json.to_str().unwrap(),
        "--plot-dir",
        again.to_str().unwrap(),
    ])
    .unwrap()
    .args;
    let saved = hubbub_bench::run(from).await.unwrap();
    assert_eq!(saved.latency.count, report.latency.count);
    assert_eq!(png_size(&again.join("latency.png")), (1000, 600));
    assert_eq!(png_size(&again.join("rss.png")), (1200, 800));
    std::fs::remove_dir_all(&dir).unwrap();
}
