//! Subscribing: `GET /.well-known/mercure` (parameters in the query) and
//! `QUERY /.well-known/mercure` (draft-08: parameters also in an
//! `application/x-www-form-urlencoded` body, for matcher lists too long for a
//! URL). Either way: authorize, register with the hub (replay included)
//! BEFORE any byte is sent, then stream frames until the hub ends the stream
//! or the client leaves.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream;
use hubbub_core::{CloseReason, Next, Resume, SubscribeError, SubscribeRequest, Subscription};
use hubbub_proto::{OPEN_COMMENT, Selector};
use rand::Rng;

use crate::auth::{AuthError, Role};
use crate::connection::set_static;
use crate::error::ApiError;
use crate::metrics::Rejection;
use crate::presence::event::{MatchType, Tracked};
use crate::state::SharedState;

/// How long a subscription that reaches a node still catching up with the
/// cluster (just started or restarted) is held before 503.
const JOIN_WAIT: Duration = Duration::from_secs(20);

/// The only body media type a `QUERY` subscription accepts (draft-08).
pub const FORM: &str = "application/x-www-form-urlencoded";

/// `GET`: every parameter is in the query.
pub async fn subscribe(State(state): State<SharedState>, headers: HeaderMap, uri: Uri) -> Response {
    let query = parse_query(&uri).map_err(|e| ApiError::new(Rejection::BadRequest, e));
    answer(&state, &headers, query).await
}

/// `QUERY` (RFC 10008): the parameters of the query and of the form body,
/// united (see [`Query::union`]). Everything after the parsing is the `GET`
/// path, so authorization, private updates, limits and resume cannot differ.
pub async fn subscribe_query(
    State(state): State<SharedState>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    let query = query_and_body(&state, &headers, &uri, body).await;
    answer(&state, &headers, query).await
}

async fn query_and_body(
    state: &SharedState,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
) -> Result<Query, ApiError> {
    let bad = |e: String| ApiError::new(Rejection::BadRequest, e);
    // The query is checked first: it is cheap, and its errors say the same
    // as they would on a GET.
    let query = parse_query(uri).map_err(bad)?;
    let limits = state.settings.load().limits.clone();
    let max = limits.max_subscribe_body_bytes;
    if crate::publish::content_length(headers).is_some_and(|len| len > max) {
        return Err(body_too_large(max));
    }
    let content_type = headers.get(header::CONTENT_TYPE);
    if content_type.is_some() && !is_form(headers) {
        return Err(unsupported_media_type(headers));
    }
    let raw = crate::publish::read_body(body, max, limits.request_timeout)
        .await
        .map_err(|e| match e.reason {
            Rejection::BodyTooLarge => body_too_large(max),
            _ => e,
        })?;
    // No body needs no media type; a body without one is not a form.
    if content_type.is_none() && !raw.is_empty() {
        return Err(unsupported_media_type(headers));
    }
    let body = parse_form(&raw).map_err(|e| bad(format!("in the body: {e}")))?;
    Ok(query.union(body))
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case(FORM))
}

fn body_too_large(max: usize) -> ApiError {
    ApiError::new(
        Rejection::BodyTooLarge,
        format!("the subscription body exceeds {max} bytes (max_subscribe_body_bytes)"),
    )
}

/// 415, naming the one type we take in `Accept-Query` (RFC 10008) and
/// `Accept` (RFC 9110, 15.5.16) so a client can correct itself.
fn unsupported_media_type(headers: &HeaderMap) -> ApiError {
    let got = headers
        .get(header::CONTENT_TYPE)
        .map_or("none".into(), |v| {
            format!("{:?}", String::from_utf8_lossy(v.as_bytes()))
        });
    ApiError::new(
        Rejection::UnsupportedMediaType,
        format!("a subscription body must be {FORM}, not {got}"),
    )
}

async fn answer(
    state: &SharedState,
    headers: &HeaderMap,
    query: Result<Query, ApiError>,
) -> Response {
    let result = match query {
        Ok(query) => subscribe_with(state, headers, &query).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(sub) => sse_response(sub, state.settings.load().auth.compat_0x()),
        Err(err) => {
            let metadata = state.settings.load().auth.metadata_url(headers);
            let accept_query = err.reason == Rejection::UnsupportedMediaType;
            let mut response = state
                .reject(err.resource_metadata(metadata))
                .into_response();
            if accept_query {
                let h = response.headers_mut();
                set_static(
                    h,
                    &[
                        (HeaderName::from_static("accept-query"), FORM),
                        (header::ACCEPT, FORM),
                    ],
                );
            }
            response
        }
    }
}

