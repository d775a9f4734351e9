//! `POST /.well-known/mercure`: authorize, limit, parse the form, validate,
//! hand the update to the hub, answer with its id.

use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Collected, Limited};
use hubbub_proto::update::UpdateError;
use hubbub_proto::{Selector, Update};

use crate::auth::{AuthError, Role, TokenSource};
use crate::config::LimitSettings;
use crate::connection::Peer;
use crate::error::ApiError;
use crate::metrics::Rejection;
use crate::state::SharedState;

pub async fn publish(
    State(state): State<SharedState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    match handle(&state, peer, &headers, &uri, body).await {
        Ok(id) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], id).into_response(),
        Err(err) => {
            let metadata = state.settings.load().auth.metadata_url(&headers);
            state
                .reject(err.resource_metadata(metadata))
                .into_response()
        }
    }
}

async fn handle(
    state: &SharedState,
    peer: Peer,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
) -> Result<String, ApiError> {
    let settings = state.settings.load_full();
    let limits = &settings.limits;
    let max_body = limits.max_body_bytes;
    if content_length(headers).is_some_and(|len| len > max_body) {
        return Err(too_large(max_body));
    }

    let query_token = query_param(uri, "authorization");
    let auth = &settings.auth;
    let (token, source) = auth
        .present(headers, query_token.as_deref())
        .and_then(|found| found.ok_or(AuthError::Missing))
        .map_err(|e| ApiError::auth(&e, "publishing requires a JWT"))?;
    let granted = auth
        .authorize(Role::Publisher, &token, headers, |s| state.selector(s))
        .await
        .map_err(|e| ApiError::auth(&e, ""))?;
    let allowed = match granted.publish {
        Some(list) if !(granted.v1 && list.is_empty()) => list,
        Some(_) => {
            return Err(ApiError::insufficient_scope(
                "the token grants no publish action",
            ));
        }
        None => return Err(ApiError::auth(&AuthError::NoPublishClaim, "")),
    };
    if source == TokenSource::Cookie && !origin_allowed(headers, &settings.publish_origins) {
        return Err(ApiError::new(
            Rejection::Forbidden,
            "cookie-authenticated publishing needs an Origin listed in publish_origins",
        ));
    }
    rate_limit(state, limits, &token, peer)?;

    let form = read_body(body, max_body, limits.request_timeout).await?;
    check_content_type(headers)?;
    let update = parse_form(&form, limits.max_topics)?;
    check_topic_lengths(&update.topics, limits.max_topic_bytes, "topic").map_err(|e| ApiError {
        reason: Rejection::OverLimit,
        ..e
    })?;
    if let Some(topic) = update
        .topics
        .iter()
        .find(|t| !allowed.iter().any(|sel| sel.matches(t)))
    {
        return Err(ApiError::insufficient_scope(format!(
            "the token does not grant publishing on topic {topic:?}"
        )));
    }
    state.publish(update).await
}

/// Reads the whole body, at most `max` bytes, within `timeout`: the head was
/// bounded by the header read timeout, but a body trickled a byte at a time
/// would otherwise hold the connection (and this task) for as long as the
/// client likes.
pub(crate) async fn read_body(
    body: Body,
    max: usize,
    timeout: Option<Duration>,
) -> Result<Bytes, ApiError> {
    let read = Limited::new(body, max).collect();
    let collected = match timeout {
        Some(limit) => tokio::time::timeout(limit, read).await.map_err(|_| {
            ApiError::new(
                Rejection::RequestTimeout,
                format!("the body did not arrive within {limit:?} (request_timeout)"),
            )
        })?,
        None => read.await,
    };
    collected.map(Collected::to_bytes).map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            too_large(max)
        } else {
            ApiError::new(Rejection::BadRequest, format!("cannot read the body: {e}"))
        }
    })
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        Rejection::BodyTooLarge,
        format!("the body exceeds {max} bytes"),
    )
}

pub(crate) fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Ok(())
    } else {
        Err(ApiError::new(
            Rejection::BadRequest,
            format!("the body must be application/x-www-form-urlencoded, not {ct:?}"),
        ))
    }
}

/// The client's own bucket (keyed by its token) and the hub-wide one.
fn rate_limit(
    state: &SharedState,
    limits: &LimitSettings,
    token: &str,
    peer: Peer,
) -> Result<(), ApiError> {
    let now = Instant::now();
    let limited = |wait| {
        ApiError::new(
            Rejection::RateLimited,
            "publish rate limit exceeded; retry later",
        )
        .retry_after(wait)
    };
    if let Some((rate, burst)) = limits.publish_rate {
        let key = if token.is_empty() {
            peer.0.ip().to_string()
        } else {
            token.to_owned()
        };
        state
            .client_limiter
            .check(key, rate, burst, now)
            .map_err(limited)?;
    }
    if let Some((rate, burst)) = limits.global_publish_rate {
        state
            .global_limiter
            .check((), rate, burst, now)
            .map_err(limited)?;
    }
    Ok(())
}

/// A cookie rides along with any cross-site form post, so only listed origins may
/// publish with one (CSRF guard). `Referer` stands in when `Origin` is absent.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let origin = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    allowed
        .iter()
        .any(|a| a == "*" || origin == a || origin.starts_with(&format!("{a}/")))
}

