//! Just enough HTTP/1.1 for a cheap client: `http://` URLs, request bytes, response
//! heads (via httparse) and a paced, bind-before-connect TCP connect.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::body::Framing;
use crate::error::BenchError;

/// Largest response head accepted; real ones are a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;

/// A parsed `http://host[:port]/path?query` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Path and query, always starting with `/`.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<Self, BenchError> {
        let bad = |reason: &str| BenchError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// URLs are supported"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let port_of = |p: &str| p.parse::<u16>().map_err(|_| bad("bad port"));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("bad IPv6 host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => port_of(p)?,
                None if after.is_empty() => 80,
                None => return Err(bad("bad IPv6 host")),
            };
            (format!("[{h}]"), port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h.to_owned(), port_of(p)?),
                None => (authority.to_owned(), 80),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        Ok(Self { host, port, path })
    }

    /// The `Host` header value.
    pub fn authority(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Resolves the host, preferring IPv4 (loopback source addresses are IPv4).
    pub async fn resolve(&self) -> Result<SocketAddr, BenchError> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, self.port))
            .await
            .map_err(|e| BenchError::Resolve(self.host.clone(), e))?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| {
                BenchError::Resolve(self.host.clone(), std::io::ErrorKind::NotFound.into())
            })
    }
}

/// `GET` for an event stream.
pub fn subscribe_request(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n")
        .into_bytes()
}

/// `request` (a complete head ending in a blank line) plus a `Last-Event-ID` header.
pub fn with_last_event_id(request: &[u8], id: &[u8]) -> Vec<u8> {
    let head = request.strip_suffix(b"\r\n").unwrap_or(request);
    let mut out = Vec::with_capacity(request.len() + id.len() + 20);
    out.extend_from_slice(head);
    out.extend_from_slice(b"Last-Event-ID: ");
    out.extend_from_slice(id);
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// A kept-alive `POST`.
pub fn post_request(
    host: &str,
    path: &str,
    content_type: &str,
    auth: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = auth {
        req.push_str("Authorization: Bearer ");
        req.push_str(token);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// What the bench needs from a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    pub keep_alive: bool,
    /// Bytes of the head, including the blank line.
    pub len: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("malformed response head")]
    Malformed,
    #[error("response head larger than {MAX_HEAD} bytes")]
    TooLarge,
}

/// Parses a response head from the start of `buf`; `Ok(None)` if incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HeadError::Malformed),
    };
    let status = resp.code.ok_or(HeadError::Malformed)?;
    let mut framing = Framing::UntilClose;
    let mut keep_alive = resp.version == Some(1);
    for h in resp.headers.iter() {
        let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if value.split(',').any(|t| t.trim() == "chunked") {
                framing = Framing::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            if framing != Framing::Chunked {
                framing = Framing::Length(value.trim().parse().map_err(|_| HeadError::Malformed)?);
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            if value.contains("close") {
                keep_alive = false;
            } else if value.contains("keep-alive") {
                keep_alive = true;
            }
        }
    }
    // Bodyless statuses never carry a body whatever the headers say.
    if status == 204 || status == 304 || (100..200).contains(&status) {
        framing = Framing::Length(0);
    }
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    Ok(Some(Head {
        status,
        framing,
        keep_alive,
        len,
    }))
}

/// Why opening a connection or a stream failed, as a short stable key for reports.
pub fn io_error_key(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "refused".into(),
        K::ConnectionReset => "reset".into(),
        K::ConnectionAborted => "aborted".into(),
        K::TimedOut => "timeout".into(),
        K::AddrInUse | K::AddrNotAvailable => "no_local_port".into(),
        K::UnexpectedEof => "eof".into(),
        K::BrokenPipe => "broken_pipe".into(),
        _ => match e.raw_os_error() {
            Some(24) => "too_many_open_files".into(),
            Some(n) => format!("os_error_{n}"),
            None => format!("{:?}", e.kind()).to_ascii_lowercase(),
        },
    }
}

