//! One subscriber slot: opens its event stream, parses deliveries, reconnects after
//! churn or a drop, and counts its losses when the run finishes.
//!
//! Kept cheap on purpose (tens of thousands per process): a raw `TcpStream`, reads go
//! into one scratch buffer per runtime thread, and the parsers hold no buffer while
//! the stream is between events.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};

use hubbub_proto::decode::{Raw, SseParser};

use crate::body::BodyDecoder;
use crate::hist::LatencyHist;
use crate::http::{self, io_error_key};
use crate::payload;
use crate::plan::Plan;
use crate::track::{Seen, Tracker};
use crate::wire::{Phase, StreamCounts};

/// `published[p][t]`, sent by the parent when the run finishes.
pub type Published = Arc<Vec<Vec<u64>>>;
pub type FinishRx = watch::Receiver<Option<Published>>;

const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// Longest SSE line kept across reads; anything longer is a misbehaving server.
const MAX_LINE: usize = 1 << 20;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 16 * 1024]);
}

/// Counters shared by all slots of one worker.
#[derive(Debug, Default)]
pub struct SubStats {
    phase: AtomicU8,
    pub initial_done: AtomicU64,
    pub never_connected: AtomicU64,
    pub connect_errors_total: AtomicU64,
    /// Of all slots; `per_hub` splits them by hub (`count` adds to both).
    pub streams: StreamCounters,
    pub foreign: AtomicU64,
    pub churned: AtomicU64,
    pub connect_errors: Mutex<BTreeMap<String, u64>>,
    pub disconnects: Mutex<BTreeMap<String, u64>>,
    pub hists: Mutex<Hists>,
    /// `streams` split by hub (`Plan::hub_of`).
    pub per_hub: Vec<StreamCounters>,
}

/// The live counters behind `StreamCounts`, for all of a worker's subscriber streams
/// or for those on one hub.
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Open right now.
    pub connected: AtomicU64,
    pub deliveries: AtomicU64,
    pub deliveries_measured: AtomicU64,
    pub lost: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
}

impl StreamCounters {
    /// The final counts. `connected_at_end` is passed in: it is read before the
    /// streams are closed for the finish, the rest after.
    pub fn snapshot(&self, connected_at_end: u64) -> StreamCounts {
        StreamCounts {
            connected_at_end,
            deliveries_total: self.deliveries.load(Relaxed),
            deliveries_measured: self.deliveries_measured.load(Relaxed),
            lost: self.lost.load(Relaxed),
            duplicated: self.duplicated.load(Relaxed),
            reordered: self.reordered.load(Relaxed),
        }
    }
}

#[derive(Debug, Default)]
pub struct Hists {
    /// Since the last tick (progress display).
    pub tick: LatencyHist,
    /// Everything received during `Measure`.
    pub measured: LatencyHist,
    /// `measured`, split by hub.
    pub measured_per_hub: Vec<LatencyHist>,
}

impl SubStats {
    /// Counters for a run over `hubs` hubs.
    pub fn new(hubs: u32) -> Self {
        Self {
            per_hub: (0..hubs).map(|_| StreamCounters::default()).collect(),
            hists: Mutex::new(Hists {
                measured_per_hub: (0..hubs).map(|_| LatencyHist::default()).collect(),
                ..Hists::default()
            }),
            ..Self::default()
        }
    }

    fn hub(&self, hub: u32) -> &StreamCounters {
        // Sized by `new` from the plan every slot comes from.
        &self.per_hub[hub as usize]
    }

    /// Adds `n` to one counter (`which`) of all streams and of those on `hub`, so
    /// the per-hub split always sums to the whole.
    fn count(&self, hub: u32, which: impl Fn(&StreamCounters) -> &AtomicU64, n: u64) {
        which(&self.streams).fetch_add(n, Relaxed);
        which(self.hub(hub)).fetch_add(n, Relaxed);
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Relaxed))
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Relaxed);
    }

    pub fn hists(&self) -> MutexGuard<'_, Hists> {
        self.hists.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(map: &Mutex<BTreeMap<String, u64>>, key: String) {
        *map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }
}

/// What the churn driver needs to see of a slot.
#[derive(Debug, Default)]
pub struct SlotHandle {
    pub churn: Notify,
    /// Open, and has an event id to resume from. Churning a stream before it has
    /// one would lose whatever was in flight to it, through no fault of the server.
    pub churnable: AtomicBool,
}

/// Why a stream ended.
enum End {
    Finished(Option<Published>),
    Churned,
    Dropped(String),
}