async fn subscribe_with(
    state: &SharedState,
    headers: &HeaderMap,
    query: &Query,
) -> Result<Subscription, ApiError> {
    // A node that is still catching up has an incomplete history: a resume
    // would miss (and then get the catch-up as live updates it already had).
    // Hold the request until the node has joined and delivered what it held.
    if let Some(cluster) = &state.cluster
        && !cluster.has_joined()
    {
        if !cluster.joined(JOIN_WAIT).await {
            return Err(ApiError::new(
                Rejection::NotReady,
                "this node is still catching up with the cluster; retry shortly",
            )
            .retry_after(Duration::from_secs(1)));
        }
        if let (Some(delivered), Some(cfg)) =
            (state.delivered.clone(), &state.settings.load().cluster)
        {
            let limit = cfg.order_wait + Duration::from_millis(250);
            crate::clustering::wait_delivered(delivered, cluster.clock(), limit).await;
        }
    }
    // In a cluster, an id this node does not know yet may be one the client got
    // from another node a moment ago: wait until our delivery has caught up
    // with this instant, then look again (else it would be replayed twice).
    let clock = state.cluster.as_ref().map(|c| c.clock());
    let opened = match open(state, headers, query).await {
        Ok((sub, payload))
            if sub.response_last_event_id() == Some("earliest")
                && matches!(
                    resume(headers, query.last_event_id.clone()),
                    Resume::After(_)
                ) =>
        {
            match (
                clock,
                state.delivered.clone(),
                &state.settings.load().cluster,
            ) {
                (Some(clock), Some(delivered), Some(cluster)) => {
                    drop(sub);
                    let limit = cluster.order_wait + Duration::from_millis(250);
                    crate::clustering::wait_delivered(delivered, clock, limit).await;
                    open(state, headers, query).await
                }
                _ => Ok((sub, payload)),
            }
        }
        other => other,
    };
    let (mut sub, payload) = opened?;
    if state.presence.enabled() {
        sub.attach(state.presence.announce(tracked(query, payload)));
    }
    Ok(sub)
}

/// The subscriptions one connection holds, one per matcher, under a fresh
/// random subscriber id (never anything the client sent: draft-08,
/// "Subscriber Identifier Assignment").
fn tracked(query: &Query, payload: Option<serde_json::Value>) -> Vec<Tracked> {
    let subscriber = format!("urn:uuid:{}", uuid::Uuid::new_v4());
    let payload = payload
        .map(|p| p.to_string())
        .filter(|p| p.len() <= crate::presence::MAX_PAYLOAD_BYTES);
    let one = |match_type, matcher: &str| Tracked {
        match_type,
        matcher: matcher.to_owned(),
        subscriber: subscriber.clone(),
        payload: payload.clone(),
    };
    let v0 = query.topics.iter().map(|t| {
        let kind = if t.contains('{') {
            MatchType::Template
        } else {
            MatchType::Exact
        };
        one(kind, t)
    });
    let v1 = query.matchers.iter().map(|(kind, m)| match kind {
        MatcherType::Exact => one(MatchType::Exact, m),
        MatcherType::UrlPattern => one(MatchType::UrlPattern, m),
    });
    v0.chain(v1).collect()
}

/// A Mercure 1.0 topic matcher type, named by the suffix of its query
/// parameter (`match` alone is `exact`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatcherType {
    Exact,
    UrlPattern,
}

impl MatcherType {
    /// The type a parameter name selects: `None` outside the reserved `match`
    /// namespace, `Some(Err)` for a name inside it that is not one we serve.
    /// Names are case-sensitive, but the namespace is ASCII case-insensitive,
    /// so `Match` or `MATCH_EXACT` are refused rather than silently ignored.
    fn of(name: &str) -> Option<Result<Self, ()>> {
        if !name
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("match"))
        {
            return None;
        }
        Some(match name {
            "match" | "match_exact" => Ok(Self::Exact),
            "match_urlpattern" => Ok(Self::UrlPattern),
            _ => Err(()),
        })
    }
}

