//! `GET /routes`, `GET /routes/{id}`, `POST /routes`, `DELETE /routes/{id}`.
//!
//! `POST` takes `{"uri": "syslog+tls://host:6514?filter.name=web*"}` or
//! `{"adapter": "syslog+tls", "address": "host:6514", "filters": {...},
//! "options": {...}}`, with an optional `"id"`; it answers 201 with the
//! route, 400 naming what is wrong, or 409 if the id is taken.
//!
//! Adding and removing run on tokio's blocking pool: they read the files
//! a route names and write the state file.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::error;
use crate::spec::RouteRequest;
use crate::table::{AddError, Routes};

/// The largest `POST /routes` body: a route with a long template fits,
/// a route that would hold megabytes of options does not (413).
pub const MAX_BODY: usize = 64 << 10;

pub fn router(routes: Arc<Routes>) -> Router {
    Router::new()
        .route("/routes", get(list).post(add))
        .route("/routes/{id}", get(show).delete(remove))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(routes)
}

async fn list(State(routes): State<Arc<Routes>>) -> Response {
    Json(routes.list()).into_response()
}

async fn show(State(routes): State<Arc<Routes>>, Path(id): Path<String>) -> Response {
    match routes.get(&id) {
        Some(r) => Json(r).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no route {id:?}")),
    }
}

async fn add(State(routes): State<Arc<Routes>>, body: Bytes) -> Response {
    let request: RouteRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad route JSON: {e}")),
    };
    // Building a route reads files and renders a trial of its templates,
    // and saving writes the state file: blocking work, off the runtime.
    let added = tokio::task::spawn_blocking(move || routes.add(request)).await;
    let Ok(added) = added else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "adding the route failed");
    };
    match added {
        Ok(view) => (StatusCode::CREATED, Json(view)).into_response(),
        Err(AddError::Invalid(m)) => error(StatusCode::BAD_REQUEST, m),
        Err(AddError::Exists(id)) => error(
            StatusCode::CONFLICT,
            format!("a route with id {id:?} exists"),
        ),
        Err(AddError::Store(m)) => error(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

async fn remove(State(routes): State<Arc<Routes>>, Path(id): Path<String>) -> Response {
    let removed = tokio::task::spawn_blocking({
        let id = id.clone();
        move || routes.remove(&id)
    })
    .await;
    let Ok(removed) = removed else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "removing the route failed",
        );
    };
    match removed {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no route {id:?}")),
        Err(m) => error(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}