/// Runs slot `slot` (global subscriber index) until the run finishes.
///
/// Like an `EventSource`, a slot reconnects after churn or a drop with the last event
/// id it saw (`Last-Event-ID`), and keeps one sequence tracker across its streams: a
/// hub that resumes correctly shows no loss, one that does not shows the gap as lost.
pub async fn run_slot(
    plan: Arc<Plan>,
    stats: Arc<SubStats>,
    slot: u32,
    handle: Arc<SlotHandle>,
    mut finish: FinishRx,
) {
    let topic = plan.topic_of(slot);
    let hub = plan.hub_of(slot);
    let mut generation = 0u32;
    // `None` until the first stream opens.
    let mut tracker: Option<Tracker> = None;
    let mut last_id: Vec<u8> = Vec::new();
    let published: Option<Published> = loop {
        if let Some(p) = finish.borrow().as_ref() {
            break Some(p.clone());
        }
        let opened = tokio::select! {
            r = http::with_timeout(plan.connect_timeout, open(&plan, slot, generation, &last_id)) => r,
            r = finish.changed() => {
                if r.is_err() {
                    break None;
                }
                continue;
            }
        };
        generation = generation.wrapping_add(1);
        let (mut stream, body, leftover) = match opened {
            Ok(o) => o,
            Err(key) => {
                stats.connect_errors_total.fetch_add(1, Relaxed);
                SubStats::bump(&stats.connect_errors, key);
                if tracker.is_none() {
                    // A slot that never got in stays out: retrying would turn an
                    // overloaded server's refusals into a connect storm.
                    break None;
                }
                pause(&mut finish).await;
                continue;
            }
        };
        if tracker.is_none() {
            stats.initial_done.fetch_add(1, Relaxed);
        }
        let from_start = stats.phase() == Phase::Connecting;
        let tracker =
            tracker.get_or_insert_with(|| Tracker::new(plan.publishers as usize, from_start));
        stats.count(hub, |c| &c.connected, 1);
        let sse = SseParser::with_max_line(MAX_LINE).resuming(std::mem::take(&mut last_id));
        let churnable = !sse.last_id().is_empty();
        handle.churnable.store(churnable, Relaxed);
        let mut conn = Conn {
            body,
            sse,
            tracker,
            churnable,
            hub,
            handle: &handle,
            plan: &plan,
            stats: &stats,
        };
        let end = conn.pump(&mut stream, &leftover, &mut finish).await;
        last_id = conn.sse.into_last_id();
        handle.churnable.store(false, Relaxed);
        stats.streams.connected.fetch_sub(1, Relaxed);
        stats.hub(hub).connected.fetch_sub(1, Relaxed);
        drop(stream);
        match end {
            End::Finished(p) => break p,
            End::Churned => {
                stats.churned.fetch_add(1, Relaxed);
            }
            End::Dropped(key) => {
                SubStats::bump(&stats.disconnects, key);
                pause(&mut finish).await;
            }
        }
    };
    let Some(tracker) = tracker else {
        stats.initial_done.fetch_add(1, Relaxed);
        stats.never_connected.fetch_add(1, Relaxed);
        return;
    };
    let lost = match published {
        Some(p) => {
            let last = |publisher: usize| {
                p.get(publisher)
                    .and_then(|t| t.get(topic as usize))
                    .copied()
                    .unwrap_or(0)
            };
            tracker.lost(Some(&last))
        }
        None => tracker.lost(None),
    };
    stats.count(hub, |c| &c.lost, lost);
}

/// Waits before reconnecting, or until the run finishes.
async fn pause(finish: &mut FinishRx) {
    tokio::select! {
        _ = tokio::time::sleep(RECONNECT_DELAY) => {}
        _ = finish.changed() => {}
    }
}

/// Connects and checks the response head; returns the stream, its body decoder and
/// any body bytes that came with the head.
async fn open(
    plan: &Plan,
    slot: u32,
    generation: u32,
    last_id: &[u8],
) -> Result<(TcpStream, BodyDecoder, Vec<u8>), String> {
    let to = &plan.sub_targets[plan.hub_of(slot) as usize];
    let base = &to.requests[plan.topic_of(slot) as usize];
    let request = if last_id.is_empty() {
        Cow::Borrowed(base)
    } else {
        Cow::Owned(http::with_last_event_id(base, last_id))
    };
    let mut stream = http::connect(to.addr, plan.source_of(slot, generation))
        .await
        .map_err(|e| io_error_key(&e))?;
    let mut buf = Vec::new();
    let head = http::send_and_read_head(&mut stream, &request, &mut buf).await?;
    if head.status != 200 {
        return Err(format!("http_{}", head.status));
    }
    buf.drain(..head.len);
    buf.shrink_to_fit();
    Ok((stream, BodyDecoder::new(head.framing), buf))
}

