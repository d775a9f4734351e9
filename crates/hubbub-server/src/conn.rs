//! One accepted connection. We read the request head ourselves (into a small
//! buffer, only once bytes arrive). A subscription request (`GET` on the hub
//! path) is then served without hyper: a one-way event stream needs no 8 KiB
//! read buffer and no 8 KiB header buffer per connection, which is most of the
//! memory an idle subscriber would otherwise cost. Everything else, including
//! keep-alive follow-up requests, goes to hyper with the bytes we read replayed.

use std::io;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderName, HeaderValue, Request, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::app::HUB_PATH;
use crate::io::{Rewind, WriteDeadline};
use crate::serve::{ConnGuard, Peer};

/// A request head must arrive within this; defends against idle or slow openers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Larger heads go to hyper, which answers 431.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

pub async fn serve(
    mut stream: TcpStream,
    peer: Peer,
    router: Router,
    deadline: Option<Duration>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    guard: ConnGuard,
) {
    let head = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout(HEADER_READ_TIMEOUT, read_head(&mut stream)) => match r {
            Ok(Ok(Some(head))) => head,
            _ => return,
        },
    };
    if let Some(request) = stream_request(&head, peer) {
        drop(head);
        // The event stream continues in a task of its own whose state is only
        // what streaming needs; this task (head reading, routing) ends here.
        match Box::pin(respond(&mut stream, router, request, deadline)).await {
            Ok(Some(frames)) => {
                tracker.spawn(pump(stream, frames, deadline, guard));
            }
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

/// Reads until the end of the request head, EOF or the size limit; returns
/// everything read (None if the peer left without a byte).
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<BytesMut>> {
    stream.readable().await?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok((!buf.is_empty()).then_some(buf));
        }
        if buf.len() >= MAX_HEAD || buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(buf));
        }
    }
}

/// A subscription request we can serve ourselves: a complete `GET` head for the
/// hub path, no body, nothing pipelined behind it, HTTP/1.0 or 1.1.
fn stream_request(head: &[u8], peer: Peer) -> Option<Request<Body>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = parsed.parse(head).ok()? else {
        return None;
    };
    let path = parsed.path?;
    if len != head.len() || parsed.method? != "GET" || path.split('?').next() != Some(HUB_PATH) {
        return None;
    }
    let version = match parsed.version? {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut request = Request::builder().method("GET").uri(path).version(version);
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let has_body = (name == header::CONTENT_LENGTH && h.value != b"0")
            || name == header::TRANSFER_ENCODING;
        if has_body || name == header::UPGRADE {
            return None;
        }
        request = request.header(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    let mut request = request.body(Body::empty()).ok()?;
    request.extensions_mut().insert(peer);
    Some(request)
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
) -> io::Result<Option<Frames>> {
    let chunked = request.version() == Version::HTTP_11;
    let Ok(response) = router.oneshot(request).await;
    let (parts, body) = response.into_parts();
    let streaming = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"text/event-stream");
    let mut head = BytesMut::with_capacity(512);
    let reason = parts.status.canonical_reason().unwrap_or("");
    head.put_slice(format!("HTTP/1.1 {} {reason}\r\n", parts.status.as_u16()).as_bytes());
    for (name, value) in &parts.headers {
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
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
    if chunked {
        head.put_slice(b"transfer-encoding: chunked\r\n");
    }
    head.put_slice(b"connection: close\r\n\r\n");
    write(stream, &head[..], deadline).await?;
    Ok(Some(Frames {
        body: body.into_data_stream(),
        chunked,
    }))
}

/// The body of an event stream and how to frame it.
struct Frames {
    body: axum::body::BodyDataStream,
    chunked: bool,
}

/// Writes frames as they come until the stream ends or the client leaves.
async fn pump(
    mut stream: TcpStream,
    mut frames: Frames,
    deadline: Option<Duration>,
    guard: ConnGuard,
) {
    let result: io::Result<()> = async {
        let mut probe = [0u8; 8];
        loop {
            tokio::select! {
                frame = frames.body.next() => match frame {
                    Some(Ok(data)) => write(&mut stream, chunk(data, frames.chunked), deadline).await?,
                    _ => break,
                },
                // The client closing its side ends the stream at once.
                r = stream.read(&mut probe) => if matches!(r, Ok(0) | Err(_)) { return Ok(()) },
            }
        }
        if frames.chunked {
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

/// HTTP/1.1 chunk framing around the (shared, already batched) frame bytes,
/// as a chain of buffers: written with one vectored write, the frames are not
/// copied again.
fn chunk(data: Bytes, chunked: bool) -> impl Buf {
    let (head, tail) = if chunked {
        (
            Bytes::from(format!("{:x}\r\n", data.len())),
            Bytes::from_static(b"\r\n"),
        )
    } else {
        (Bytes::new(), Bytes::new())
    };
    head.chain(data).chain(tail)
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
    let io = TokioIo::new(Rewind::new(prefix, WriteDeadline::new(stream, deadline)));
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
        let req = stream_request(ok, peer()).unwrap();
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
                stream_request(head, peer()).is_none(),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn chunks_are_framed() {
        let framed = |data: &'static [u8], chunked| {
            let mut buf = chunk(Bytes::from_static(data), chunked);
            buf.copy_to_bytes(buf.remaining())
        };
        assert_eq!(
            &framed(b"hello world!!!!!!", true)[..],
            b"11\r\nhello world!!!!!!\r\n"
        );
        assert_eq!(&framed(b"x", false)[..], b"x");
    }
}
