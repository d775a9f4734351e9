//! Just enough HTTP/1.1 for a JSON API: request line, headers, a
//! Content-Length body, keep-alive. Clients: toxiproxy-cli, the client
//! libraries (requests, Go's net/http, ...), curl.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;

pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

pub struct Response {
    pub status: u16,
    pub body: Option<String>,
    pub content_type: &'static str,
}

impl Response {
    pub fn json(status: u16, v: &serde_json::Value) -> Self {
        Response {
            status,
            body: Some(format!("{v}\n")),
            content_type: "application/json",
        }
    }

    pub fn empty(status: u16) -> Self {
        Response {
            status,
            body: None,
            content_type: "application/json",
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

pub async fn serve<H>(listener: TcpListener, handler: Arc<H>)
where
    H: Fn(Request) -> Response + Send + Sync + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let h = handler.clone();
                tokio::spawn(async move {
                    let _ = connection(stream, h).await;
                });
            }
            Err(e) => {
                eprintln!("chaosproxy: api accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection<H>(stream: TcpStream, handler: Arc<H>) -> std::io::Result<()>
where
    H: Fn(Request) -> Response + Send + Sync + 'static,
{
    let _ = stream.set_nodelay(true);
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(120), r.read_line(&mut line))
            .await
            .unwrap_or(Ok(0))?;
        if n == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            continue; // stray CRLF between requests
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let target = parts.next().unwrap_or("/").to_owned();
        let version = parts.next().unwrap_or("HTTP/1.0").to_owned();
        let mut keep_alive = version == "HTTP/1.1";
        let mut length = 0usize;
        let mut chunked = false;
        let mut head = line.len();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await? == 0 {
                return Ok(());
            }
            head += h.len();
            if head > MAX_HEAD {
                return write(r.get_mut(), Response::empty(413), false).await;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                match k.as_str() {
                    "content-length" => length = v.parse().unwrap_or(0),
                    "connection" => {
                        let v = v.to_ascii_lowercase();
                        if v.contains("close") {
                            keep_alive = false;
                        } else if v.contains("keep-alive") {
                            keep_alive = true;
                        }
                    }
                    "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                    _ => {}
                }
            }
        }
        if chunked {
            return write(r.get_mut(), Response::empty(411), false).await;
        }
        if length > MAX_BODY {
            return write(r.get_mut(), Response::empty(413), false).await;
        }
        let mut body = vec![0u8; length];
        r.read_exact(&mut body).await?;
        let path = target.split('?').next().unwrap_or("/").to_owned();
        let resp = handler(Request { method, path, body });
        write(r.get_mut(), resp, keep_alive).await?;
        if !keep_alive {
            return Ok(());
        }
    }
}

async fn write(s: &mut TcpStream, resp: Response, keep_alive: bool) -> std::io::Result<()> {
    let body = resp.body.unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        resp.status,
        reason(resp.status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    if !body.is_empty() {
        out.push_str(&format!("Content-Type: {}\r\n", resp.content_type));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    s.write_all(out.as_bytes()).await?;
    s.flush().await
}
