//! The routes API on the collector's HTTP port: create, list,
//! get, delete, 400 naming the problem, persistence across a restart, and
//! the bearer token when the port listens beyond loopback.

use std::process::Command;

use serde_json::{Value, json};
use spillway_e2e::*;

/// Parses an answer's body as JSON.
fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn create_list_get_delete_and_persist() {
    let certs = Certs::new();
    let state = certs.dir.join("state");
    let state_flag = state.display().to_string();
    let flag_route = "raw+tcp://127.0.0.1:9?filter.name=from-flag";
    let start = || {
        Collector::start(
            &certs,
            &[],
            &["--state-dir", &state_flag, "--route", flag_route],
        )
    };
    let mut collector = start();
    let port = collector.http_port;

    let (code, body) = http_call(port, "GET", "/routes", None, None);
    assert_eq!(code, 200);
    let list = json(&body);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["persisted"], false);
    assert_eq!(list[0]["uri"], flag_route);

    // By URI, with a generated id.
    let (code, body) = http_call(
        port,
        "POST",
        "/routes",
        Some(&json!({"uri": "syslog+tcp://127.0.0.1:6514?filter.name=web-*&format=rfc3164"})),
        None,
    );
    assert_eq!(code, 201, "{body}");
    let created = json(&body);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 12);
    assert_eq!(created["adapter"], "syslog+tcp");
    assert_eq!(created["address"], "127.0.0.1:6514");
    assert_eq!(created["filters"]["name"], "web-*");
    assert_eq!(created["options"]["format"], "rfc3164");
    assert_eq!(created["persisted"], true);

    // By fields, with an id of our own.
    let (code, body) = http_call(
        port,
        "POST",
        "/routes",
        Some(
            &json!({"id": "papertrail", "adapter": "multiline+raw", "address": "localhost:5000",
                     "filters": {"labels": ["team:pay*"], "sources": ["stderr"]},
                     "options": {"template": "{{ container.name }} {{ message }}"}}),
        ),
        None,
    );
    assert_eq!(code, 201, "{body}");
    let (code, _) = http_call(
        port,
        "POST",
        "/routes",
        Some(&json!({"id": "papertrail", "uri": "raw://h:1"})),
        None,
    );
    assert_eq!(code, 409);

    let (code, body) = http_call(port, "GET", "/routes/papertrail", None, None);
    assert_eq!(code, 200);
    assert_eq!(json(&body)["filters"]["labels"][0], "team:pay*");
    assert_eq!(http_call(port, "GET", "/routes/nope", None, None).0, 404);
    assert_eq!(
        json(&http_call(port, "GET", "/routes", None, None).1)
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Bad routes: 400, and the message names the problem.
    for (body, needle) in [
        (json!({"uri": "syslog+tpc://h:514"}), "\"tpc\""),
        (json!({"uri": "syslog://h"}), "no port"),
        (
            json!({"uri": "syslog://h:514?fromat=rfc3164"}),
            "\"fromat\"",
        ),
        (
            json!({"uri": "syslog://h:514?format=rfc9999"}),
            "format=\"rfc9999\"",
        ),
        (
            json!({"uri": "raw+tcp://h:1?filter.labels=nocolon"}),
            "key:glob",
        ),
        (
            json!({"uri": "multiline+raw://h:1?multiline.pattern=("}),
            "multiline.pattern",
        ),
        (
            json!({"uri": "syslog+tls://h:6514?ca=/does/not/exist"}),
            "ca=",
        ),
        (json!({"adapter": "syslog"}), "needs"),
        (json!({"uri": "raw://h:1", "colour": "blue"}), "colour"),
    ] {
        let (code, text) = http_call(port, "POST", "/routes", Some(&body), None);
        assert_eq!(code, 400, "{body}: {text}");
        let error = json(&text)["error"].as_str().unwrap().to_owned();
        assert!(error.contains(needle), "{body}: {error}");
    }
    // A body that is not JSON, sent as is (`http_call` takes JSON values).
    let mut answer = http_agent()
        .post(format!("http://127.0.0.1:{port}/routes"))
        .send("{not json")
        .expect("an answer");
    let text = answer.body_mut().read_to_string().unwrap();
    assert_eq!(answer.status().as_u16(), 400, "{text}");
    assert!(text.contains("bad route JSON"), "{text}");

    // Delete one; the other API route persists across a restart, the
    // --route one comes back from the flag, the deleted one stays gone.
    assert_eq!(
        http_call(port, "DELETE", &format!("/routes/{id}"), None, None).0,
        204
    );
    assert_eq!(
        http_call(port, "DELETE", &format!("/routes/{id}"), None, None).0,
        404
    );
    let saved_view = json(&http_call(port, "GET", "/routes/papertrail", None, None).1);
    collector.proc.kill();
    let collector = start();
    // The restored route is the one saved: its adapter, address, every
    // filter and option, not just its id.
    let (code, body) = http_call(collector.http_port, "GET", "/routes/papertrail", None, None);
    assert_eq!(code, 200, "{body}");
    let restored = json(&body);
    for field in [
        "uri",
        "adapter",
        "address",
        "filters",
        "options",
        "persisted",
    ] {
        assert_eq!(
            restored[field], saved_view[field],
            "{field} of the restored route: {restored}"
        );
    }
    assert_eq!(
        restored["filters"],
        json!({"labels": ["team:pay*"], "sources": ["stderr"]}),
        "{restored}"
    );
    assert_eq!(
        restored["options"]["template"], "{{ container.name }} {{ message }}",
        "{restored}"
    );
    let (code, body) = http_call(collector.http_port, "GET", "/routes", None, None);
    assert_eq!(code, 200);
    let ids: Vec<String> = json(&body)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"papertrail".to_owned()));
    let saved = std::fs::read_to_string(state.join("routes.json")).unwrap();
    assert!(
        saved.contains("papertrail") && !saved.contains("from-flag"),
        "{saved}"
    );
}

#[test]
fn beyond_loopback_every_endpoint_but_health_wants_the_token() {
    let certs = Certs::new();
    let port = free_port();
    let addr = format!("0.0.0.0:{port}");
    // Without a token, such a collector refuses to start.
    let out = Command::new(bin("spillway-collector"))
        .args([
            "--insecure-plaintext",
            "--source",
            "none",
            "--http-addr",
            &addr,
        ])
        .args(["--ingress-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--state-dir", &certs.dir.join("s0").display().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--http-token"));

    let proc = Proc::spawn(
        "spillway-collector",
        &[
            "--insecure-plaintext",
            "--source",
            "none",
            "--http-addr",
            &addr,
            "--ingress-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--http-token",
            "s3cret",
            "--state-dir",
            &certs.dir.join("s1").display().to_string(),
        ]
        .map(String::from),
    );
    wait_port(port);
    for path in ["/routes", "/metrics", "/logs"] {
        assert_eq!(http_call(port, "GET", path, None, None).0, 401, "{path}");
        assert_eq!(
            http_call(port, "GET", path, None, Some("wrong")).0,
            401,
            "{path}"
        );
    }
    assert_eq!(http_call(port, "GET", "/health", None, None).0, 200);
    assert_eq!(
        http_call(port, "GET", "/routes", None, Some("s3cret")).0,
        200
    );
    assert_eq!(
        http_call(port, "GET", "/metrics", None, Some("s3cret")).0,
        200
    );
    let (code, body) = http_call(
        port,
        "POST",
        "/routes",
        Some(&json!({"uri": "raw+tcp://127.0.0.1:9"})),
        None,
    );
    assert_eq!(code, 401, "{body}");
    drop(proc);
}