#[derive(Debug, Default)]
struct Query {
    /// 0.x `topic=`: an exact topic or an RFC 6570 URI template.
    topics: Vec<String>,
    /// 1.0 `match=` / `match_<type>=`, in request order.
    matchers: Vec<(MatcherType, String)>,
    /// 1.0 `last_event_id`, else 0.x `lastEventID` (the header beats both).
    last_event_id: Option<String>,
    authorization: Option<String>,
    /// The first 0.x-only parameter present (`topic`, `lastEventID`), refused
    /// by a hub without `compat_0x`.
    v0_parameter: Option<&'static str>,
}

impl Query {
    /// The parameters of a request's query (`self`) and body together, as if
    /// they had all been in one component (draft-08): every selector of both
    /// counts (limits included). The single-valued `last_event_id` (and
    /// `authorization`) is the query's when both carry one.
    fn union(mut self, body: Query) -> Query {
        self.topics.extend(body.topics);
        self.matchers.extend(body.matchers);
        self.last_event_id = self.last_event_id.or(body.last_event_id);
        self.authorization = self.authorization.or(body.authorization);
        self.v0_parameter = self.v0_parameter.or(body.v0_parameter);
        self
    }
}

/// The `authorization` query parameter (a 0.x token), form-decoded, for
/// endpoints besides the hub's own that accept what a subscription does.
pub(crate) fn query_authorization(uri: &Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (form_decode(name.as_bytes()) == b"authorization")
            .then(|| String::from_utf8_lossy(&form_decode(value.as_bytes())).into_owned())
    })
}

fn parse_query(uri: &Uri) -> Result<Query, String> {
    parse_form(uri.query().unwrap_or("").as_bytes())
}

/// Parses a query or a body as `application/x-www-form-urlencoded` (as
/// `URLSearchParams` does). Matcher values are decoded strictly: 1.0 requires
/// them to be valid UTF-8, where a lossy decoding would turn a bad byte into
/// U+FFFD and match something else. 0.x parameters keep their lossy decoding.
/// Works on bytes, since a body (unlike a URI) may hold any.
fn parse_form(raw: &[u8]) -> Result<Query, String> {
    let mut q = Query::default();
    let mut legacy_last_event_id = None;
    for pair in raw.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let name = form_decode(name);
        let name = String::from_utf8_lossy(&name);
        let value = form_decode(value);
        match MatcherType::of(&name) {
            Some(Ok(kind)) => {
                let value = String::from_utf8(value)
                    .map_err(|_| format!("the value of {name} is not valid UTF-8"))?;
                if let Some(c) = hubbub_proto::text::forbidden_char(&value) {
                    return Err(format!(
                        "the value of {name} contains U+{:04X}: control and format characters are not allowed",
                        u32::from(c)
                    ));
                }
                q.matchers.push((kind, value));
            }
            Some(Err(())) => {
                return Err(format!(
                    "unsupported parameter {name:?}: names starting with \"match\" are reserved for topic matchers; this hub serves match, match_exact, match_urlpattern"
                ));
            }
            None => {
                let value = String::from_utf8_lossy(&value).into_owned();
                match &*name {
                    "topic" => {
                        q.v0_parameter.get_or_insert("topic");
                        q.topics.push(value);
                    }
                    "last_event_id" => q.last_event_id = Some(value),
                    "lastEventID" => {
                        q.v0_parameter.get_or_insert("lastEventID");
                        legacy_last_event_id = Some(value);
                    }
                    "authorization" => q.authorization = Some(value),
                    _ => {}
                }
            }
        }
    }
    q.last_event_id = q.last_event_id.or(legacy_last_event_id);
    Ok(q)
}

/// The hub's URL, against which relative URL Patterns and topics are resolved
/// when no `oauth_resource` is configured: this endpoint on the host the client addressed (`https` when a proxy says
/// it terminated TLS). A Host that makes no URL falls back to `localhost`; it
/// only changes what the client's own relative patterns mean.
pub(crate) fn hub_url(headers: &HeaderMap) -> String {
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .unwrap_or("localhost");
    format!("{scheme}://{host}{}", crate::connection::HUB_PATH)
}

/// Form decoding of one name or value: `+` is a space, then percent-decoding.
fn form_decode(raw: &[u8]) -> Vec<u8> {
    let plus: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_encoding::percent_decode(&plus).collect()
}

