//! The HTTP handlers routes bring to the collector's HTTP port: the routes
//! API and the `/logs` stream. The collector mounts them next to `/health`
//! and `/metrics` (see its `http` module).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[cfg(feature = "http-logs")]
pub mod logs;
#[cfg(feature = "http-routes")]
pub mod routes_api;

/// `{"error": "..."}` with `status`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}
