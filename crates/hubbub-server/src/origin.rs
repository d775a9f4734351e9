//! `public_urls`: the origins the hub answers on.
//!
//! The hub's identity on a request (the resource identifier a 1.0 token's
//! `aud` must hold, the RFC 9728 metadata it advertises, the base relative URL
//! Patterns resolve against) is derived from `Host` and `X-Forwarded-Proto`,
//! and both are whatever the client sends. On a catch-all listener that lets a
//! client pick the audience the hub checks: a token minted for another
//! service that happens to live on a host name the attacker can route here
//! would be accepted. With an allowlist, a request whose origin is not listed
//! is refused with 421 Misdirected Request (RFC 9110, 15.5.20) before any
//! identity is derived, and a listed one's identity comes from the list: the
//! scheme is the listed one, not the forgeable `X-Forwarded-Proto` (consulted
//! only to choose between two listed schemes of one host). So the identities
//! the hub can take are exactly the listed URLs' hub paths.
//!
//! The guard works by normalizing the request's origin headers (`Host`,
//! `X-Forwarded-Proto`, minus the other forwarding headers) to the listed
//! origin, so every later derivation (`oauth::resource`, the subscribe base
//! URL, the metadata URL) reads the pinned values and cannot diverge from it.

use std::str::FromStr;

use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use thiserror::Error;

/// Why a `public_urls` entry was refused (at start-up or reload).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PublicUrlError {
    #[error("{url:?} is not an absolute URL ({reason})")]
    NotAbsolute { url: String, reason: String },
    #[error("{0:?}: the scheme must be http or https")]
    Scheme(String),
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error(
        "{0:?}: only a scheme, a host and a port are allowed (no user, no path beyond /, no query, no fragment)"
    )]
    NotAnOrigin(String),
}

/// One listed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PublicOrigin {
    https: bool,
    /// Lower case; an IPv6 address in brackets.
    host: String,
    /// Explicit, or the scheme's default.
    port: u16,
    /// `host[:port]`, the port only when not the scheme's default.
    authority: String,
}

impl PublicOrigin {
    fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// Rewrites the request's origin headers to this origin (see the module docs).
    fn pin(&self, headers: &mut HeaderMap) {
        for name in ["forwarded", "x-forwarded-host", "x-forwarded-port"] {
            headers.remove(name);
        }
        if let Ok(host) = HeaderValue::from_str(&self.authority) {
            headers.insert(header::HOST, host);
        }
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(self.scheme()),
        );
    }
}

/// The parsed `public_urls` (empty: every origin is answered, as before).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicUrls(Vec<PublicOrigin>);