struct Conn<'a> {
    body: BodyDecoder,
    sse: SseParser,
    tracker: &'a mut Tracker,
    churnable: bool,
    hub: u32,
    handle: &'a SlotHandle,
    plan: &'a Plan,
    stats: &'a SubStats,
}

impl Conn<'_> {
    async fn pump(
        &mut self,
        stream: &mut TcpStream,
        leftover: &[u8],
        finish: &mut FinishRx,
    ) -> End {
        if let Err(key) = self.process(leftover) {
            return End::Dropped(key);
        }
        {
            // Registered once, not per read: these stay armed across iterations.
            let churned = self.handle.churn.notified();
            let finished = finish.changed();
            tokio::pin!(churned, finished);
            loop {
                tokio::select! {
                    r = std::future::poll_fn(|cx| self.poll_read(stream, cx)) => {
                        if let Err(key) = r {
                            return End::Dropped(key);
                        }
                    }
                    _ = &mut churned => return End::Churned,
                    _ = &mut finished => break,
                }
            }
        }
        // Whatever already arrived still counts.
        let _ = self.read_ready(stream);
        End::Finished(finish.borrow().clone())
    }

    /// One read into the thread's scratch buffer, processed before the poll returns,
    /// so no buffer is held across awaits. Going through `poll_read` (not `try_read`)
    /// lets tokio treat a short read as "drained" and skip the extra read that would
    /// otherwise return `WouldBlock`.
    fn poll_read(
        &mut self,
        stream: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), String>> {
        SCRATCH.with_borrow_mut(|buf| {
            let mut rb = ReadBuf::new(buf);
            match Pin::new(stream).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(io_error_key(&e))),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(Err("eof".to_owned())),
                Poll::Ready(Ok(())) => Poll::Ready(self.process(rb.filled())),
            }
        })
    }

    /// Reads what the socket has without waiting; `Err` once the stream is over.
    fn read_ready(&mut self, stream: &TcpStream) -> Result<(), String> {
        SCRATCH.with_borrow_mut(|buf| {
            loop {
                match stream.try_read(buf) {
                    Ok(0) => return Err("eof".to_owned()),
                    Ok(n) => self.process(&buf[..n])?,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(io_error_key(&e)),
                }
            }
        })
    }

    fn process(&mut self, bytes: &[u8]) -> Result<(), String> {
        let Conn {
            body,
            sse,
            tracker,
            hub,
            plan,
            stats,
            ..
        } = self;
        let hub = *hub;
        let mut sse_err = None;
        body.feed(bytes, &mut |piece| {
            if sse_err.is_none() {
                sse_err = sse
                    .feed(piece, &mut |raw| match raw {
                        // Heartbeats and the open line; events without data are not ours.
                        Raw::Event(e) if !e.data.is_empty() => {
                            on_event(e.data, tracker, hub, plan, stats)
                        }
                        _ => {}
                    })
                    .err();
            }
        })
        .map_err(|e| format!("bad_body: {e}"))?;
        if let Some(e) = sse_err {
            return Err(format!("bad_sse: {e}"));
        }
        if !self.churnable && !self.sse.last_id().is_empty() {
            self.churnable = true;
            self.handle.churnable.store(true, Relaxed);
        }
        if body.is_done() {
            return Err("server_ended_stream".to_owned());
        }
        Ok(())
    }
}

fn on_event(data: &[u8], tracker: &mut Tracker, hub: u32, plan: &Plan, stats: &SubStats) {
    let now = payload::now_nanos();
    let Some(stamp) = payload::decode(data).filter(|s| s.run == plan.run_id) else {
        stats.foreign.fetch_add(1, Relaxed);
        return;
    };
    let seen = match tracker.record(stamp.publisher, stamp.seq) {
        Some(seen) => seen,
        None => {
            stats.foreign.fetch_add(1, Relaxed);
            return;
        }
    };
    let latency_us = now.saturating_sub(stamp.sent_nanos) / 1_000;
    let measuring = stats.phase() == Phase::Measure;
    {
        let mut h = stats.hists();
        h.tick.record(latency_us);
        if measuring {
            h.measured.record(latency_us);
            h.measured_per_hub[hub as usize].record(latency_us);
        }
    }
    stats.count(hub, |c| &c.deliveries, 1);
    if measuring {
        stats.count(hub, |c| &c.deliveries_measured, 1);
    }
    match seen {
        Seen::New => {}
        Seen::Duplicate => stats.count(hub, |c| &c.duplicated, 1),
        Seen::Reordered => stats.count(hub, |c| &c.reordered, 1),
    }
}
