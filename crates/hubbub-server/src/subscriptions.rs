//! The subscriptions API (Mercure "Active Subscriptions"): `GET` under
//! `/.well-known/mercure/subscriptions`, answered from this node's table,
//! which on a cluster lists the subscriptions of every node.
//!
//! Shapes, by the token's generation:
//! - 1.0 (`application/json`): `/subscriptions`, `/subscriptions/{match_type}/{match}`,
//!   `/subscriptions/{match_type}/{match}/{subscriber}`;
//! - 0.x (`compat_0x`, `application/ld+json`): `/subscriptions`,
//!   `/subscriptions/{topic}`, `/subscriptions/{topic}/{subscriber}`.
//!
//! Every answer carries the cursor (`Link: <hub>; rel="mercure";
//! last-event-id="…"`, `ETag`, and `lastEventID` in collections): subscribe
//! to the events with `last_event_id` set to it and no change is missed or
//! seen twice. Authorization: the token must grant `subscribe` on the
//! request's path, normalized (each segment decoded and encoded once), as a
//! topic, exactly as for the events of the same subscriptions.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::{AuthError, Role};
use crate::error::ApiError;
use crate::metrics::Rejection;
use crate::presence::event::{MatchType, PREFIX, Tracked, encode};
use crate::presence::table::Entry;
use crate::state::SharedState;

/// Longest path this API reads (a matcher and a subscriber, encoded).
const MAX_PATH_BYTES: usize = 16 * 1024;

pub async fn get(State(state): State<SharedState>, headers: HeaderMap, uri: Uri) -> Response {
    match answer(&state, &headers, &uri).await {
        Ok(r) => r,
        Err(e) => state.reject(e).into_response(),
    }
}

async fn answer(state: &SharedState, headers: &HeaderMap, uri: &Uri) -> Result<Response, ApiError> {
    let not_found = |m: &str| ApiError::new(Rejection::NotFound, m.to_owned());
    if !state.presence.enabled() {
        return Err(not_found(
            "active subscriptions are off on this hub (the subscriptions option)",
        ));
    }
    let raw = uri.path();
    if raw.len() > MAX_PATH_BYTES {
        return Err(ApiError::new(Rejection::BadRequest, "path too long"));
    }
    let segments = segments(raw).ok_or_else(|| {
        ApiError::new(
            Rejection::BadRequest,
            "a path segment is not valid percent-encoded UTF-8",
        )
    })?;
    // The canonical relative form: what grants are matched against.
    let path = std::iter::once(PREFIX.to_owned())
        .chain(segments.iter().map(|s| encode(s)))
        .collect::<Vec<_>>()
        .join("/");
    let v1 = authorize(state, headers, uri, &path).await?;
    let presence = &state.presence;
    let link = |cursor: &str| cursor_headers(headers, cursor, v1);
    let kind = |s: &str| MatchType::parse(s);
    let body = match (v1, segments.as_slice()) {
        (_, []) => {
            let (list, cursor) = presence.snapshot("").await;
            return Ok(collection(&path, &list, &cursor, v1, link(&cursor)));
        }
        (true, [t, m]) if kind(t).is_some() => {
            let prefix = format!("{PREFIX}/{t}/{}/", encode(m));
            let (list, cursor) = presence.snapshot(&prefix).await;
            return Ok(collection(&path, &list, &cursor, true, link(&cursor)));
        }
        (true, [t, m, s]) if kind(t).is_some() => {
            let topic = format!("{PREFIX}/{t}/{}/{}", encode(m), encode(s));
            let (entry, cursor) = presence.get(&topic).await;
            entry.map(|e| (e.tracked.document(true), cursor))
        }
        (false, [topic]) => {
            let mut list = Vec::new();
            let mut cursor = String::new();
            for t in [MatchType::Exact, MatchType::Template, MatchType::UrlPattern] {
                let prefix = format!("{PREFIX}/{}/{}/", t.as_str(), encode(topic));
                let (part, c) = presence.snapshot(&prefix).await;
                list.extend(part);
                cursor = c;
            }
            return Ok(collection(&path, &list, &cursor, false, link(&cursor)));
        }
        (false, [topic, subscriber]) => {
            let mut found = None;
            for t in [MatchType::Exact, MatchType::Template, MatchType::UrlPattern] {
                let tracked = Tracked {
                    match_type: t,
                    matcher: topic.clone(),
                    subscriber: subscriber.clone(),
                    payload: None,
                };
                let (entry, cursor) = presence.get(&tracked.topic()).await;
                if let Some(e) = entry {
                    found = Some((e.tracked.document_v0(true, true), cursor));
                    break;
                }
            }
            found
        }
        _ => None,
    };
    let (doc, cursor) = body.ok_or_else(|| not_found("no such active subscription"))?;
    Ok(document(&doc, v1, link(&cursor)))
}