async fn open(
    state: &SharedState,
    headers: &HeaderMap,
    query: &Query,
) -> Result<(Subscription, Option<serde_json::Value>), ApiError> {
    let settings = state.settings.load_full();
    let bad = |e: String| ApiError::new(Rejection::BadRequest, e);
    if let Some(name) = query.v0_parameter
        && !settings.auth.compat_0x()
    {
        return Err(bad(format!(
            "{name} is a Mercure 0.x parameter and this hub serves Mercure 1.0 only: subscribe with match= (exact) or match_urlpattern=, resume with last_event_id"
        )));
    }
    // Both generations' selectors count against the same limits.
    let all: Vec<String> = query
        .topics
        .iter()
        .cloned()
        .chain(query.matchers.iter().map(|(_, v)| v.clone()))
        .collect();
    hubbub_proto::update::validate_topics(&all, settings.limits.max_topics)
        .map_err(|e| bad(e.to_string()))?;
    crate::publish::check_topic_text(&all, "topic selector")?;
    let limits = &settings.limits;
    crate::publish::check_topic_lengths(&all, limits.max_topic_bytes, "topic selector")?;
    let mut selectors = query
        .topics
        .iter()
        .map(|t| state.selector(t))
        .collect::<Result<Vec<Selector>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    // The same base as `urlpattern` grants (the resource identifier), so a
    // relative pattern means one thing to a subscription and to a token.
    let base = settings
        .auth
        .configured_resource()
        .map_or_else(|| hub_url(headers), str::to_owned);
    for (kind, value) in &query.matchers {
        selectors.push(match kind {
            MatcherType::Exact => Selector::exact(value),
            MatcherType::UrlPattern => state
                .url_pattern(value, &base)
                .map_err(|e| bad(e.to_string()))?,
        });
    }
    crate::publish::check_template_states(&selectors, limits.max_template_states)?;

    let auth = &settings.auth;
    let found = auth
        .present(headers, query.authorization.as_deref())
        .map_err(|e| ApiError::auth(&e, ""))?;
    let (claims, exp, payload) = match found {
        None if auth.anonymous() => (None, None, None),
        None => {
            return Err(ApiError::auth(
                &AuthError::Missing,
                "subscribing requires a JWT on this hub",
            ));
        }
        Some((token, _)) => {
            let granted = auth
                .authorize(Role::Subscriber, &token, headers, |s| state.selector(s))
                .await
                .map_err(|e| ApiError::auth(&e, ""))?;
            (granted.subscribe, granted.exp, granted.payload)
        }
    };

    let request = SubscribeRequest {
        selectors,
        claims,
        resume: resume(headers, query.last_event_id.clone()),
        deadline: deadline(settings.limits.lifetime, exp),
    };
    let sub = state.hub.subscribe(request).map_err(|e| match e {
        SubscribeError::TooManySubscribers(_) => {
            ApiError::new(Rejection::TooManySubscribers, e.to_string())
                .retry_after(Duration::from_secs(5))
        }
        SubscribeError::ShuttingDown => ApiError::new(Rejection::ShuttingDown, e.to_string())
            .retry_after(Duration::from_secs(1)),
    })?;
    Ok((sub, payload))
}

/// The `Last-Event-ID` header wins over the query parameter (`last_event_id`,
/// else `lastEventID`), as both protocol generations say.
fn resume(headers: &HeaderMap, query: Option<String>) -> Resume {
    let header = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match header.or(query) {
        None => Resume::Live,
        Some(id) if id == "earliest" => Resume::Earliest,
        Some(id) => Resume::After(id),
    }
}

/// The sooner of the token's expiry and the maximum lifetime (randomized to
/// 80-100 % so a fleet of clients does not reconnect in one wave).
fn deadline(lifetime: Option<Duration>, exp: Option<u64>) -> Option<(Instant, CloseReason)> {
    let now = Instant::now();
    let life = lifetime.map(|l| {
        (
            now + l.mul_f64(rand::rng().random_range(0.8..=1.0)),
            CloseReason::Lifetime,
        )
    });
    let token = exp.map(|exp| {
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        (
            now + Duration::from_secs(exp.saturating_sub(unix_now)),
            CloseReason::TokenExpired,
        )
    });
    match (life, token) {
        (Some(l), Some(t)) => Some(if t.0 <= l.0 { t } else { l }),
        (l, t) => l.or(t),
    }
}

