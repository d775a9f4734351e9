//! One proxy: a listener, and for every accepted connection a link to the
//! upstream with two pipes (upstream = client -> server, downstream = server ->
//! client). Each pipe is a reader task (timestamps chunks as they arrive) and a
//! writer task that applies the toxics of its stream as they are *now*: adding
//! or removing a toxic changes live connections too, as in Toxiproxy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};

use crate::rng;
use crate::toxic::{Kind, Stream, Toxic};

pub type Toxics = Arc<Vec<Toxic>>;

pub struct Proxy {
    pub name: String,
    pub listen: String,
    pub upstream: String,
    pub enabled: bool,
    pub toxics: Vec<Toxic>,
    toxics_tx: watch::Sender<Toxics>,
    running: Option<Running>,
    pub links: Arc<AtomicU64>,
}

struct Running {
    accept: JoinHandle<()>,
    /// `true` closes every link of this proxy.
    close: watch::Sender<bool>,
}

impl Proxy {
    pub fn new(name: String, listen: String, upstream: String) -> Self {
        let (toxics_tx, _) = watch::channel(Arc::new(Vec::new()));
        Proxy {
            name,
            listen,
            upstream,
            enabled: false,
            toxics: Vec::new(),
            toxics_tx,
            running: None,
            links: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The listen address as Toxiproxy reports it: the bound one once port 0 was bound.
    pub fn listen_addr(&self) -> String {
        self.listen.clone()
    }

    /// Binds and starts accepting (no-op when running).
    pub fn start(&mut self) -> Result<(), String> {
        if self.running.is_some() {
            self.enabled = true;
            return Ok(());
        }
        let std_listener = std::net::TcpListener::bind(&self.listen)
            .map_err(|e| format!("listen {}: {e}", self.listen))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        // As Toxiproxy: a port-0 listen address becomes the bound one, kept across disable/enable.
        if let (true, Ok(addr)) = (self.listen.ends_with(":0"), std_listener.local_addr()) {
            self.listen = addr.to_string();
        }
        let listener = TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
        let (close_tx, close_rx) = watch::channel(false);
        let upstream = self.upstream.clone();
        let toxics_rx = self.toxics_tx.subscribe();
        let name = self.name.clone();
        let links = self.links.clone();
        let accept = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((client, _)) => {
                        links.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(link(
                            client,
                            upstream.clone(),
                            toxics_rx.clone(),
                            close_rx.clone(),
                            name.clone(),
                        ));
                    }
                    Err(e) => {
                        eprintln!("chaosproxy: {name}: accept: {e}");
                        sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        self.running = Some(Running {
            accept,
            close: close_tx,
        });
        self.enabled = true;
        eprintln!(
            "chaosproxy: {} listening on {} -> {}",
            self.name,
            self.listen_addr(),
            self.upstream
        );
        Ok(())
    }

    /// Stops listening and closes every link.
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.accept.abort();
            let _ = r.close.send(true);
            eprintln!("chaosproxy: {} stopped", self.name);
        }
        self.enabled = false;
    }

    pub fn set_toxics(&mut self, toxics: Vec<Toxic>) {
        self.toxics = toxics;
        self.toxics_tx.send_replace(Arc::new(self.toxics.clone()));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How a link ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Open,
    Close,
    Reset,
}

enum Chunk {
    Data(Vec<u8>, Instant),
    Eof,
    Failed { reset: bool },
}

async fn link(
    client: TcpStream,
    upstream: String,
    toxics: watch::Receiver<Toxics>,
    mut proxy_close: watch::Receiver<bool>,
    name: String,
) {
    let server = tokio::select! {
        r = TcpStream::connect(&upstream) => match r {
            Ok(s) => s,
            Err(e) => {
                eprintln!("chaosproxy: {name}: upstream {upstream}: {e}");
                return;
            }
        },
        _ = proxy_close.changed() => return,
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let (end_tx, end_rx) = watch::channel(End::Open);
    let end_tx = Arc::new(end_tx);
    for (r, w, stream) in [(cr, sw, Stream::Upstream), (sr, cw, Stream::Downstream)] {
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(read_side(r, tx, end_rx.clone()));
        let pipe = Pipe {
            stream,
            toxics: toxics.clone(),
            proxy_close: proxy_close.clone(),
            end_tx: end_tx.clone(),
            end_rx: end_rx.clone(),
            seen: HashMap::new(),
            sent: 0,
            last_due: None,
            bw_free: None,
        };
        tokio::spawn(pipe.run(rx, w));
    }
}

async fn read_side(mut r: OwnedReadHalf, tx: mpsc::Sender<Chunk>, mut end: watch::Receiver<End>) {
    loop {
        let mut buf = vec![0u8; 32 * 1024];
        let chunk = tokio::select! {
            _ = end.changed() => return,
            res = r.read(&mut buf) => match res {
                Ok(0) => Chunk::Eof,
                Ok(n) => {
                    buf.truncate(n);
                    Chunk::Data(buf, Instant::now())
                }
                Err(e) => Chunk::Failed { reset: e.kind() == std::io::ErrorKind::ConnectionReset },
            },
        };
        let last = !matches!(chunk, Chunk::Data(..));
        if tx.send(chunk).await.is_err() || last {
            return;
        }
    }
}

struct Pipe {
    stream: Stream,
    toxics: watch::Receiver<Toxics>,
    proxy_close: watch::Receiver<bool>,
    end_tx: Arc<watch::Sender<End>>,
    end_rx: watch::Receiver<End>,
    /// Toxic name -> (applies to this link, since when): toxicity is drawn once per link.
    seen: HashMap<String, (bool, Instant)>,
    sent: u64,
    last_due: Option<Instant>,
    bw_free: Option<Instant>,
}

impl Pipe {
    /// The toxics of this stream that apply to this link, in the order they were added.
    fn active(&mut self, all: &[Toxic]) -> Vec<Toxic> {
        let now = Instant::now();
        self.seen.retain(|name, _| {
            all.iter()
                .any(|t| &t.name == name && t.stream == self.stream)
        });
        let mut out = Vec::new();
        for t in all.iter().filter(|t| t.stream == self.stream) {
            let (on, _) = *self
                .seen
                .entry(t.name.clone())
                .or_insert_with(|| (rng::unit() < t.toxicity, now));
            if on {
                out.push(t.clone());
            }
        }
        out
    }

    /// The earliest timeout/reset_peer deadline among active toxics.
    fn deadline(&self, active: &[Toxic]) -> Option<(Instant, End)> {
        active
            .iter()
            .filter_map(|t| {
                let since = self.seen.get(&t.name)?.1;
                match t.kind {
                    Kind::Timeout { timeout } if timeout > 0 => {
                        Some((since + Duration::from_millis(timeout), End::Close))
                    }
                    Kind::ResetPeer { timeout } => {
                        Some((since + Duration::from_millis(timeout), End::Reset))
                    }
                    _ => None,
                }
            })
            .min_by_key(|(at, _)| *at)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Chunk>, mut w: OwnedWriteHalf) {
        let end = self.serve(&mut rx, &mut w).await;
        // Whoever ends the link first tells the other pipe (and its reader).
        self.end_tx.send_if_modified(|e| {
            if *e == End::Open {
                *e = end;
                true
            } else {
                false
            }
        });
        if *self.end_rx.borrow() == End::Reset {
            // RST, not FIN: linger 0, and no shutdown of the write half first.
            let _ = socket2::SockRef::from(w.as_ref()).set_linger(Some(Duration::ZERO));
            w.forget();
        } else {
            drop(w);
        }
    }

    async fn serve(&mut self, rx: &mut mpsc::Receiver<Chunk>, w: &mut OwnedWriteHalf) -> End {
        loop {
            let all = self.toxics.borrow_and_update().clone();
            let active = self.active(&all);
            let deadline = self.deadline(&active);
            let stalled = active
                .iter()
                .any(|t| matches!(t.kind, Kind::Timeout { .. }));
            tokio::select! {
                biased;
                _ = self.end_rx.changed() => return *self.end_rx.borrow(),
                _ = self.proxy_close.changed() => return End::Close,
                r = self.toxics.changed() => {
                    if r.is_err() {
                        return End::Close;
                    }
                }
                _ = sleep_until(deadline.map(|d| d.0).unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    return deadline.map(|d| d.1).unwrap_or(End::Close);
                }
                chunk = rx.recv() => match chunk {
                    None | Some(Chunk::Eof) => {
                        let delay: u64 = active.iter().map(|t| match t.kind {
                            Kind::SlowClose { delay } => delay,
                            _ => 0,
                        }).sum();
                        if delay > 0 {
                            tokio::select! {
                                _ = sleep(Duration::from_millis(delay)) => {}
                                _ = self.end_rx.changed() => return *self.end_rx.borrow(),
                            }
                        }
                        return End::Close;
                    }
                    Some(Chunk::Failed { reset }) => return if reset { End::Reset } else { End::Close },
                    Some(Chunk::Data(data, t_read)) => {
                        if stalled {
                            continue; // a timeout toxic drops everything while it is there
                        }
                        let mut end_rx = self.end_rx.clone();
                        let res = tokio::select! {
                            r = self.forward(data, t_read, &active, w) => r,
                            _ = end_rx.changed() => return *end_rx.borrow(),
                        };
                        if let Some(end) = res {
                            return end;
                        }
                    }
                }
            }
        }
    }

    /// Writes one chunk through the active toxics; Some(end) ends the link.
    async fn forward(
        &mut self,
        mut data: Vec<u8>,
        t_read: Instant,
        active: &[Toxic],
        w: &mut OwnedWriteHalf,
    ) -> Option<End> {
        let mut limit_hit = false;
        let mut slicer = None;
        for t in active {
            match t.kind {
                Kind::LimitData { bytes } => {
                    let left = bytes.saturating_sub(self.sent) as usize;
                    if data.len() >= left {
                        data.truncate(left);
                        limit_hit = true;
                    }
                }
                Kind::Latency { latency, jitter } => {
                    let j = if jitter > 0 {
                        rng::below(2 * jitter + 1) as i64 - jitter as i64
                    } else {
                        0
                    };
                    let ms = (latency as i64 + j).max(0) as u64;
                    let mut due = t_read + Duration::from_millis(ms);
                    // A stream keeps its order: never before the chunk ahead of it.
                    if let Some(prev) = self.last_due {
                        due = due.max(prev);
                    }
                    self.last_due = Some(due);
                    sleep_until(due).await;
                }
                Kind::Bandwidth { rate } if rate > 0 => {
                    let now = Instant::now();
                    let start = self.bw_free.map_or(now, |f| f.max(now));
                    let cost = Duration::from_secs_f64(data.len() as f64 / (rate as f64 * 1000.0));
                    self.bw_free = Some(start + cost);
                    sleep_until(start + cost).await;
                }
                Kind::Slicer {
                    average_size,
                    size_variation,
                    delay,
                } => slicer = Some((average_size, size_variation, delay)),
                _ => {}
            }
        }
        let ok = match slicer {
            None => w.write_all(&data).await.is_ok(),
            Some((avg, var, delay)) => {
                let mut rest = &data[..];
                let mut ok = true;
                while !rest.is_empty() {
                    let size = if var > 0 {
                        avg - var + rng::below(2 * var + 1)
                    } else {
                        avg
                    }
                    .max(1) as usize;
                    let (piece, tail) = rest.split_at(size.min(rest.len()));
                    if w.write_all(piece).await.is_err() {
                        ok = false;
                        break;
                    }
                    rest = tail;
                    if delay > 0 && !rest.is_empty() {
                        sleep(Duration::from_micros(delay)).await;
                    }
                }
                ok
            }
        };
        self.sent += data.len() as u64;
        if !ok {
            return Some(End::Close);
        }
        if limit_hit {
            return Some(End::Close);
        }
        None
    }
}