pub(crate) fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Parses the publish form. Unknown fields are ignored, as in the reference hub.
pub(crate) fn parse_form(body: &[u8], max_topics: usize) -> Result<Update, ApiError> {
    let mut update = Update {
        id: String::new(),
        topics: Vec::new(),
        data: String::new(),
        private: false,
        event_type: None,
        retry: None,
    };
    let mut id = None;
    for (key, value) in form_urlencoded::parse(body) {
        match &*key {
            "topic" => update.topics.push(value.into_owned()),
            "data" => update.data = value.into_owned(),
            "private" => update.private = true,
            "id" => id = Some(value.into_owned()),
            "type" => update.event_type = Some(value.into_owned()),
            "retry" => {
                // Only ASCII digits (draft-08): `parse` alone would take "+5".
                let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
                let retry: u64 = value.parse().ok().filter(|_| digits).ok_or_else(|| {
                    ApiError::new(
                        Rejection::BadRequest,
                        format!("invalid \"retry\" {value:?}: expected an unsigned integer"),
                    )
                })?;
                update.retry = (retry > 0).then_some(retry);
            }
            _ => {}
        }
    }
    update.id = id.unwrap_or_else(|| format!("urn:uuid:{}", uuid::Uuid::now_v7()));
    check_topic_text(&update.topics, "topic")?;
    update.validate(max_topics).map_err(|e| {
        // Draft-08: a limit exceeded is 413; every other rule (the reserved
        // namespace and `*` included, whatever the token) is 400.
        let reason = match e {
            UpdateError::TooManyTopics { .. } => Rejection::OverLimit,
            _ => Rejection::BadRequest,
        };
        ApiError::new(reason, e.to_string())
    })?;
    Ok(update)
}

/// A topic (or a subscribe selector) is one line of text: an empty one matches
/// nothing useful, and CR, LF or NUL would let it break out of a log line or
/// of a frame that quotes it. `what` names the parameter in the message.
pub(crate) fn check_topic_text(topics: &[String], what: &str) -> Result<(), ApiError> {
    let bad = |i: usize, reason: &str| {
        let n = topics.len();
        ApiError::new(
            Rejection::BadRequest,
            format!("invalid {what} ({} of {n}): {reason}", i + 1),
        )
    };
    for (i, topic) in topics.iter().enumerate() {
        if topic.is_empty() {
            return Err(bad(i, "must not be empty"));
        }
        if topic.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(bad(i, "must not contain CR, LF or NUL"));
        }
    }
    Ok(())
}

/// Topics and selectors are bounded in length: a template's matching cost
/// grows with the topic's length, and both are held for as long as a
/// subscription or the history keeps them.
pub(crate) fn check_topic_lengths(
    topics: &[String],
    max: usize,
    what: &str,
) -> Result<(), ApiError> {
    match topics.iter().position(|t| t.len() > max) {
        Some(i) => Err(ApiError::new(
            Rejection::BadRequest,
            format!(
                "invalid {what} ({} of {}): longer than {max} bytes (max_topic_bytes)",
                i + 1,
                topics.len()
            ),
        )),
        None => Ok(()),
    }
}

/// A subscriber's template may compile to at most `max` states: matching it
/// costs up to that many steps per byte of every topic published.
pub(crate) fn check_template_states(selectors: &[Selector], max: usize) -> Result<(), ApiError> {
    match selectors.iter().find(|s| s.states() > max) {
        Some(s) => Err(ApiError::new(
            Rejection::BadRequest,
            format!(
                "URI template too complex: {} matcher states, at most {max} (max_template_states)",
                s.states()
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields() {
        let u = parse_form(
            b"topic=a&topic=b&data=x%0Ay&private=on&id=i&type=t&retry=5&other=1",
            10,
        )
        .unwrap();
        assert_eq!(u.topics, ["a", "b"]);
        assert_eq!(u.data, "x\ny");
        assert!(u.private);
        assert_eq!(
            (u.id.as_str(), u.event_type.as_deref(), u.retry),
            ("i", Some("t"), Some(5))
        );
        let generated = parse_form(b"topic=a", 10).unwrap();
        assert!(generated.id.starts_with("urn:uuid:"), "{}", generated.id);
    }

    #[test]
    fn form_errors() {
        for (body, status) in [
            (&b"data=x"[..], 400),
            (b"topic=a&retry=-1", 400),
            (b"topic=a&id=%23x", 400),
            (b"topic=a&type=a%0Ab", 400),
            (b"topic=a&type=mercure", 400),
            (b"topic=a&retry=%2B5", 400),
            (b"topic=a&retry=", 400),
            (b"topic=a&id=earliest", 400),
            (b"topic=a&id=a%E2%80%8Bb", 400),
            (b"topic=a%09b", 400),
            (b"topic=a&topic=b&topic=c", 413),
            (b"topic=*", 400),
            (b"topic=a&topic=*", 400),
            (b"topic=%2F.well-known%2F%256Dercure%2Fx", 400),
            (b"topic=", 400),
            (b"topic=a&topic=", 400),
            (b"topic=a%0Db", 400),
            (b"topic=a%0A", 400),
            (b"topic=a%00", 400),
            (b"topic=/.well-known/mercure/x", 400),
        ] {
            let err = parse_form(body, 2).unwrap_err();
            assert_eq!(
                err.status().as_u16(),
                status,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
