//! An SSE client over reqwest that parses with `hubbub_proto::decode` and tells a
//! clean end of stream from a broken one.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use hubbub_proto::decode::{Event, EventParser, Item};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use tokio::time::Instant;

use crate::{WAIT, client, subscribe_url};

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Body bytes kept for [`SseClient::raw`]; big streams only keep their start.
const RAW_CAP: usize = 1 << 20;

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The body ended properly (last chunk received).
    Clean,
    /// The connection broke mid-body.
    Broken(String),
}

/// What was left on a stream when it ended.
#[derive(Debug)]
pub struct Ended {
    /// Items received between the call and the end.
    pub items: Vec<Item>,
    pub clean: bool,
}

impl Ended {
    pub fn events(&self) -> Vec<&Event> {
        self.items
            .iter()
            .filter_map(|i| match i {
                Item::Event(e) => Some(e),
                Item::Comment(_) => None,
            })
            .collect()
    }
}

/// One subscription. Created once the response headers are in, so for a hub that
/// registers before answering, anything published after `connect` returns is owed.
pub struct SseClient {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Body,
    parser: EventParser,
    pending: VecDeque<Item>,
    raw: Vec<u8>,
    end: Option<StreamEnd>,
}

impl std::fmt::Debug for SseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseClient")
            .field("status", &self.status)
            .field("pending", &self.pending)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl SseClient {
    /// Sends `request` and waits (at most [`WAIT`]) for the response headers. Any
    /// status is returned; check [`SseClient::status`].
    pub async fn connect(request: RequestBuilder) -> Self {
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .expect("the hub answers the subscribe request in time")
            .expect("the subscribe request reaches the hub");
        Self {
            status: response.status(),
            headers: response.headers().clone(),
            body: Box::pin(response.bytes_stream()),
            parser: EventParser::new(),
            pending: VecDeque::new(),
            raw: Vec::new(),
            end: None,
        }
    }

    /// Subscribes to `topics` on the hub at `hub_url`, with
    /// `Authorization: Bearer <token>` when `token` is given, and asserts `200`.
    pub async fn subscribe(hub_url: &str, topics: &[&str], token: Option<&str>) -> Self {
        let mut request = client().get(subscribe_url(hub_url, topics));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let sse = Self::connect(request).await;
        let with = if token.is_some() { " with a token" } else { "" };
        assert_eq!(sse.status, StatusCode::OK, "subscribe {topics:?}{with}");
        sse
    }

    /// `GET url` with `Accept: text/event-stream`.
    pub async fn get(url: &str) -> Self {
        Self::connect(client().get(url).header("accept", "text/event-stream")).await
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body bytes received so far (the first MiB), exactly as sent.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The reconnection time the stream set with `retry` (ms), if any.
    pub fn reconnection_time(&self) -> Option<u64> {
        self.parser.reconnection_time()
    }

    /// `Some` once the body has ended.
    pub fn end(&self) -> Option<&StreamEnd> {
        self.end.as_ref()
    }

    /// The next event or comment; `None` when `timeout` passes first or the stream
    /// has ended (see [`SseClient::end`]).
    pub async fn next_item(&mut self, timeout: Duration) -> Option<Item> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.end.is_some() {
                return None;
            }
            let chunk = match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return None,
                Ok(None) => {
                    self.end = Some(StreamEnd::Clean);
                    continue;
                }
                Ok(Some(Err(e))) => {
                    self.end = Some(StreamEnd::Broken(format!("{e:?}")));
                    continue;
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            let room = RAW_CAP.saturating_sub(self.raw.len());
            self.raw.extend_from_slice(&chunk[..room.min(chunk.len())]);
            self.pending.extend(self.parser.feed(&chunk));
        }
    }

    /// The next event, skipping comments; `None` on timeout or end of stream.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item(left).await? {
                Item::Event(e) => return Some(e),
                Item::Comment(_) => {}
            }
        }
    }

    /// The next event within [`WAIT`], or a panic saying what happened instead.
    pub async fn expect_event(&mut self) -> Event {
        match self.next_event(WAIT).await {
            Some(e) => e,
            None => panic!(
                "expected an event within {WAIT:?}; stream end: {:?}",
                self.end
            ),
        }
    }

    /// The next `n` events (each within [`WAIT`]).
    pub async fn events(&mut self, n: usize) -> Vec<Event> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.expect_event().await);
        }
        out
    }

    /// The ids of the next `n` events.
    pub async fn ids(&mut self, n: usize) -> Vec<String> {
        self.events(n)
            .await
            .into_iter()
            .map(|e| e.id.unwrap_or_default())
            .collect()
    }

    /// Reads events until one has id `last` (within [`WAIT`] each); returns the
    /// ids before it. A bounded way to say "exactly these arrived before X".
    pub async fn ids_until(&mut self, last: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let id = self.expect_event().await.id.unwrap_or_default();
            if id == last {
                return seen;
            }
            seen.push(id);
        }
    }

    /// Panics if an event arrives within `wait` (comments and the end are fine).
    pub async fn expect_no_event(&mut self, wait: Duration) {
        if let Some(e) = self.next_event(wait).await {
            panic!("expected no event for {wait:?}, got {e:?}");
        }
    }

    /// Reads until the stream ends (panicking if it is still open after `timeout`).
    pub async fn expect_end(&mut self, timeout: Duration) -> Ended {
        let deadline = Instant::now() + timeout;
        let mut items = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item(left).await {
                Some(item) => items.push(item),
                None => break,
            }
        }
        match &self.end {
            Some(end) => Ended {
                items,
                clean: *end == StreamEnd::Clean,
            },
            None => panic!("the stream is still open after {timeout:?}; got {items:?}"),
        }
    }
}
