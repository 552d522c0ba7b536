//! Errors as pages: every refusal of the console is an HTML page with its status.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::manage::ManageError;

/// A console failure, shown as a page.
#[derive(Debug)]
pub struct ConsoleError {
    /// The answer's status.
    pub status: StatusCode,
    /// What the person reads.
    pub message: String,
}

impl ConsoleError {
    /// A failure with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ConsoleError {
        ConsoleError {
            status,
            message: message.into(),
        }
    }

    /// 400: a form or query refused, with why.
    pub fn bad_request(message: impl Into<String>) -> ConsoleError {
        ConsoleError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ConsoleError {
        ConsoleError::new(StatusCode::FORBIDDEN, message)
    }

    /// 404.
    pub fn not_found() -> ConsoleError {
        ConsoleError::new(StatusCode::NOT_FOUND, "There is no such page.")
    }

    /// 500 for a failure of this machine (logged, not detailed to the browser).
    pub fn internal(what: impl std::fmt::Display) -> ConsoleError {
        tracing::error!("console request failed: {what}");
        ConsoleError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error; see the server log.",
        )
    }
}

impl From<crate::http::api::query::QueryError> for ConsoleError {
    fn from(e: crate::http::api::query::QueryError) -> ConsoleError {
        ConsoleError::new(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl From<ManageError> for ConsoleError {
    fn from(e: ManageError) -> ConsoleError {
        match e {
            ManageError::NotFound(m) => ConsoleError::new(StatusCode::NOT_FOUND, m),
            ManageError::Forbidden(m) => ConsoleError::forbidden(m),
            ManageError::Unauthorized(m) => ConsoleError::new(StatusCode::UNAUTHORIZED, m),
            e @ ManageError::Field { .. } => {
                ConsoleError::new(StatusCode::BAD_REQUEST, e.to_string())
            }
            e @ (ManageError::Busy(_) | ManageError::Ambiguous { .. }) => {
                ConsoleError::new(StatusCode::CONFLICT, e.to_string())
            }
            e @ ManageError::RateLimited => {
                ConsoleError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
            }
            ManageError::Internal(m) => ConsoleError::internal(m),
            ManageError::Store(e) => {
                let api = crate::http::api::ApiError::from(e);
                if api.status().is_server_error() {
                    ConsoleError::internal("store error")
                } else {
                    // The API's wording: it names no other tenant's objects.
                    ConsoleError::new(api.status(), api.message())
                }
            }
        }
    }
}

/// Escapes text for HTML (the error page is built without the template engine, so that it
/// shows even when templates fail).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let reason = self.status.canonical_reason().unwrap_or("Error");
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code} {reason} · provisiond</title><link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head><body><main class=\"error\"><h1>{code} {reason}</h1><p class=\"message\">{message}</p><p><a href=\"/console/\">Back to the console</a></p></main></body></html>",
            code = self.status.as_u16(),
            message = escape(&self.message),
        );
        (self.status, Html(body)).into_response()
    }
}
