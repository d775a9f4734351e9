//! One accepted connection. We read the request head ourselves (into a small
//! buffer, only once bytes arrive). A subscription request (`GET` or `QUERY`
//! on the hub path) is then served without hyper: a one-way event stream needs
//! no 8 KiB read buffer and no 8 KiB header buffer per connection, which is
//! most of the memory an idle subscriber would otherwise cost. Everything
//! else, including keep-alive follow-up requests, goes to hyper with the bytes
//! we read replayed.
//!
//! A `QUERY` subscription carries its parameters in a body. Its stream moves
//! to another runtime with the socket, and nothing read from the socket may be
//! left behind, so the body is read here, whole and exactly (never a byte
//! past its `Content-Length`), before the request is routed: the handler gets
//! it as a complete in-memory body. Only the simple case is taken: a
//! `Content-Length` within `max_subscribe_body_bytes`, at most an
//! `Expect: 100-continue`. A chunked body, an oversized one (hyper answers
//! 413 from the same handler) or pipelined bytes go to hyper, where the
//! stream is served by hyper on this runtime: slower, never wrong.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Request, Version, header};
use http_body_util::BodyExt;
use hubbub_core::{Next, Subscription};
use hubbub_proto::OPEN_COMMENT;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use socket2::SockRef;
use std::io::IoSlice;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::connection::{ConnGuard, HUB_PATH, Peer};
use crate::io::{Rewind, WriteDeadline};
use crate::subscribe::LiveStream;

/// A request head must arrive within this; defends against idle or slow openers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Larger heads go to hyper, which answers 431.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// What a connection is held to, read from the settings at accept.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// A socket write blocked this long cuts the connection.
    pub write_deadline: Option<Duration>,
    /// Largest `QUERY` body read on the lean path (`max_subscribe_body_bytes`).
    pub max_subscribe_body: usize,
    /// How long a body may take after its head (`request_timeout`).
    pub body_timeout: Option<Duration>,
}

pub async fn serve(
    mut stream: TcpStream,
    peer: Peer,
    router: Router,
    limits: ConnLimits,
    shutdown: CancellationToken,
    streams: StreamTasks,
    guard: ConnGuard,
) {
    let deadline = limits.write_deadline;
    let mut head = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout(HEADER_READ_TIMEOUT, read_head(&mut stream)) => match r {
            Ok(Ok(Some(head))) => head,
            _ => return,
        },
    };
    if let Some(lean) = stream_request(&head, peer, limits.max_subscribe_body) {
        let mut request = lean.request;
        if lean.body_len > 0 {
            let have = head.split_off(lean.body_start);
            let read = read_body(&mut stream, have, lean.body_len, lean.expect_continue);
            let body = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = within(limits.body_timeout, read) => match r {
                    Some(Ok(body)) => body,
                    Some(Err(e)) => return tracing::debug!(error = %e, "subscription body failed"),
                    None => {
                        let _ = write(&mut stream, &request_timeout(SystemTime::now())[..], deadline).await;
                        return;
                    }
                },
            };
            *request.body_mut() = Body::from(body);
        }
        drop(head);
        // The event stream continues in a task of its own whose state is only
        // what streaming needs, on the streams' runtime; this task (head
        // reading, routing) ends here. Nothing was read past the head
        // (`stream_request` refuses pipelined bytes), so nothing is left behind.
        match Box::pin(respond(&mut stream, router, request, deadline)).await {
            Ok(Some(live)) => streams.spawn(stream, live, deadline, guard),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "event stream request failed"),
        }
        return;
    }
    // Boxed so an idle connection's task does not carry hyper's large state.
    Box::pin(serve_hyper(
        stream,
        head.freeze(),
        peer,
        router,
        deadline,
        shutdown,
    ))
    .await;
    drop(guard);
}

/// Where established event streams run: tasks of the accept loop's tracker,
/// on the streams' runtime (see `serve`).
#[derive(Clone)]
pub struct StreamTasks {
    pub tracker: TaskTracker,
    pub runtime: Handle,
}

