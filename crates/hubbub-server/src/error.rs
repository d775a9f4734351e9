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
}

impl ApiError {
    pub fn new(reason: Rejection, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            retry_after: None,
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
            Rejection::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::RateLimited => StatusCode::TOO_MANY_REQUESTS,
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
        if self.reason == Rejection::Unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mercure\""),
            );
        }
        response
    }
}