impl PublicUrls {
    /// Validates every entry: an absolute `http` or `https` URL with a host
    /// and nothing past its origin but an optional `/`.
    pub fn parse(entries: &[String]) -> Result<Self, PublicUrlError> {
        entries
            .iter()
            .map(|e| parse_entry(e))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Pins the request's origin headers to the listed origin it is for;
    /// false (headers untouched) if it is for none.
    pub fn pin(&self, headers: &mut HeaderMap, uri: &Uri) -> bool {
        match self.resolve(headers, uri).cloned() {
            Some(origin) => {
                origin.pin(headers);
                true
            }
            None => false,
        }
    }

    /// The listed origin this request is for, None if it is for none.
    /// The authority is the request target's (absolute form) or `Host`.
    fn resolve(&self, headers: &HeaderMap, uri: &Uri) -> Option<&PublicOrigin> {
        let raw = match uri.authority() {
            Some(a) => a.as_str(),
            None => headers.get(header::HOST)?.to_str().ok()?,
        };
        if raw.contains('@') {
            return None;
        }
        let authority = Authority::from_str(raw).ok()?;
        let host = authority.host().to_ascii_lowercase();
        let port = authority.port_u16();
        let mut candidates = self
            .0
            .iter()
            .filter(|o| o.host == host && port.unwrap_or(if o.https { 443 } else { 80 }) == o.port);
        let first = candidates.next()?;
        let Some(second) = candidates.next() else {
            // One scheme listed for this authority: it is pinned.
            return Some(first);
        };
        // Both schemes listed: the proxy's word picks one of them.
        let https = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
        [first, second].into_iter().find(|o| o.https == https)
    }
}

fn parse_entry(raw: &str) -> Result<PublicOrigin, PublicUrlError> {
    let url = url::Url::parse(raw).map_err(|e| PublicUrlError::NotAbsolute {
        url: raw.to_owned(),
        reason: e.to_string(),
    })?;
    let https = match url.scheme() {
        "https" => true,
        "http" => false,
        _ => return Err(PublicUrlError::Scheme(raw.to_owned())),
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| PublicUrlError::NoHost(raw.to_owned()))?;
    if !url.username().is_empty()
        || url.password().is_some()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(PublicUrlError::NotAnOrigin(raw.to_owned()));
    }
    let port = url
        .port_or_known_default()
        .unwrap_or(if https { 443 } else { 80 });
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    Ok(PublicOrigin {
        https,
        host: host.to_ascii_lowercase(),
        port,
        authority,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(entries: &[&str]) -> PublicUrls {
        PublicUrls::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn headers(host: &str, proto: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(p) = proto {
            h.insert("x-forwarded-proto", p.parse().unwrap());
        }
        h
    }

    fn resolved(list: &PublicUrls, host: &str, proto: Option<&str>) -> Option<String> {
        let uri = Uri::from_static("/.well-known/mercure");
        let o = list.resolve(&headers(host, proto), &uri)?;
        Some(format!("{}://{}", o.scheme(), o.authority))
    }

    #[test]
    fn entries_are_validated() {
        for bad in [
            "hub.example",
            "/relative",
            "ftp://hub.example",
            "https://hub.example/path",
            "https://hub.example/?q",
            "https://hub.example/#f",
            "https://user@hub.example",
            "https://user:pw@hub.example",
            "file:///etc",
            "",
        ] {
            assert!(
                PublicUrls::parse(&[bad.to_string()]).is_err(),
                "{bad:?} accepted"
            );
        }
        let ok = urls(&["HTTPS://Hub.Example:443/", "http://[::1]:8080", "http://h"]);
        assert_eq!(ok.0[0].authority, "hub.example");
        assert_eq!(ok.0[0].port, 443);
        assert_eq!(ok.0[1].authority, "[::1]:8080");
        assert_eq!(ok.0[2].port, 80);
    }

    #[test]
    fn listed_origins_resolve_with_their_scheme_pinned() {
        let list = urls(&["https://hub.example", "http://dev.example:8080"]);
        let hub = Some("https://hub.example".to_owned());
        assert_eq!(resolved(&list, "hub.example", None), hub);
        assert_eq!(resolved(&list, "HUB.example:443", Some("http")), hub);
        assert_eq!(
            resolved(&list, "dev.example:8080", Some("https")).as_deref(),
            Some("http://dev.example:8080"),
            "a forged X-Forwarded-Proto does not change a pinned scheme"
        );
        for unlisted in [
            "evil.example",
            "hub.example:80",
            "hub.example:8443",
            "dev.example",
            "user@hub.example",
            "hub.example.",
        ] {
            assert_eq!(resolved(&list, unlisted, None), None, "{unlisted}");
        }
        let none = list.resolve(&HeaderMap::new(), &Uri::from_static("/x"));
        assert!(none.is_none(), "no Host");
        let absolute = Uri::from_static("http://dev.example:8080/.well-known/mercure");
        let o = list.resolve(&headers("evil.example", None), &absolute);
        assert_eq!(o.map(|o| o.authority.as_str()), Some("dev.example:8080"));
    }

    #[test]
    fn both_schemes_listed_let_the_proxy_choose() {
        let list = urls(&["http://hub.example", "https://hub.example"]);
        let got = |proto| resolved(&list, "hub.example", proto);
        assert_eq!(got(None).as_deref(), Some("http://hub.example"));
        assert_eq!(got(Some("https")).as_deref(), Some("https://hub.example"));
        assert_eq!(
            got(Some("HTTPS, http")).as_deref(),
            Some("https://hub.example")
        );
    }

    /// The pin is what `oauth::resource` and the metadata URL read: the
    /// derived identity is the listed URL's hub path, whatever was forged.
    #[test]
    fn pinned_headers_make_the_listed_identity() {
        let list = urls(&["https://hub.example"]);
        let mut h = headers("hub.example", Some("http"));
        h.insert("x-forwarded-host", "evil.example".parse().unwrap());
        h.insert("forwarded", "host=evil.example;proto=http".parse().unwrap());
        let uri = Uri::from_static("/.well-known/mercure");
        list.resolve(&h, &uri).unwrap().clone().pin(&mut h);
        assert_eq!(
            crate::oauth::resource(None, &h).as_deref(),
            Some("https://hub.example/.well-known/mercure")
        );
        assert!(h.get("x-forwarded-host").is_none() && h.get("forwarded").is_none());
    }
}