impl StreamTasks {
    /// Moves the socket to the streams' runtime (a socket belongs to the
    /// runtime that registered it) and pumps the stream there.
    fn spawn(&self, stream: TcpStream, live: Live, deadline: Option<Duration>, guard: ConnGuard) {
        let socket = match stream.into_std() {
            Ok(socket) => socket,
            Err(e) => return tracing::debug!(error = %e, "cannot move an event stream"),
        };
        let pumped = async move {
            match TcpStream::from_std(socket) {
                Ok(stream) => pump(stream, live, deadline, guard).await,
                Err(e) => tracing::debug!(error = %e, "cannot move an event stream"),
            }
        };
        self.tracker.spawn_on(pumped, &self.runtime);
    }
}

/// Reads until the end of the request head, EOF or the size limit; returns
/// everything read (None if the peer left without a byte).
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<BytesMut>> {
    stream.readable().await?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let from = buf.len();
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok((!buf.is_empty()).then_some(buf));
        }
        if buf.len() >= MAX_HEAD || head_ends(&buf, from) {
            return Ok(Some(buf));
        }
    }
}

/// Whether `buf` holds the empty line that ends a request head, looking only
/// at the bytes from `from` on (and the two before, which the line end may
/// span), so a head trickled in costs linear time. Bare-LF line ends count:
/// httparse and hyper accept them (RFC 9112, 2.2), and waiting for a CRLF
/// that never comes would leave such a client without an answer.
pub(crate) fn head_ends(buf: &[u8], from: usize) -> bool {
    let tail = &buf[from.saturating_sub(2)..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

/// A subscription request we serve ourselves, and where its body is.
#[derive(Debug)]
struct Lean {
    /// With an empty body; a `QUERY` body is read and put in after.
    request: Request<Body>,
    /// Where the body starts in the bytes read so far (the end of the head).
    body_start: usize,
    /// The body's `Content-Length` (0 for `GET`).
    body_len: usize,
    /// The client waits for `100 Continue` before it sends the body.
    expect_continue: bool,
}

/// A subscription request we can serve ourselves: a complete `GET` head for
/// the hub path without a body, or a `QUERY` head with at most
/// `max_body` bytes of `Content-Length` body; nothing pipelined behind it;
/// HTTP/1.0 or 1.1.
fn stream_request(head: &[u8], peer: Peer, max_body: usize) -> Option<Lean> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = parsed.parse(head).ok()? else {
        return None;
    };
    let path = parsed.path?;
    let method = parsed.method?;
    if !matches!(method, "GET" | "QUERY") || path.split('?').next() != Some(HUB_PATH) {
        return None;
    }
    let version = match parsed.version? {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut request = Request::builder().method(method).uri(path).version(version);
    let mut body_len = None;
    let mut expect_continue = false;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        if name == header::TRANSFER_ENCODING || name == header::UPGRADE {
            return None;
        }
        if name == header::CONTENT_LENGTH {
            let n = std::str::from_utf8(h.value).ok()?.trim();
            // Digits only (no sign), and only one: anything else is hyper's to refuse.
            if body_len.is_some() || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            body_len = Some(n.parse::<usize>().ok()?);
        }
        if name == header::EXPECT {
            if !h.value.eq_ignore_ascii_case(b"100-continue") {
                return None;
            }
            // An HTTP/1.0 client does not know 100 (RFC 9110, 10.1.1): it sends the body anyway.
            expect_continue = version == Version::HTTP_11;
        }
        request = request.header(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    let body_len = body_len.unwrap_or(0);
    let fits = match method {
        "GET" => body_len == 0,
        _ => body_len <= max_body,
    };
    // Bytes past the body would be a pipelined request, left behind when the
    // socket moves to the streams' runtime.
    if !fits || head.len() > len + body_len {
        return None;
    }
    let mut request = request.body(Body::empty()).ok()?;
    request.extensions_mut().insert(peer);
    Some(Lean {
        request,
        body_start: len,
        body_len,
        expect_continue,
    })
}

/// Completes a body of `len` bytes whose start, `have`, came with the head,
/// reading exactly the rest (a byte more would belong to a request after it).
async fn read_body(
    stream: &mut TcpStream,
    mut have: BytesMut,
    len: usize,
    expect_continue: bool,
) -> io::Result<Bytes> {
    let start = have.len();
    if start < len {
        if expect_continue {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        have.resize(len, 0);
        stream.read_exact(&mut have[start..]).await?;
    }
    Ok(have.freeze())
}

/// `fut`, or None once `limit` passed.
async fn within<T>(limit: Option<Duration>, fut: impl Future<Output = T>) -> Option<T> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// The answer to a body that did not arrive in time (the connection closes).
fn request_timeout(now: SystemTime) -> Bytes {
    const BODY: &str = "the body did not arrive in time (request_timeout)\n";
    Bytes::from(format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\ndate: {}\r\n\r\n{BODY}",
        BODY.len(),
        http_date(now)
    ))
}

/// Runs the request through the router (auth, limits, CORS: the same code as
/// on the hyper path) and writes the response head by hand. Returns the body of
/// an event stream (HTTP/1.1: chunked; the connection closes when it ends), or
/// None once a plain (error) response was written whole.
async fn respond(
    stream: &mut TcpStream,
    router: Router,
    request: Request<Body>,
    deadline: Option<Duration>,
) -> io::Result<Option<Live>> {
    let chunked = request.version() == Version::HTTP_11;
    let Ok(response) = router.oneshot(request).await;
    let (parts, body) = response.into_parts();
    let streaming = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"text/event-stream");
    let mut head = response_head(&parts, SystemTime::now());
    if !streaming {
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        head.put_slice(
            format!(
                "content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        head.put_slice(&body);
        write(stream, &head[..], deadline).await?;
        stream.shutdown().await?;
        return Ok(None);
    }
    // Only our subscribe handler answers with an event stream, and it always
    // leaves the subscription in the response's extensions.
    let Some(sub) = parts
        .extensions
        .get::<LiveStream>()
        .and_then(LiveStream::take)
    else {
        return Err(io::Error::other("event stream without a subscription"));
    };
    drop(body);
    if chunked {
        head.put_slice(b"transfer-encoding: chunked\r\n");
    }
    head.put_slice(b"connection: close\r\n\r\n");
    put_chunk(&mut head, OPEN_COMMENT, chunked);
    write(stream, &head[..], deadline).await?;
    Ok(Some(Live { sub, chunked }))
}

/// The status line, the router's headers and `Date`, without the framing
/// headers (`Content-Length`, `Transfer-Encoding`, `Connection`): those are
/// written from what is actually sent, and a copy the router already set
/// would go out twice.
fn response_head(parts: &http::response::Parts, now: SystemTime) -> BytesMut {
    let mut head = BytesMut::with_capacity(512);
    let reason = parts.status.canonical_reason().unwrap_or("");
    head.put_slice(format!("HTTP/1.1 {} {reason}\r\n", parts.status.as_u16()).as_bytes());
    for (name, value) in &parts.headers {
        if is_framing(name) {
            continue;
        }
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
    head.put_slice(format!("date: {}\r\n", http_date(now)).as_bytes());
    head
}

fn is_framing(name: &HeaderName) -> bool {
    [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::DATE,
    ]
    .contains(name)
}

/// `now` as an HTTP date (IMF-fixdate, RFC 9110, 5.6.7): every response
/// carries one (hyper adds it to its own; ours are written by hand).
pub(crate) fn http_date(now: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[month - 1],
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The Gregorian (year, month 1-12, day) of a day count since 1970-01-01
/// (H. Hinnant's `civil_from_days`), to avoid a date crate for one header.
fn civil_from_days(days: u64) -> (u64, usize, u64) {
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(month <= 2), month as usize, day)
}

/// An event stream after its head: the subscription, and how to frame it.
struct Live {
    sub: Subscription,
    chunked: bool,
}

/// Most frames sent in one vectored write.
const BATCH_FRAMES: usize = 32;

/// Writes frames as they come until the stream ends or the client leaves.
///
/// Why not a body stream: this is the per-delivery hot path (10,000
/// subscribers on a topic = 10,000 of these per update). Frames go from the
/// subscriber queue straight into one `sendmsg` (chunk header, frames, CRLF as
/// an iovec array on the stack: no allocation, no copy); only a write the
/// socket cannot take at once falls back to an async write under the deadline.
async fn pump(mut stream: TcpStream, live: Live, deadline: Option<Duration>, guard: ConnGuard) {
    let Live { mut sub, chunked } = live;
    let result: io::Result<()> = async {
        let mut probe = [0u8; 8];
        loop {
            tokio::select! {
                next = sub.next() => match next {
                    Next::Frame(first) => {
                        if let Some(rest) = send_ready(&stream, &mut sub, first, chunked)? {
                            write(&mut stream, rest, deadline).await?;
                        }
                    }
                    Next::Closed(_) => break,
                },
                // The client closing its side ends the stream at once.
                r = stream.read(&mut probe) => if matches!(r, Ok(0) | Err(_)) { return Ok(()) },
            }
        }
        if chunked {
            write(&mut stream, &b"0\r\n\r\n"[..], deadline).await?;
        }
        stream.shutdown().await
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "event stream ended with an error");
    }
    drop(guard);
}

/// Sends `first` and whatever else is ready as one chunk, without waiting.
/// Returns the bytes the socket did not take (copied; the rare slow path).
fn send_ready(
    stream: &TcpStream,
    sub: &mut Subscription,
    first: Bytes,
    chunked: bool,
) -> io::Result<Option<Bytes>> {
    let mut frames: [Bytes; BATCH_FRAMES] = std::array::from_fn(|_| Bytes::new());
    frames[0] = first;
    // A close noticed here is seen again by the next `sub.next()`.
    let count = 1 + sub.try_next_into(&mut frames[1..]).unwrap_or(0);
    let frames = &frames[..count];
    let len: usize = frames.iter().map(Bytes::len).sum();
    let mut head = [0u8; 20];
    let head = if chunked {
        chunk_head(len, &mut head)
    } else {
        &[][..]
    };
    let tail: &[u8] = if chunked { b"\r\n" } else { b"" };
    let mut slices = [IoSlice::new(&[]); BATCH_FRAMES + 2];
    slices[0] = IoSlice::new(head);
    for (slice, frame) in slices[1..].iter_mut().zip(frames) {
        *slice = IoSlice::new(frame);
    }
    slices[count + 1] = IoSlice::new(tail);
    let slices = &slices[..count + 2];
    let total = head.len() + len + tail.len();
    let sent = match stream.try_io(Interest::WRITABLE, || {
        SockRef::from(stream).send_vectored(slices)
    }) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    Ok((sent < total).then(|| unsent(slices, sent)))
}

/// The bytes of `slices` after the first `sent`, copied into one buffer.
fn unsent(slices: &[IoSlice<'_>], sent: usize) -> Bytes {
    let mut rest = BytesMut::new();
    let mut skip = sent;
    for slice in slices {
        let from = skip.min(slice.len());
        skip -= from;
        rest.put_slice(&slice[from..]);
    }
    rest.freeze()
}

/// `{len:x}\r\n` into `buf`, without allocating.
fn chunk_head(len: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    let hex = &digits[i..];
    buf[..hex.len()].copy_from_slice(hex);
    buf[hex.len()..hex.len() + 2].copy_from_slice(b"\r\n");
    &buf[..hex.len() + 2]
}

/// Appends `data` as one chunk (or as is, for HTTP/1.0).
fn put_chunk(buf: &mut BytesMut, data: &[u8], chunked: bool) {
    let mut head = [0u8; 20];
    if chunked {
        buf.put_slice(chunk_head(data.len(), &mut head));
    }
    buf.put_slice(data);
    if chunked {
        buf.put_slice(b"\r\n");
    }
}

async fn write(
    stream: &mut TcpStream,
    mut bytes: impl Buf,
    deadline: Option<Duration>,
) -> io::Result<()> {
    match deadline {
        None => stream.write_all_buf(&mut bytes).await,
        Some(limit) => tokio::time::timeout(limit, stream.write_all_buf(&mut bytes))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write deadline exceeded"))?,
    }
}

async fn serve_hyper(
    stream: TcpStream,
    prefix: Bytes,
    peer: Peer,
    router: Router,
    deadline: Option<Duration>,
    shutdown: CancellationToken,
) {
    let service = router.map_request(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(peer);
        req
    });
    let (read, write) = stream.into_split();
    let io = TokioIo::new(tokio::io::join(
        Rewind::new(prefix, read),
        WriteDeadline::new(write, deadline),
    ));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(io, TowerToHyperService::new(service));
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            // Finish the in-flight response (streams end via hub shutdown), then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer("127.0.0.1:1".parse().unwrap())
    }

    #[test]
    fn only_plain_subscription_gets_are_taken() {
        let ok =
            b"GET /.well-known/mercure?topic=a HTTP/1.1\r\nHost: h\r\nLast-Event-ID: x\r\n\r\n";
        let req = stream_request(ok, peer(), 10).unwrap().request;
        assert_eq!(req.uri(), "/.well-known/mercure?topic=a");
        assert_eq!(req.headers()["last-event-id"], "x");
        for head in [
            &b"POST /.well-known/mercure HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /.well-known/mercurex HTTP/1.1\r\n\r\n",
            b"GET /.well-known/mercure HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            b"GET /.well-known/mercure HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"GET /.well-known/mercure HTTP/1.1\r\nHost: h\r\n",
        ] {
            assert!(
                stream_request(head, peer(), 10).is_none(),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn query_subscriptions_are_taken_with_their_body() {
        let head = b"QUERY /.well-known/mercure?match=a HTTP/1.1\r\nHost: h\r\n\
            Content-Length: 7\r\nExpect: 100-continue\r\n\r\nmatch=b";
        let lean = stream_request(head, peer(), 10).unwrap();
        assert_eq!(lean.request.method().as_str(), "QUERY");
        assert_eq!(&head[lean.body_start..], b"match=b");
        assert_eq!((lean.body_len, lean.expect_continue), (7, true));
        let old = b"QUERY /.well-known/mercure HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n";
        assert!(!stream_request(old, peer(), 10).unwrap().expect_continue);
        let partial = b"QUERY /.well-known/mercure HTTP/1.1\r\nContent-Length: 7\r\n\r\nma";
        assert_eq!(stream_request(partial, peer(), 10).unwrap().body_len, 7);
        for head in [
            // Over the limit: hyper's, and the handler's 413.
            &b"QUERY /.well-known/mercure HTTP/1.1\r\nContent-Length: 11\r\n\r\n"[..],
            b"QUERY /.well-known/mercure HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"QUERY /.well-known/mercure HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"QUERY /.well-known/mercure HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"QUERY /.well-known/mercure HTTP/1.1\r\nExpect: teapot\r\n\r\n",
            // Pipelined past the body.
            b"QUERY /.well-known/mercure HTTP/1.1\r\nContent-Length: 1\r\n\r\nxGET / HTTP/1.1\r\n\r\n",
            b"QUERY /healthz HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                stream_request(head, peer(), 10).is_none(),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    /// What a partial `sendmsg` leaves: cut in the chunk header, inside a
    /// frame, between frames, in the trailer, or nothing sent at all.
    #[test]
    fn the_unsent_rest_follows_the_cut() {
        let parts: [&[u8]; 4] = [b"a\r\n", b"data: x\n\n", b"", b"\r\n"];
        let slices = parts.map(IoSlice::new);
        let whole: Vec<u8> = parts.concat();
        for sent in 0..=whole.len() {
            assert_eq!(&unsent(&slices, sent)[..], &whole[sent..], "sent {sent}");
        }
    }

    #[test]
    fn heads_end_at_an_empty_line_with_or_without_cr() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            b"GET / HTTP/1.1\nHost: h\n\n",
            b"GET / HTTP/1.1\nHost: h\n\r\n",
        ] {
            assert!(head_ends(head, 0), "{}", String::from_utf8_lossy(head));
            // Arriving a byte at a time, the end is seen in the last read.
            assert!(head_ends(head, head.len() - 1));
            assert!(!head_ends(&head[..head.len() - 1], 0));
        }
        assert!(!head_ends(b"GET / HTTP/1.1\r\nHost: h\r\n", 0));
    }

    #[test]
    fn http_dates() {
        for (secs, text) in [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_234_567_890, "Fri, 13 Feb 2009 23:31:30 GMT"),
            (1_709_164_800, "Thu, 29 Feb 2024 00:00:00 GMT"),
            (4_102_444_799, "Thu, 31 Dec 2099 23:59:59 GMT"),
        ] {
            let at = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(http_date(at), text);
        }
    }

    #[test]
    fn chunks_are_framed() {
        let framed = |data: &[u8], chunked| {
            let mut buf = BytesMut::new();
            put_chunk(&mut buf, data, chunked);
            buf
        };
        assert_eq!(
            &framed(b"hello world!!!!!!", true)[..],
            b"11\r\nhello world!!!!!!\r\n"
        );
        assert_eq!(&framed(b"x", false)[..], b"x");
        for len in [0, 1, 15, 16, 255, 4096, 65_535, usize::MAX] {
            let mut buf = [0u8; 20];
            let head = chunk_head(len, &mut buf);
            assert_eq!(head, format!("{len:x}\r\n").as_bytes());
        }
    }
}