/// The subscription behind an event-stream response, reachable from the
/// response's extensions. The lean writer in `conn.rs` takes it out and writes
/// frames straight from the subscriber queue (no body stream in between); on
/// the hyper path the body takes it on its first poll instead. Whoever takes it
/// first owns the stream.
#[derive(Debug, Clone)]
pub struct LiveStream(Arc<Mutex<Option<Subscription>>>);

impl LiveStream {
    pub fn take(&self) -> Option<Subscription> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// `compat_0x`: also send the 0.x response field `Last-Event-ID`.
fn sse_response(sub: Subscription, compat_0x: bool) -> Response {
    let last_event_id = sub
        .response_last_event_id()
        .and_then(|id| HeaderValue::from_str(id).ok());
    let live = LiveStream(Arc::new(Mutex::new(Some(sub))));
    let mut response = Response::new(sse_body(live.clone()));
    response.extensions_mut().insert(live);
    set_static(
        response.headers_mut(),
        &[
            (header::CONTENT_TYPE, "text/event-stream"),
            (
                header::CACHE_CONTROL,
                "private, no-cache, no-store, must-revalidate, max-age=0",
            ),
            (HeaderName::from_static("x-accel-buffering"), "no"),
        ],
    );
    // 1.0 names the response field `Mercure-Last-Event-ID` (`Last-Event-ID` is
    // a request field); 0.x clients read `Last-Event-ID`. With `compat_0x`
    // both are sent, with the same value: the id the replay starts after, or
    // `earliest`.
    if let Some(id) = last_event_id {
        if compat_0x {
            response.headers_mut().insert("last-event-id", id.clone());
        }
        response.headers_mut().insert("mercure-last-event-id", id);
    }
    response
}

/// Most bytes gathered into one body chunk (one socket write).
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// The open comment, then the frames. Everything already queued when the writer
/// wakes is gathered into one chunk (one write syscall instead of one per event):
/// a subscriber that fell behind catches up in a few large writes. A lone frame
/// is passed through as is, without copying.
fn sse_body(live: LiveStream) -> Body {
    let open = stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from_static(
        OPEN_COMMENT,
    ))]);
    // Taken on the first poll; once the stream ended, `take` finds the slot
    // empty and the body ends.
    let frames = stream::unfold((live, None), |(live, sub)| async move {
        let mut sub = match sub {
            Some(sub) => sub,
            None => live.take()?,
        };
        let Next::Frame(first) = sub.next().await else {
            return None;
        };
        let (chunk, ended) = gather(&mut sub, first);
        Some((Ok(chunk), (live, (!ended).then_some(sub))))
    });
    Body::from_stream(futures_util::StreamExt::chain(open, frames))
}

