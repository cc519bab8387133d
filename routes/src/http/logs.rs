//! `GET /logs`, `/logs/id:{prefix}`, `/logs/name:{glob}`: container lines as
//! they come, with the routes' `filter.*` query parameters.
//!
//! Text by default: one line each, prefixed `NAME|` unless the stream asked
//! for one container id. With `Accept: application/json`: one JSON object
//! per line ([`crate::event::Event::to_json`]). Every client has its own
//! tap: one that stops reading loses its own oldest lines (counted as
//! `dropped{direction="egress",stream="logs"}`) and never blocks another.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::gauge::Gauge;

use super::error;
use crate::filter::Filters;
use crate::hub::{Hub, Tap};
use crate::table::RouteMetrics;

/// Lines a client may fall behind before its oldest are dropped.
const CLIENT_BUFFER: usize = 10_000;
/// Lines written per chunk at most.
const CHUNK: usize = 256;

#[derive(Clone)]
struct Logs {
    hub: Arc<Hub>,
    metrics: RouteMetrics,
}

pub fn router(hub: Arc<Hub>, metrics: RouteMetrics) -> Router {
    Router::new()
        .route("/logs", get(all))
        .route("/logs/{target}", get(one))
        .with_state(Logs { hub, metrics })
}

type QueryPairs = Query<Vec<(String, String)>>;

async fn all(State(logs): State<Logs>, headers: HeaderMap, Query(q): QueryPairs) -> Response {
    stream(logs, &headers, Filters::default(), &q, true)
}

async fn one(
    State(logs): State<Logs>,
    Path(target): Path<String>,
    headers: HeaderMap,
    Query(q): QueryPairs,
) -> Response {
    let mut filters = Filters::default();
    let prefix = if let Some(id) = target.strip_prefix("id:") {
        filters.id = Some(id.to_owned());
        false
    } else if let Some(name) = target.strip_prefix("name:") {
        filters.name = Some(name.to_owned());
        true
    } else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no such stream {target:?}: use /logs, /logs/id:PREFIX or /logs/name:GLOB"),
        );
    };
    stream(logs, &headers, filters, &q, prefix)
}

fn stream(
    logs: Logs,
    headers: &HeaderMap,
    mut filters: Filters,
    query: &[(String, String)],
    prefix: bool,
) -> Response {
    for (k, v) in query {
        match filters.set(k, v) {
            Ok(true) => {}
            Ok(false) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown query parameter {k:?} (filters are filter.name, filter.id, filter.labels, filter.sources)"
                    ),
                );
            }
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        }
    }
    let matcher = match filters.compile() {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let json = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    let tap = Tap::new(
        matcher,
        false,
        CLIENT_BUFFER,
        logs.metrics.dropped("stream", "logs"),
    );
    logs.hub.attach(tap.clone());
    logs.metrics.logs_clients.inc();
    let client = Client {
        hub: logs.hub,
        tap,
        json,
        prefix,
        connected: logs.metrics.logs_clients,
    };
    let body = futures::stream::unfold(client, |client| async move {
        let chunk = client.next_chunk().await;
        Some((Ok::<_, std::convert::Infallible>(chunk), client))
    });
    let content_type = if json {
        "application/x-ndjson"
    } else {
        "text/plain; charset=utf-8"
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// One `/logs` client; leaving the hub when the client goes.
struct Client {
    hub: Arc<Hub>,
    tap: Arc<Tap>,
    json: bool,
    prefix: bool,
    /// The `logs_clients` gauge, counting this client while it lives.
    connected: Gauge,
}

impl Client {
    async fn next_chunk(&self) -> Bytes {
        while self.tap.is_empty() {
            self.tap.ready().await;
        }
        let mut out = Vec::new();
        for _ in 0..CHUNK {
            let Some(event) = self.tap.pop() else { break };
            if self.json {
                serde_json::to_writer(&mut out, &event.to_json()).expect("JSON to memory");
            } else {
                if self.prefix
                    && let Some(c) = &event.container
                {
                    out.extend_from_slice(c.name.as_bytes());
                    out.push(b'|');
                }
                out.extend_from_slice(event.payload());
            }
            out.push(b'\n');
        }
        Bytes::from(out)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.hub.detach(&self.tap);
        self.connected.dec();
    }
}
