//! The RLP gateway: `GET /v2/read` over HTTP, as server-sent events.
//!
//! The query names the selectors (`source_id`, `log`, `counter`,
//! `counter.name`, `gauge`, `gauge.name`, `timer`, `event`) and the shard
//! (`shard_id`, `deterministic_name`). Each SSE frame is one
//! `EnvelopeBatch` as protobuf-JSON. A heartbeat frame follows every
//! `heartbeat` without data, and a closing frame ends the stream at
//! `stream_timeout`. Errors are JSON `{"error": CODE, "message": TEXT}`.
//!
//! Every request must pass the gateway's [`Authenticate`] check (a client
//! certificate or a token, see [`crate::access`]); others get 401. The
//! gateway is served over TLS ([`crate::tls_listener`]) unless explicitly
//! told otherwise on loopback.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use spillway_plumbing::batch::{self, BatchPolicy};
use spillway_plumbing::metrics::{Direction, SelfMetrics, reason};
use spillway_proto::v2::{
    CounterSelector, EgressBatchRequest, EnvelopeBatch, EventSelector, GaugeSelector, LogSelector,
    Selector, TimerSelector, selector::Message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::access::{Authenticate, Peer};
use crate::fanin::{Consumer, Fanin, Refused};

/// Gateway timing.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub heartbeat: Duration,
    pub stream_timeout: Duration,
}

struct Gateway {
    fanin: Arc<Fanin>,
    policy: BatchPolicy,
    timing: Timing,
    metrics: Arc<SelfMetrics>,
}

/// The gateway's routes; every request first passes `auth` (`None`: no
/// check, for `--gateway-insecure-plaintext` without tokens). Serve with
/// connect info [`Peer`].
pub fn routes(
    fanin: Arc<Fanin>,
    policy: BatchPolicy,
    timing: Timing,
    metrics: Arc<SelfMetrics>,
    auth: Option<Arc<dyn Authenticate>>,
) -> Router {
    let state = Arc::new(Gateway {
        fanin,
        policy,
        timing,
        metrics,
    });
    Router::new()
        .route("/v2/read", get(read))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "resource not found") })
        .with_state(state)
        .layer(middleware::from_fn_with_state(auth, authenticate))
}

async fn authenticate(
    State(auth): State<Option<Arc<dyn Authenticate>>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Response {
    match auth {
        Some(check) if !check.allows(request.headers(), &peer) => error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a client certificate or a valid token (Authorization: Bearer TOKEN) is required",
        ),
        _ => next.run(request).await,
    }
}

/// A JSON error as the Loggregator gateway sends it.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A gateway error: HTTP status, code, message.
#[derive(Debug, PartialEq)]
pub struct QueryError(pub StatusCode, pub &'static str, pub &'static str);

/// Turns the query string into the request sent to every router.
pub fn parse_query(query: &str) -> Result<EgressBatchRequest, QueryError> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if pairs.is_empty() {
        return Err(QueryError(
            StatusCode::BAD_REQUEST,
            "empty_query",
            "query cannot be empty",
        ));
    }
    fn values<'a>(pairs: &'a [(String, String)], key: &'a str) -> impl Iterator<Item = &'a str> {
        pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    let has = |key: &str| pairs.iter().any(|(k, _)| k == key);

    let counter_names: Vec<&str> = values(&pairs, "counter.name").collect();
    if counter_names.iter().any(|n| n.is_empty()) {
        return Err(QueryError(
            StatusCode::BAD_REQUEST,
            "missing_counter_name",
            "counter.name is invalid without value",
        ));
    }
    let gauge_names: Vec<&str> = values(&pairs, "gauge.name").collect();
    if gauge_names.iter().any(|n| n.split(',').all(str::is_empty)) {
        return Err(QueryError(
            StatusCode::BAD_REQUEST,
            "missing_gauge_name",
            "gauge.name is invalid without value",
        ));
    }

    let mut messages = Vec::new();
    if has("log") {
        messages.push(Message::Log(LogSelector {}));
    }
    if !counter_names.is_empty() {
        messages.extend(
            counter_names
                .iter()
                .map(|n| Message::Counter(CounterSelector { name: (*n).into() })),
        );
    } else if has("counter") {
        messages.push(Message::Counter(CounterSelector::default()));
    }
    if !gauge_names.is_empty() {
        messages.extend(gauge_names.iter().map(|set| {
            Message::Gauge(GaugeSelector {
                names: set
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        }));
    } else if has("gauge") {
        messages.push(Message::Gauge(GaugeSelector::default()));
    }
    if has("timer") {
        messages.push(Message::Timer(TimerSelector {}));
    }
    if has("event") {
        messages.push(Message::Event(EventSelector {}));
    }
    if messages.is_empty() {
        return Err(QueryError(
            StatusCode::BAD_REQUEST,
            "missing_envelope_type",
            "query must provide at least one envelope type",
        ));
    }
    let mut sources: Vec<&str> = values(&pairs, "source_id").collect();
    if sources.is_empty() {
        sources.push("");
    }
    let selectors = sources
        .iter()
        .flat_map(|s| {
            messages.iter().map(|m| Selector {
                source_id: (*s).into(),
                message: Some(m.clone()),
            })
        })
        .collect();
    Ok(EgressBatchRequest {
        shard_id: values(&pairs, "shard_id").next().unwrap_or_default().into(),
        deterministic_name: values(&pairs, "deterministic_name")
            .next()
            .unwrap_or_default()
            .into(),
        use_preferred_tags: true,
        selectors,
        legacy_selector: None,
    })
}

async fn read(State(gw): State<Arc<Gateway>>, RawQuery(query): RawQuery) -> Response {
    let req = match parse_query(query.as_deref().unwrap_or("")) {
        Ok(r) => r,
        Err(QueryError(status, code, msg)) => return error(status, code, msg),
    };
    let consumer = match gw.fanin.subscribe(req).await {
        Ok(c) => c,
        Err(Refused::TooManyStreams(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "streaming_unavailable",
                "streaming is temporarily unavailable",
            );
        }
        Err(Refused::Invalid(msg)) => {
            return error(StatusCode::BAD_REQUEST, "invalid_request", &msg);
        }
    };
    let body = sse_body(consumer, gw);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONNECTION, "keep-alive"),
        ],
        body,
    )
        .into_response()
}

