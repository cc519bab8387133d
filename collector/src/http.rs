//! The collector's HTTP port: `/health`, `/metrics`, and what the routes
//! crate brings (the routes API, `/logs`).
//!
//! Each handler set is one entry of [`MODULES`], compiled in by its cargo
//! feature. When a `--http-token` is set (it must be when the port listens
//! beyond loopback), every path but `/health` and `/health/live` wants
//! `Authorization: Bearer TOKEN`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use spillway_plumbing::health::Health;
use spillway_plumbing::metrics::{self, SelfMetrics};
use spillway_routes::{Hub, RouteMetrics, Routes};

/// What handlers may use.
pub struct Context {
    pub metrics: Arc<SelfMetrics>,
    /// What `/health` reports (capture and shipping ready or not).
    pub health: Arc<Health>,
    pub hub: Arc<Hub>,
    pub routes: Arc<Routes>,
    pub route_metrics: RouteMetrics,
}

/// One set of handlers.
pub struct Module {
    pub name: &'static str,
    pub router: fn(&Context) -> Router,
}

/// Every handler set compiled in.
pub static MODULES: &[Module] = &[
    Module {
        name: "health+metrics",
        router: |c| metrics::http_routes_with_health(c.metrics.clone(), c.health.clone()),
    },
    #[cfg(feature = "http-routes")]
    Module {
        name: "routes",
        router: |c| spillway_routes::http::routes_api::router(c.routes.clone()),
    },
    #[cfg(feature = "http-logs")]
    Module {
        name: "logs",
        router: |c| spillway_routes::http::logs::router(c.hub.clone(), c.route_metrics.clone()),
    },
];

/// Checks the token rule: beyond loopback, a token is required.
pub fn check_token(addr: SocketAddr, token: Option<&str>) -> Result<(), String> {
    match token {
        Some("") => Err("--http-token is empty".into()),
        None if !addr.ip().is_loopback() => Err(format!(
            "--http-addr {addr} listens beyond loopback: set --http-token, which the routes API \
             and /logs then require (or listen on 127.0.0.1)"
        )),
        _ => Ok(()),
    }
}

/// All modules, behind the token when there is one.
pub fn router(context: &Context, token: Option<String>) -> Router {
    let app = MODULES
        .iter()
        .fold(Router::new(), |app, m| app.merge((m.router)(context)));
    match token {
        None => app,
        Some(token) => {
            let expected: Arc<str> = format!("Bearer {token}").into();
            app.layer(middleware::from_fn(move |req: Request, next: Next| {
                let expected = expected.clone();
                async move { authorize(&expected, req, next).await }
            }))
        }
    }
}

async fn authorize(expected: &str, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if matches!(req.uri().path(), "/health" | "/health/live")
        || constant_time_eq(given, expected.as_bytes())
    {
        return next.run(req).await;
    }
    let mut response = spillway_routes::http::error(
        StatusCode::UNAUTHORIZED,
        "this endpoint needs Authorization: Bearer <the collector's --http-token>",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        "Bearer".parse().expect("a header value"),
    );
    response
}

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_rules() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(check_token(lo, None).is_ok());
        assert!(check_token(any, None).unwrap_err().contains("--http-token"));
        assert!(check_token(any, Some("s3cret")).is_ok());
        assert!(check_token(lo, Some("")).is_err());
        assert!(constant_time_eq(b"Bearer x", b"Bearer x"));
        assert!(!constant_time_eq(b"Bearer y", b"Bearer x"));
        assert!(!constant_time_eq(b"Bearer", b"Bearer x"));
    }

    #[test]
    fn every_module_compiled_in_is_listed() {
        let names: Vec<_> = MODULES.iter().map(|m| m.name).collect();
        assert_eq!(names[0], "health+metrics");
        assert_eq!(names.contains(&"routes"), cfg!(feature = "http-routes"));
        assert_eq!(names.contains(&"logs"), cfg!(feature = "http-logs"));
    }
}