/// Appends whatever else is ready to `first`; reports whether the stream ended.
fn gather(sub: &mut Subscription, first: Bytes) -> (Bytes, bool) {
    let mut batch: Option<bytes::BytesMut> = None;
    let mut len = first.len();
    let mut ended = false;
    while len < MAX_BATCH_BYTES {
        match sub.try_next() {
            Some(Next::Frame(frame)) => {
                len += frame.len();
                batch
                    .get_or_insert_with(|| bytes::BytesMut::from(&first[..]))
                    .extend_from_slice(&frame);
            }
            Some(Next::Closed(_)) => {
                ended = true;
                break;
            }
            None => break,
        }
    }
    (batch.map_or(first, bytes::BytesMut::freeze), ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_wins_over_query() {
        let mut h = HeaderMap::new();
        assert_eq!(resume(&h, None), Resume::Live);
        assert_eq!(resume(&h, Some("earliest".into())), Resume::Earliest);
        h.insert("last-event-id", "a".parse().unwrap());
        assert_eq!(resume(&h, Some("b".into())), Resume::After("a".into()));
    }

    fn query(q: &str) -> Result<Query, String> {
        parse_query(&format!("/.well-known/mercure?{q}").parse().unwrap())
    }

    #[test]
    fn matcher_parameters() {
        let q = query("topic=a&match=b&match_exact=c%7Bd%7D&match=e+f&other=1").unwrap();
        assert_eq!(q.topics, ["a"]);
        let values: Vec<&str> = q.matchers.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(values, ["b", "c{d}", "e f"]);
        assert!(q.matchers.iter().all(|(k, _)| *k == MatcherType::Exact));
        let p = query("match_urlpattern=%2Fbooks%2F%3Aid").unwrap();
        assert_eq!(
            p.matchers,
            [(MatcherType::UrlPattern, "/books/:id".to_owned())]
        );
        assert_eq!(
            query("match").unwrap().matchers[0].1,
            "",
            "no '=' is an empty value"
        );
    }

    #[test]
    fn the_match_prefix_is_reserved() {
        for name in [
            "Match",
            "MATCH",
            "match_",
            "match_regex",
            "match_Exact",
            "matches",
            "matchx",
            "MATCH_EXACT",
            "m%61tch_x",
            "match_URLPattern",
            "match_url_pattern",
        ] {
            let err = query(&format!("topic=a&{name}=x")).unwrap_err();
            assert!(err.contains("reserved"), "{name}: {err}");
        }
        for name in ["matc", "xmatch", "topic_match", "mat"] {
            assert!(query(&format!("{name}=x")).is_ok(), "{name}");
        }
    }

    #[test]
    fn matcher_values_must_be_clean_utf8() {
        for value in [
            "%FF",
            "a%C3",
            "%00",
            "a%0Ab",
            "%7F",
            "%C2%85",
            "%E2%80%AE",
            "%EF%BB%BF",
        ] {
            assert!(query(&format!("match={value}")).is_err(), "{value}");
            assert!(query(&format!("match_exact={value}")).is_err(), "{value}");
        }
        assert_eq!(query("match=%C3%A9").unwrap().matchers[0].1, "\u{e9}");
        // 0.x topics keep their lenient decoding.
        assert_eq!(query("topic=%FF").unwrap().topics, ["\u{FFFD}"]);
    }

    #[test]
    fn hub_url_from_the_request() {
        let mut h = HeaderMap::new();
        assert_eq!(hub_url(&h), "http://localhost/.well-known/mercure");
        h.insert(header::HOST, "hub.example:8080".parse().unwrap());
        assert_eq!(hub_url(&h), "http://hub.example:8080/.well-known/mercure");
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(hub_url(&h), "https://hub.example:8080/.well-known/mercure");
        h.insert(header::HOST, "evil/path?x".parse().unwrap());
        assert_eq!(hub_url(&h), "https://localhost/.well-known/mercure");
    }

    #[test]
    fn last_event_id_names() {
        assert_eq!(
            query("lastEventID=a").unwrap().last_event_id.as_deref(),
            Some("a")
        );
        assert_eq!(
            query("last_event_id=b").unwrap().last_event_id.as_deref(),
            Some("b")
        );
        let both = query("last_event_id=b&lastEventID=a").unwrap();
        assert_eq!(
            both.last_event_id.as_deref(),
            Some("b"),
            "the 1.0 name wins"
        );
        assert_eq!(query("topic=x").unwrap().last_event_id, None);
    }

    #[test]
    fn bodies_are_forms_of_bytes_united_with_the_query() {
        let body = parse_form(b"match=a&topic=t&last_event_id=body&authorization=b").unwrap();
        let united = query("match=q&last_event_id=query").unwrap().union(body);
        let values: Vec<&str> = united.matchers.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(values, ["q", "a"]);
        assert_eq!(united.topics, ["t"]);
        assert_eq!(united.last_event_id.as_deref(), Some("query"));
        assert_eq!(united.authorization.as_deref(), Some("b"));
        let body_only = Query::default().union(parse_form(b"lastEventID=x").unwrap());
        assert_eq!(body_only.last_event_id.as_deref(), Some("x"));
        // Raw bytes a URI could not hold: strict for matchers, lossy for 0.x.
        assert!(parse_form(b"match=\xFF").is_err());
        assert!(parse_form(b"match=a\nb").is_err());
        assert_eq!(parse_form(b"topic=\xFF").unwrap().topics, ["\u{FFFD}"]);
        assert_eq!(parse_form(b"match=a+b%2B").unwrap().matchers[0].1, "a b+");
    }

    #[test]
    fn deadline_is_the_sooner_one() {
        let (_, reason) = deadline(Some(Duration::from_secs(600)), Some(0)).unwrap();
        assert_eq!(reason, CloseReason::TokenExpired);
        let (at, reason) = deadline(Some(Duration::from_secs(100)), None).unwrap();
        assert_eq!(reason, CloseReason::Lifetime);
        let left = at - Instant::now();
        assert!(
            left <= Duration::from_secs(100) && left >= Duration::from_secs(79),
            "{left:?}"
        );
        assert!(deadline(None, None).is_none());
    }
}
