//! Plain HTTP helpers over reqwest: a client without connection reuse (so a
//! test controls exactly which connections exist), publishing, URL building.

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};

use crate::WAIT;

/// A client that opens a fresh connection per request and ignores proxy settings.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("a plain HTTP client builds")
}

/// A whole (non-streaming) response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl HttpResponse {
    /// The header's value, if present and ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `request` and reads the whole body; panics on a transport error or
/// when the response takes longer than [`WAIT`].
pub async fn send(request: RequestBuilder) -> HttpResponse {
    let exchange = async {
        let response = request.send().await.expect("the request reaches the hub");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.expect("the body can be read");
        HttpResponse {
            status,
            headers,
            body,
        }
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("the hub answers in time")
}

/// `GET url`.
pub async fn get(url: &str) -> HttpResponse {
    send(client().get(url)).await
}

/// POSTs `form` (urlencoded) to `url` with `Authorization: Bearer <token>`;
/// an empty `token` sends no `Authorization` header.
pub async fn publish(url: &str, token: &str, form: &[(&str, &str)]) -> HttpResponse {
    let mut request = client().post(url).form(form);
    if !token.is_empty() {
        request = request.bearer_auth(token);
    }
    send(request).await
}

/// `application/x-www-form-urlencoded` encoding of `pairs` (space as `%20`).
pub fn encode_form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The subscribe URL for `topics` on the hub at `hub_url`.
pub fn subscribe_url(hub_url: &str, topics: &[&str]) -> String {
    let pairs: Vec<(&str, &str)> = topics.iter().map(|t| ("topic", *t)).collect();
    format!("{hub_url}?{}", encode_form(&pairs))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            subscribe_url("http://h/m", &["https://a/{id}", "b c"]),
            "http://h/m?topic=https%3A%2F%2Fa%2F%7Bid%7D&topic=b%20c"
        );
        assert_eq!(encode_form(&[("data", "a\nb&")]), "data=a%0Ab%26");
    }
}
