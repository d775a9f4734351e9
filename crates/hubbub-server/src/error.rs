//! The one error type handlers return: a status, a reason (counted in metrics),
//! a message for the client, and `Retry-After` where waiting helps.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::metrics::Rejection;

#[derive(Debug)]
pub struct ApiError {
    pub reason: Rejection,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// An RFC 6750 `error` code for the `WWW-Authenticate: Bearer` challenge.
    pub bearer_error: Option<&'static str>,
    /// The RFC 9728 metadata URL a Bearer challenge points to.
    pub resource_metadata: Option<String>,
}

impl ApiError {
    pub fn new(reason: Rejection, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            retry_after: None,
            bearer_error: None,
            resource_metadata: None,
        }
    }

    /// Bearer challenges of this answer point to `url` (RFC 9728 `resource_metadata`).
    pub fn resource_metadata(mut self, url: Option<String>) -> Self {
        self.resource_metadata = url;
        self
    }

    /// A refused token: no token -> 401 with a bare challenge; a malformed
    /// presentation -> 400 `invalid_request`; any other -> 401 `invalid_token`.
    pub fn auth(err: &crate::auth::AuthError, missing: &str) -> Self {
        let code = err.bearer_error();
        let reason = if code == Some("invalid_request") {
            Rejection::BadRequest
        } else {
            Rejection::Unauthorized
        };
        let message = match code {
            None => missing.to_owned(),
            Some(_) => err.to_string(),
        };
        Self {
            bearer_error: code,
            ..Self::new(reason, message)
        }
    }

    /// A valid token that does not allow the operation: 403 `insufficient_scope`.
    pub fn insufficient_scope(message: impl Into<String>) -> Self {
        Self {
            bearer_error: Some("insufficient_scope"),
            ..Self::new(Rejection::Forbidden, message)
        }
    }

    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub fn status(&self) -> StatusCode {
        match self.reason {
            Rejection::BadRequest => StatusCode::BAD_REQUEST,
            Rejection::Unauthorized => StatusCode::UNAUTHORIZED,
            Rejection::Forbidden => StatusCode::FORBIDDEN,
            Rejection::BodyTooLarge | Rejection::OverLimit => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Rejection::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Rejection::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Rejection::NotFound => StatusCode::NOT_FOUND,
            Rejection::TooManySubscribers
            | Rejection::TooManyConnections
            | Rejection::Overloaded
            | Rejection::ShuttingDown
            | Rejection::NotReplicated
            | Rejection::NotReady => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), format!("{}\n", self.message)).into_response();
        if let Some(wait) = self.retry_after {
            // Whole seconds, rounded up: "Retry-After: 0" would invite a hot loop.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if self.reason == Rejection::RequestTimeout {
            // The rest of the body may still be on its way: this connection
            // cannot carry another request, so say it ends.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.bearer_error.is_some() || self.reason == Rejection::Unauthorized {
            let mut challenge = String::from("Bearer realm=\"mercure\"");
            if let Some(code) = self.bearer_error {
                challenge.push_str(&format!(
                    ", error=\"{code}\", error_description=\"{}\"",
                    quoted(&self.message)
                ));
            }
            if let Some(url) = &self.resource_metadata {
                challenge.push_str(&format!(", resource_metadata=\"{}\"", quoted(url)));
            }
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        response
    }
}

/// `text` as the inside of an RFC 6750 quoted `error_description`: printable
/// ASCII without `"` and `\`, at most 300 characters.
fn quoted(text: &str) -> String {
    text.chars()
        .filter(|c| matches!(c, ' '..='~') && *c != '"' && *c != '\\')
        .take(300)
        .collect()
}
