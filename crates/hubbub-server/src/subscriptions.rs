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
use crate::presence::event::{MatchType, PREFIX, encode};
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
    // What the path names: a collection (by topic prefixes) or one subscription
    // (by the topics it may have: a 0.x path does not say its matcher type).
    const TYPES: [MatchType; 3] = [MatchType::Exact, MatchType::Template, MatchType::UrlPattern];
    let per_type = |matcher: &str, tail: &str| -> Vec<String> {
        TYPES
            .iter()
            .map(|t| format!("{PREFIX}/{}/{}/{tail}", t.as_str(), encode(matcher)))
            .collect()
    };
    let wanted = match (v1, segments.as_slice()) {
        (_, []) => Wanted::Collection(vec![String::new()]),
        (true, [t, m]) if kind(t).is_some() => {
            Wanted::Collection(vec![format!("{PREFIX}/{t}/{}/", encode(m))])
        }
        (true, [t, m, s]) if kind(t).is_some() => {
            Wanted::One(vec![format!("{PREFIX}/{t}/{}/{}", encode(m), encode(s))])
        }
        (false, [topic]) => Wanted::Collection(per_type(topic, "")),
        (false, [topic, subscriber]) => Wanted::One(per_type(topic, &encode(subscriber))),
        _ => Wanted::One(Vec::new()),
    };
    let body = match wanted {
        Wanted::Collection(prefixes) => {
            let (list, cursor) = presence.snapshot(&prefixes).await;
            return Ok(collection(&path, &list, &cursor, v1, link(&cursor)));
        }
        Wanted::One(topics) => {
            let (entry, cursor) = presence.get(&topics).await;
            entry.map(|e| {
                let doc = if v1 {
                    e.tracked.document(true)
                } else {
                    e.tracked.document_v0(true, true)
                };
                (doc, cursor)
            })
        }
    };
    let (doc, cursor) = body.ok_or_else(|| not_found("no such active subscription"))?;
    Ok(document(&doc, v1, link(&cursor)))
}

/// What a path names: a collection (the subscriptions under these topic
/// prefixes) or one subscription (the first of these topics held).
enum Wanted {
    Collection(Vec<String>),
    One(Vec<String>),
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
    let query_token = crate::subscribe::query_authorization(uri);
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

/// 1.0 answers are plain JSON, 0.x ones JSON-LD.
fn media(v1: bool) -> &'static str {
    if v1 {
        "application/json"
    } else {
        "application/ld+json"
    }
}

fn document(doc: &Value, v1: bool, mut headers: HeaderMap) -> Response {
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media(v1)));
    (StatusCode::OK, headers, doc.to_string()).into_response()
}

/// `Link` (the cursor as `last-event-id`, draft-08), `ETag` and
/// `Cache-Control: must-revalidate` (the data is volatile).
fn cursor_headers(request: &HeaderMap, cursor: &str, v1: bool) -> HeaderMap {
    let hub = crate::subscribe::hub_url(request);
    let quoted = cursor.replace('\\', "\\\\").replace('"', "\\\"");
    let media = media(v1);
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
