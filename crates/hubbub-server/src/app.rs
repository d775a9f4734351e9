//! The router: Mercure endpoint, the `/` page, health, readiness, metrics, CORS.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::connection::{HUB_PATH, set_static};
use crate::error::ApiError;
use crate::metrics::Rejection;
use crate::oauth::METADATA_PREFIX;
use crate::state::SharedState;
use crate::{publish, subscribe, subscriptions};

const INDEX_HTML: &str = include_str!("../assets/index.html");

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route(
            HUB_PATH,
            get(subscribe::subscribe)
                .post(publish::publish)
                .fallback(other_hub_method),
        )
        .route(SUBSCRIPTIONS_PATH, get(subscriptions::get))
        .route(SUBSCRIPTIONS_REST, get(subscriptions::get))
        .route(METADATA_PATH, get(resource_metadata))
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/cluster", get(cluster))
        // Inside CORS, so a 421 still carries the CORS headers a browser
        // needs to show it to the page.
        .layer(middleware::from_fn_with_state(state.clone(), origin_guard))
        .layer(middleware::from_fn_with_state(state.clone(), cors))
        .with_state(state)
}

/// The subscriptions API (draft-08 "Active Subscriptions").
const SUBSCRIPTIONS_PATH: &str = crate::presence::event::PREFIX;

/// Everything under [`SUBSCRIPTIONS_PATH`].
const SUBSCRIPTIONS_REST: &str = "/.well-known/mercure/subscriptions/{*rest}";

/// The methods the hub path answers (`HEAD` comes with `GET`).
const HUB_METHODS: &str = "GET, HEAD, POST, QUERY";

/// `QUERY` (RFC 10008), which axum's method router cannot name, is a
/// subscription; any other method is 405 with `Allow`. POST stays publishing:
/// it is not safe, so it is not a subscribe method (draft-08).
async fn other_hub_method(
    state: State<SharedState>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    if method.as_str() == "QUERY" {
        return subscribe::subscribe_query(state, headers, uri, body).await;
    }
    let mut r = (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response();
    set_static(
        r.headers_mut(),
        &[
            (header::ALLOW, HUB_METHODS),
            (HeaderName::from_static("accept-query"), subscribe::FORM),
        ],
    );
    r
}

/// RFC 9728 metadata of the hub URL, [`HUB_PATH`] (Mercure 1.0 discovery).
const METADATA_PATH: &str = "/.well-known/oauth-protected-resource/.well-known/mercure";

/// The protected resource metadata; 404 on a hub without trusted issuers.
async fn resource_metadata(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    match state.settings.load().auth.metadata(&headers) {
        Some(mut doc) => {
            if state.presence.enabled() {
                doc["mercure_subscriptions"] = true.into();
            }
            axum::Json(doc).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no Mercure 1.0 issuers configured\n").into_response(),
    }
}

async fn readyz(State(state): State<SharedState>) -> Response {
    if state.is_ready() {
        "ready\n".into_response()
    } else if state.hub.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "joining the cluster\n").into_response()
    }
}

/// This node's view of the cluster (JSON). A single node says so.
async fn cluster(State(state): State<SharedState>) -> Response {
    let body = match &state.cluster {
        Some(c) => serde_json::to_value(c.view()).unwrap_or_default(),
        None => serde_json::json!({ "mode": "single", "ready": state.is_ready(),
            "subscribers": state.hub.subscriber_count() }),
    };
    axum::Json(body).into_response()
}

async fn metrics(State(state): State<SharedState>) -> Response {
    state
        .metrics
        .subscribers
        .set(state.hub.subscriber_count() as i64);
    let (entries, bytes) = state.hub.history_size();
    state.metrics.history_entries.set(entries as i64);
    state.metrics.history_bytes.set(bytes as i64);
    if let Some(cluster) = &state.cluster {
        state.metrics.observe_cluster(&cluster.view());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// CORS only for the configured origins (read per request, so a reload applies at
/// once). Credentials are allowed, hence no `*`.
async fn cors(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = origin.as_ref().filter(|o| {
        let settings = state.settings.load();
        o.to_str()
            .is_ok_and(|o| settings.cors_origins.iter().any(|a| a == o))
    });
    let Some(origin) = allowed.cloned() else {
        return next.run(request).await;
    };
    let mut response = if request.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        set_static(
            r.headers_mut(),
            &[
                (
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    "GET, HEAD, POST, QUERY, OPTIONS",
                ),
                (
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    "authorization, cache-control, last-event-id, content-type",
                ),
                (header::ACCESS_CONTROL_MAX_AGE, "600"),
            ],
        );
        r
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    set_static(
        h,
        &[
            (header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true"),
            (
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                "last-event-id, mercure-last-event-id, link",
            ),
        ],
    );
    h.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

/// The paths the allowlist guards: the hub and its RFC 9728 metadata. Health,
/// readiness, metrics and the page at `/` answer on any origin (probes and
/// scrapers address the pod, not the public name).
fn guarded(path: &str) -> bool {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    under(HUB_PATH) || under(METADATA_PREFIX)
}

/// Middleware: 421 for a guarded path on an unlisted origin; a listed one
/// goes on with its origin headers pinned.
async fn origin_guard(
    State(state): State<SharedState>,
    mut request: Request,
    next: Next,
) -> Response {
    if !guarded(request.uri().path()) {
        return next.run(request).await;
    }
    let listed = {
        let settings = state.settings.load();
        if settings.public_urls.is_empty() {
            return next.run(request).await;
        }
        let uri = request.uri().clone();
        settings.public_urls.pin(request.headers_mut(), &uri)
    };
    if !listed {
        return state
            .reject(ApiError::new(
                Rejection::Misdirected,
                "this hub does not answer on this origin (see public_urls)",
            ))
            .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hub_paths_are_guarded() {
        for path in [
            "/.well-known/mercure",
            "/.well-known/mercure/subscriptions",
            "/.well-known/oauth-protected-resource/.well-known/mercure",
        ] {
            assert!(guarded(path), "{path}");
        }
        for path in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/",
            "/.well-known/mercurex",
        ] {
            assert!(!guarded(path), "{path}");
        }
    }
}