/// Streams SSE frames for one consumer from a task that owns the
/// subscription: data, heartbeats, then the closing frame at the stream
/// timeout. A client that does not take a frame within two heartbeat
/// intervals (stopped reading, or gone without closing its connection) has
/// its stream ended, so it cannot keep a stream slot and its subscriptions.
fn sse_body(consumer: Consumer, gw: Arc<Gateway>) -> Body {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        let stuck = gw.timing.heartbeat * 2;
        let deadline = tokio::time::Instant::now() + gw.timing.stream_timeout;
        // hyper writes the response head together with the first non-empty
        // body chunk. An SSE comment (a line starting with ':', which SSE
        // parsers ignore) sends the head at once, so a client knows the
        // stream is open before the first frame, as Loggregator's gateway
        // flushes its headers.
        if tx
            .send_timeout(Bytes::from_static(b":\n\n"), stuck)
            .await
            .is_err()
        {
            return;
        }
        let mut batcher = batch::Batcher::new(gw.policy);
        loop {
            let (frame, envelopes) = tokio::select! {
                // Wait for data first, then cut the batch outside the select
                // so that a heartbeat can never interrupt (and lose) a batch.
                _ = until_not_empty(&consumer) => {
                    let envelopes = batcher.next(&*consumer.diode).await;
                    let n = envelopes.len() as u64;
                    match data_frame(&envelopes) {
                        Some(frame) => (frame, n),
                        None => {
                            gw.metrics.dropped_because(Direction::Egress, reason::UNENCODABLE, n);
                            continue;
                        }
                    }
                }
                _ = tokio::time::sleep(gw.timing.heartbeat) => {
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                    (Bytes::from(format!("event: heartbeat\ndata: {now}\n\n")), 0)
                }
                // hyper dropped the body: the client is gone.
                _ = tx.closed() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    let closing = Bytes::from_static(b"event: closing\ndata: closing due to stream timeout\n\n");
                    let _ = tx.send_timeout(closing, stuck).await;
                    return;
                }
            };
            if tx.send_timeout(frame, stuck).await.is_err() {
                gw.metrics
                    .dropped_because(Direction::Egress, reason::STREAM_CLOSED, envelopes);
                return;
            }
            gw.metrics.egress.inc_by(envelopes);
        }
    });
    Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>))
}

/// `data: <batch as protobuf-JSON>` and a blank line, from the envelopes'
/// bytes; `None` if the batch has no protobuf-JSON form (ingress
/// normalisation and the checks of every hop should prevent that).
fn data_frame(envelopes: &[Bytes]) -> Option<Bytes> {
    let batch = EnvelopeBatch {
        batch: envelopes
            .iter()
            .map(|e| prost::Message::decode(e.clone()))
            .collect::<Result<_, _>>()
            .ok()?,
    };
    let mut frame = b"data: ".to_vec();
    serde_json::to_writer(&mut frame, &batch).ok()?;
    frame.extend_from_slice(b"\n\n");
    Some(Bytes::from(frame))
}

async fn until_not_empty(consumer: &Consumer) {
    while consumer.diode.is_empty() {
        consumer.diode.ready().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_proto::Kind;

    #[test]
    fn query_errors_use_the_gateway_codes() {
        let code = |q: &str| parse_query(q).unwrap_err().1;
        assert_eq!(code(""), "empty_query");
        assert_eq!(code("source_id=a"), "missing_envelope_type");
        assert_eq!(code("log&counter.name="), "missing_counter_name");
        assert_eq!(code("gauge.name="), "missing_gauge_name");
        assert_eq!(parse_query("").unwrap_err().0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn query_becomes_selectors_for_every_source() {
        let r = parse_query("source_id=a&source_id=b&log&counter.name=c1&counter.name=c2&gauge.name=x,y&shard_id=s&deterministic_name=d").unwrap();
        assert_eq!(
            (r.shard_id.as_str(), r.deterministic_name.as_str()),
            ("s", "d")
        );
        assert!(r.use_preferred_tags);
        assert_eq!(r.selectors.len(), 2 * 4);
        let for_a: Vec<_> = r.selectors.iter().filter(|s| s.source_id == "a").collect();
        assert_eq!(
            for_a
                .iter()
                .filter(|s| s.kind() == Some(Kind::Counter))
                .count(),
            2
        );
        let gauge = for_a
            .iter()
            .find(|s| s.kind() == Some(Kind::Gauge))
            .unwrap();
        let Some(Message::Gauge(g)) = &gauge.message else {
            unreachable!()
        };
        assert_eq!(g.names, vec!["x", "y"]);

        let r = parse_query("timer&event&counter&gauge").unwrap();
        assert_eq!(r.selectors.len(), 4);
        assert!(r.selectors.iter().all(|s| s.source_id.is_empty()));
    }
}