/// The path's segments after the prefix, percent-decoded (`None`: bad encoding).
fn segments(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix(PREFIX)?;
    rest.split('/')
        .skip(1)
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned())
        })
        .collect()
}

/// The token must grant `subscribe` on `path` (as a topic). Returns whether
/// it is a 1.0 token (the answer's generation).
async fn authorize(
    state: &SharedState,
    headers: &HeaderMap,
    uri: &Uri,
    path: &str,
) -> Result<bool, ApiError> {
    let settings = state.settings.load_full();
    let auth = &settings.auth;
    let query_token = uri.query().and_then(|q| {
        form_urlencoded_pairs(q).find_map(|(k, v)| (k == "authorization").then_some(v))
    });
    let metadata = auth.metadata_url(headers);
    let found = auth
        .present(headers, query_token.as_deref())
        .map_err(|e| ApiError::auth(&e, "").resource_metadata(metadata.clone()))?;
    let Some((token, _)) = found else {
        return Err(ApiError::auth(
            &AuthError::Missing,
            "the subscriptions API needs a token granting subscribe on this path",
        )
        .resource_metadata(metadata));
    };
    let granted = auth
        .authorize(Role::Subscriber, &token, headers, |s| state.selector(s))
        .await
        .map_err(|e| ApiError::auth(&e, "").resource_metadata(metadata.clone()))?;
    let allowed = granted
        .subscribe
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|s| s.matches(path));
    if !allowed {
        return Err(ApiError::insufficient_scope(format!(
            "the token does not grant subscribe on {path}"
        ))
        .resource_metadata(metadata));
    }
    Ok(granted.v1)
}

fn form_urlencoded_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        Some((dec(k), dec(v)))
    })
}

fn collection(path: &str, list: &[Entry], cursor: &str, v1: bool, headers: HeaderMap) -> Response {
    let doc = if v1 {
        json!({
            "id": path,
            "type": "subscriptions",
            "lastEventID": cursor,
            "subscriptions": list.iter().map(|e| e.tracked.document(true)).collect::<Vec<_>>(),
        })
    } else {
        json!({
            "@context": "https://mercure.rocks/",
            "id": path,
            "type": "Subscriptions",
            "lastEventID": cursor,
            "subscriptions": list.iter().map(|e| e.tracked.document_v0(true, false)).collect::<Vec<_>>(),
        })
    };
    document(&doc, v1, headers)
}

fn document(doc: &Value, v1: bool, mut headers: HeaderMap) -> Response {
    let media = if v1 {
        "application/json"
    } else {
        "application/ld+json"
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    (StatusCode::OK, headers, doc.to_string()).into_response()
}

/// `Link` (the cursor as `last-event-id`, draft-08), `ETag` and
/// `Cache-Control: must-revalidate` (the data is volatile).
fn cursor_headers(request: &HeaderMap, cursor: &str, v1: bool) -> HeaderMap {
    let hub = crate::subscribe::hub_url(request);
    let quoted = cursor.replace('\\', "\\\\").replace('"', "\\\"");
    let media = if v1 {
        "application/json"
    } else {
        "application/ld+json"
    };
    let mut h = HeaderMap::new();
    let link = format!(
        "<{hub}>; rel=\"mercure\"; last-event-id=\"{quoted}\"; type=\"mercure\"; content-type=\"{media}\""
    );
    if let Ok(v) = HeaderValue::from_str(&link) {
        h.insert(header::LINK, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{quoted}\"")) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("must-revalidate"),
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_decoded_once() {
        assert_eq!(segments(PREFIX), Some(vec![]));
        assert_eq!(
            segments(&format!(
                "{PREFIX}/exact/https%3A%2F%2Fa%2Fb%2520c/urn%3Auuid%3A1"
            )),
            Some(vec![
                "exact".to_owned(),
                "https://a/b%20c".to_owned(),
                "urn:uuid:1".to_owned()
            ])
        );
        assert_eq!(segments(&format!("{PREFIX}/%FF")), None);
    }
}