/// Connects to `addr`, from `source` (address and port) if given. If that exact
/// source is taken (a listener on the port, a 4-tuple still in use), falls back to a
/// kernel-chosen port on the same address.
pub async fn connect(addr: SocketAddr, source: Option<SocketAddr>) -> std::io::Result<TcpStream> {
    use std::io::ErrorKind as K;
    let Some(src) = source else {
        return finish_connect(new_socket(addr)?.connect(addr).await?);
    };
    let attempt = async |src: SocketAddr| {
        let sock = new_socket(addr)?;
        // Lets a port of an earlier run's connection, still in TIME_WAIT, be reused.
        sock.set_reuseaddr(true)?;
        sock.bind(src)?;
        sock.connect(addr).await
    };
    let stream = match attempt(src).await {
        Err(e) if src.port() != 0 && matches!(e.kind(), K::AddrInUse | K::AddrNotAvailable) => {
            attempt(SocketAddr::new(src.ip(), 0)).await?
        }
        other => other?,
    };
    finish_connect(stream)
}

fn new_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
}

fn finish_connect(stream: TcpStream) -> std::io::Result<TcpStream> {
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Writes `request` and reads until a full response head is in; returns the head and
/// the bytes read past it (the start of the body).
pub async fn send_and_read_head(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<Head, String> {
    stream
        .write_all(request)
        .await
        .map_err(|e| io_error_key(&e))?;
    read_head(stream, buf).await
}

/// Reads until `buf` starts with a complete head (it may already hold some bytes).
pub async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Head, String> {
    loop {
        match parse_head(buf) {
            Ok(Some(head)) => return Ok(head),
            Ok(None) => {}
            Err(e) => return Err(format!("bad_response: {e}")),
        }
        let mut chunk = [0u8; 2048];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| io_error_key(&e))?;
        if n == 0 {
            return Err("eof".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Guards against load-testing anything but this machine by accident.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Applies `timeout` to a connect-like future, mapping elapsed to the "timeout" key.
pub async fn with_timeout<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_request_for_test(r: &str) -> bool {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        matches!(httparse::Request::new(&mut headers).parse(r.as_bytes()), Ok(httparse::Status::Complete(n)) if n == r.len())
    }

    #[test]
    fn parses_urls() {
        let u = HttpUrl::parse("http://127.0.0.1:8080/.well-known/mercure").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/.well-known/mercure")
        );
        assert_eq!(u.authority(), "127.0.0.1:8080");
        let u = HttpUrl::parse("http://localhost?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("localhost", 80, "/?x=1")
        );
        assert_eq!(u.authority(), "localhost");
        let u = HttpUrl::parse("http://[::1]:9/a").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[::1]", 9));
        assert!(HttpUrl::parse("https://x/").is_err());
        assert!(HttpUrl::parse("http://:80/").is_err());
        assert!(HttpUrl::parse("http://h:x/").is_err());
    }

    /// A complete head's status, framing and keep-alive.
    fn head(raw: &[u8]) -> (u16, Framing, bool) {
        let h = parse_head(raw).unwrap().unwrap();
        (h.status, h.framing, h.keep_alive)
    }

    #[test]
    fn parses_heads() {
        let sse = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n:\n";
        assert_eq!(head(sse), (200, Framing::Chunked, true));
        assert_eq!(parse_head(sse).unwrap().unwrap().len, 80);
        let closing = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n";
        assert_eq!(head(closing), (200, Framing::Length(5), false));
        let refused = b"HTTP/1.1 429 Too Many\r\nRetry-After: 1\r\n\r\n";
        assert_eq!(head(refused), (429, Framing::UntilClose, false));
        let empty = b"HTTP/1.0 204 No Content\r\n\r\n";
        assert_eq!(head(empty), (204, Framing::Length(0), false));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nX: y\r\n"), Ok(None));
        assert_eq!(parse_head(b"garbage\r\n\r\n"), Err(HeadError::Malformed));
    }

    #[test]
    fn builds_requests() {
        let r = post_request("h:1", "/p", "text/plain", Some("tok"), b"abc");
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("POST /p HTTP/1.1\r\nHost: h:1\r\n"));
        assert!(s.contains("Content-Length: 3\r\n"));
        assert!(s.contains("Authorization: Bearer tok\r\n"));
        assert!(s.ends_with("\r\n\r\nabc"));
        let g = String::from_utf8(subscribe_request("h", "/s?topic=x")).unwrap();
        assert!(g.starts_with("GET /s?topic=x HTTP/1.1\r\n") && g.ends_with("\r\n\r\n"));
        let r = String::from_utf8(with_last_event_id(g.as_bytes(), b"urn:uuid:1")).unwrap();
        assert!(
            r.ends_with("no-cache\r\nLast-Event-ID: urn:uuid:1\r\n\r\n"),
            "{r}"
        );
        assert!(parse_request_for_test(&r));
    }
}
