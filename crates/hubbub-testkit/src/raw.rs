//! Raw TCP connections, for what an HTTP client hides: the exact bytes, a peer
//! that never reads, a server that answers before the request is parsed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::WAIT;

/// A response head, as read off the wire.
#[derive(Debug, Clone)]
pub struct RawHead {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
}

impl RawHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order (to catch a header sent twice).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    /// Bytes read but not yet consumed.
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::connected(TcpStream::connect(addr)).await
    }

    /// Connects with a tiny receive buffer: with a peer that never reads, the
    /// server's writes block after a few kilobytes (plus its own send buffer).
    pub async fn connect_with_small_buffer(addr: SocketAddr) -> Self {
        let socket = TcpSocket::new_v4().expect("a TCP socket");
        socket
            .set_recv_buffer_size(4096)
            .expect("the receive buffer can be set");
        Self::connected(socket.connect(addr)).await
    }

    /// The connection once `connecting` (however it was set up) is through; a hub
    /// that does not accept within `WAIT` fails the test here, saying which it was.
    async fn connected(connecting: impl Future<Output = std::io::Result<TcpStream>>) -> Self {
        let stream = tokio::time::timeout(WAIT, connecting)
            .await
            .expect("connect in time")
            .expect("the hub accepts TCP connections");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("the request can be written");
    }

    /// Writes `GET target HTTP/1.1` with `Host` and the given extra headers.
    pub async fn send_get(&mut self, target: &str, headers: &[(&str, &str)]) {
        let mut req = format!("GET {target} HTTP/1.1\r\nHost: hubbub.test\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.write(req.as_bytes()).await;
    }

    /// Reads the response head (within [`WAIT`]); body bytes read with it stay
    /// buffered for [`RawConn::read_body_until`].
    pub async fn read_head(&mut self) -> RawHead {
        let deadline = Instant::now() + WAIT;
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            assert!(
                self.read_more(deadline).await > 0,
                "the connection closed before a full response head; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        RawHead { status, headers }
    }

    /// Reads (within [`WAIT`]) until the buffered bytes contain `needle`; returns
    /// everything buffered, which stays buffered. Raw bytes, chunk framing included.
    pub async fn read_until(&mut self, needle: &[u8]) -> &[u8] {
        let deadline = Instant::now() + WAIT;
        while find(&self.buf, needle).is_none() {
            assert!(
                self.read_more(deadline).await > 0,
                "the connection closed before {:?} arrived; got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&self.buf)
            );
        }
        &self.buf
    }

    /// Reads and discards (within [`WAIT`]) until `needle` went by, keeping
    /// only a needle's length of bytes buffered: for streams too long to keep.
    pub async fn skip_until(&mut self, needle: &[u8]) {
        let deadline = Instant::now() + WAIT;
        while find(&self.buf, needle).is_none() {
            let keep = needle.len().saturating_sub(1);
            let cut = self.buf.len().saturating_sub(keep);
            self.buf.drain(..cut);
            assert!(
                self.read_more(deadline).await > 0,
                "the connection closed before {:?} arrived",
                String::from_utf8_lossy(needle)
            );
        }
        self.buf.clear();
    }

    /// Reads and discards until the server closes the connection or ends a
    /// chunked body (`0\r\n\r\n`). False if neither happened within `timeout`.
    pub async fn drain_until_end(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.ends_with(b"\r\n0\r\n\r\n") || self.buf.starts_with(b"0\r\n\r\n") {
                return true;
            }
            // Keep just enough to recognize the terminal chunk across reads.
            let keep = self.buf.len().saturating_sub(16);
            self.buf.drain(..keep);
            let mut chunk = [0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads everything until the server closes the connection (within [`WAIT`]).
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        while self.read_more(deadline).await > 0 {}
        std::mem::take(&mut self.buf)
    }

    /// Like [`RawConn::read_to_close`], but a reset (or any read error) is
    /// returned instead of passing for a close: what the server sends before
    /// resetting may never reach a real client.
    pub async fn try_read_to_close(&mut self) -> std::io::Result<Vec<u8>> {
        let deadline = Instant::now() + WAIT;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!(
                    "the hub neither closed nor reset in time; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(Ok(0)) => return Ok(std::mem::take(&mut self.buf)),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// Sends `body` one byte every `gap` (a client trickling its request)
    /// while watching for an answer. Returns the response head as soon as one
    /// arrived; None if `limit` passed or the connection ended without a head.
    /// A failed write ends the trickle (the server may have answered and
    /// closed already).
    pub async fn trickle(
        &mut self,
        body: &[u8],
        gap: Duration,
        limit: Duration,
    ) -> Option<RawHead> {
        let deadline = Instant::now() + limit;
        let mut rest = body;
        let mut chunk = [0u8; 16 * 1024];
        while find(&self.buf, b"\r\n\r\n").is_none() {
            let write_at = Instant::now() + gap;
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return None,
                r = self.stream.read(&mut chunk) => match r {
                    Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                    _ => break,
                },
                _ = tokio::time::sleep_until(write_at), if !rest.is_empty() => {
                    if self.stream.write_all(&rest[..1]).await.is_err() {
                        break;
                    }
                    rest = &rest[1..];
                }
            }
        }
        find(&self.buf, b"\r\n\r\n")?;
        Some(self.read_head().await)
    }

    /// Reads once; 0 on close or error. Panics at the deadline.
    async fn read_more(&mut self, deadline: Instant) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Err(_) => panic!(
                "no data or close from the hub in time; got {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Ok(Err(_)) => 0,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
