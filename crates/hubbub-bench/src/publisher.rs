//! Publishers: paced tasks, each on one kept-alive raw HTTP/1.1 connection, stamping
//! every payload with (publisher, per-topic sequence, send time).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::body::BodyDecoder;
use crate::hist::LatencyHist;
use crate::http::{self, io_error_key};
use crate::payload::{self, Stamp};
use crate::plan::Plan;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Further behind schedule than this, a publisher skips ahead instead of bursting.
const MAX_LAG: Duration = Duration::from_secs(1);

/// Counters shared by all publishers.
#[derive(Debug)]
pub struct PubStats {
    pub attempts: AtomicU64,
    pub ok: AtomicU64,
    /// Sends skipped because the publisher fell more than a second behind schedule.
    pub missed: AtomicU64,
    pub errors: Mutex<BTreeMap<String, u64>>,
    /// Request round trip of accepted publishes, µs.
    pub rtt: Mutex<LatencyHist>,
    /// `last_seq[p][t]`: last sequence publisher `p` got accepted on topic `t`.
    last_seq: Vec<Vec<AtomicU64>>,
}

impl PubStats {
    pub fn new(publishers: u32, topics: u32) -> Self {
        Self {
            attempts: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            errors: Mutex::default(),
            rtt: Mutex::default(),
            last_seq: (0..publishers)
                .map(|_| (0..topics).map(|_| AtomicU64::new(0)).collect())
                .collect(),
        }
    }

    pub fn published(&self) -> Vec<Vec<u64>> {
        self.last_seq
            .iter()
            .map(|t| t.iter().map(|s| s.load(Relaxed)).collect())
            .collect()
    }

    /// Accepted publishes per topic, all publishers together.
    pub fn per_topic(&self) -> Vec<u64> {
        let topics = self.last_seq.first().map_or(0, Vec::len);
        (0..topics)
            .map(|t| self.last_seq.iter().map(|p| p[t].load(Relaxed)).sum())
            .collect()
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn error(&self, key: String) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }
}

/// Starts `plan.publishers` tasks sharing `plan.rate`; they stop on `stop`.
pub fn spawn(
    plan: &Arc<Plan>,
    stats: &Arc<PubStats>,
    stop: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    (0..plan.publishers)
        .map(|p| tokio::spawn(run_one(p, plan.clone(), stats.clone(), stop.clone())))
        .collect()
}

async fn run_one(p: u32, plan: Arc<Plan>, stats: Arc<PubStats>, stop: CancellationToken) {
    let m = u64::from(plan.publishers);
    let period = Duration::from_secs_f64(m as f64 / plan.rate);
    // Staggered so M publishers interleave instead of firing together.
    let start = Instant::now() + period.mul_f64(f64::from(p) / m as f64);
    let mut seqs = vec![0u64; plan.topics as usize];
    let mut conn: Option<PubConn> = None;
    let to = plan.pub_targets[plan.publish_hub_of(p) as usize].addr;
    let mut n: u64 = 0;
    loop {
        let due = start + period.mul_f64(n as f64);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(due) => {}
        }
        // Publish number n of this publisher is global number n*M+p: topics round-robin.
        let topic = ((n * m + u64::from(p)) % u64::from(plan.topics)) as u32;
        let seq = seqs[topic as usize] + 1;
        let stamp = Stamp {
            run: plan.run_id,
            publisher: p,
            seq,
            sent_nanos: payload::now_nanos(),
        };
        let request = plan.publish_request(p, topic, &payload::encode(&stamp, plan.payload));
        stats.attempts.fetch_add(1, Relaxed);
        let sent = Instant::now();
        // Not cancelled by `stop`: an in-flight publish must settle so the final
        // sequence table matches what the server accepted.
        match http::with_timeout(REQUEST_TIMEOUT, send(&mut conn, to, &request)).await {
            Ok(status) if (200..300).contains(&status) => {
                seqs[topic as usize] = seq;
                stats.last_seq[p as usize][topic as usize].store(seq, Relaxed);
                stats.ok.fetch_add(1, Relaxed);
                let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                stats
                    .rtt
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(us);
            }
            // The sequence number is reused, so a rejected publish leaves no hole.
            Ok(status) => stats.error(format!("http_{status}")),
            Err(key) => {
                // Unknown whether the server took it; if it did, subscribers will see
                // this sequence twice (counted as a duplicate).
                stats.error(key);
                conn = None;
            }
        }
        n += 1;
        let behind = Instant::now().saturating_duration_since(start + period.mul_f64(n as f64));
        if behind > MAX_LAG {
            let skip = (behind.as_secs_f64() / period.as_secs_f64()) as u64;
            n += skip;
            stats.missed.fetch_add(skip, Relaxed);
        }
    }
}

#[derive(Debug)]
struct PubConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Sends one request on the kept-alive connection (opening it if needed) and reads
/// the whole response; returns the status.
async fn send(conn: &mut Option<PubConn>, to: SocketAddr, request: &[u8]) -> Result<u16, String> {
    if conn.is_none() {
        let stream = http::connect(to, None)
            .await
            .map_err(|e| io_error_key(&e))?;
        *conn = Some(PubConn {
            stream,
            buf: Vec::with_capacity(4096),
        });
    }
    let Some(c) = conn.as_mut() else {
        return Err("no_connection".into());
    };
    c.buf.clear();
    let head = http::send_and_read_head(&mut c.stream, request, &mut c.buf).await?;
    c.buf.drain(..head.len);
    let mut body = BodyDecoder::new(head.framing);
    loop {
        let used = body
            .feed(&c.buf, &mut |_| {})
            .map_err(|e| format!("bad_body: {e}"))?;
        c.buf.drain(..used);
        if body.is_done() {
            break;
        }
        let mut chunk = [0u8; 4096];
        let n = c
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| io_error_key(&e))?;
        if n == 0 {
            if head.framing == crate::body::Framing::UntilClose {
                break;
            }
            return Err("eof".into());
        }
        c.buf.extend_from_slice(&chunk[..n]);
    }
    if !head.keep_alive {
        *conn = None;
    }
    Ok(head.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_topic_sums_publishers() {
        let s = PubStats::new(2, 3);
        s.last_seq[0][1].store(4, Relaxed);
        s.last_seq[1][1].store(5, Relaxed);
        s.last_seq[1][2].store(1, Relaxed);
        assert_eq!(s.per_topic(), vec![0, 9, 1]);
        assert_eq!(s.published(), vec![vec![0, 4, 0], vec![0, 5, 1]]);
    }
}
