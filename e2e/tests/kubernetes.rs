//! Kubernetes pods, captured for real: a containerd of the test's own
//! (Debian's, with its CRI plugin), the test acting as the kubelet over
//! the CRI, the collector with `--runtime cri --source ebpf`, a router, an
//! RLP and a gRPC consumer. Envelopes must carry the pod's metadata: the
//! contract's "Envelopes of Kubernetes containers" table. Beside it, a
//! second collector with `--source files` reads the CRI log files
//! containerd writes for the same pods (to its own router and RLP), with
//! the tags the files' paths give.

use std::collections::HashMap;
use std::time::Duration;

use spillway_e2e::containerd::{self, Containerd, PodSpec, RunningPod, remove_pod, run_pod};
use spillway_e2e::docker::{self, IMAGE};
use spillway_e2e::*;
use spillway_proto::v2::{Envelope, envelope::Message, log::Type};

fn text(e: &Envelope) -> String {
    match &e.message {
        Some(Message::Log(l)) => String::from_utf8_lossy(&l.payload).into_owned(),
        other => panic!("not a log: {other:?}"),
    }
}

fn is_err(e: &Envelope) -> bool {
    matches!(&e.message, Some(Message::Log(l)) if l.r#type == Type::Err as i32)
}

/// Lines of the pod `pod`'s container `container` as (stream, text).
fn lines(got: &[Envelope], pod: &str, container: &str) -> Vec<(bool, String)> {
    got.iter()
        .filter(|e| {
            e.instance_id == pod && e.tags.get("container").map(String::as_str) == Some(container)
        })
        .map(|e| (is_err(e), text(e)))
        .collect()
}

/// The script of a container that writes `n` numbered lines to stdout,
/// one to stderr, then stays up (as a service does).
fn script(word: &str, n: u32) -> String {
    format!(
        "i=0; while [ $i -lt {n} ]; do echo {word}-$i; i=$((i+1)); done; echo {word}-err >&2; exec sleep 100000"
    )
}

fn want(word: &str, n: u32) -> Vec<(bool, String)> {
    let mut v: Vec<_> = (0..n).map(|i| (false, format!("{word}-{i}"))).collect();
    v.push((true, format!("{word}-err")));
    v
}

fn sorted(mut v: Vec<(bool, String)>) -> Vec<(bool, String)> {
    v.sort();
    v
}

/// Asserts the contract's tags on every envelope of `container` in `pod`.
fn assert_tags(
    got: &[Envelope],
    running: &RunningPod,
    spec: &PodSpec<'_>,
    container: &str,
    source_id: &str,
) {
    let ours: Vec<&Envelope> = got
        .iter()
        .filter(|e| {
            e.instance_id == spec.name
                && e.tags.get("container").map(String::as_str) == Some(container)
        })
        .collect();
    assert!(!ours.is_empty());
    for e in ours {
        assert_eq!(e.source_id, source_id, "{e:?}");
        let mut want: HashMap<String, String> = [
            ("namespace", spec.namespace),
            ("pod", spec.name),
            ("pod_uid", spec.uid),
            ("container", container),
            ("container_id", running.containers[container].as_str()),
            ("image", &format!("docker.io/{IMAGE}")),
            ("host", "e2e-host"),
            ("source_type", "container"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in spec.labels {
            want.insert(format!("pod_label.{k}"), (*v).to_owned());
        }
        assert_eq!(e.tags, want, "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_on_containerd_are_captured_with_their_kubernetes_metadata() {
    let _serial = docker::serial().await;
    if containerd::unavailable().is_some() {
        return;
    }
    let certs = Certs::new();
    let mut runtime = Containerd::start(certs.dir.join("containerd")).await;
    let logs = certs.dir.join("pods");
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &[]);
    let endpoint = runtime.endpoint();
    let collector = Collector::start(
        &certs,
        &[&router],
        &[
            "--source",
            "ebpf",
            "--runtime",
            "cri",
            "--cri-endpoint",
            &endpoint,
        ],
    );
    let mut consumer = rlp.logs_of(&certs, "").await;
    // The files source, on the log files containerd writes for the pods.
    std::fs::create_dir_all(&logs).unwrap();
    let files_router = Router::start(&certs, &[]);
    let files_rlp = Rlp::start(&certs, &[&files_router], &[]);
    let logs_dir = logs.display().to_string();
    let _files_collector = Collector::start(
        &certs,
        &[&files_router],
        &[
            "--source",
            "files",
            "--pod-logs-dir",
            &logs_dir,
            "--files-poll-interval",
            "50ms",
        ],
    );
    let mut files_consumer = files_rlp.logs_of(&certs, "").await;
    let mut rt = runtime.client();

    // Opted out by annotation: its lines must not arrive, while those of
    // the pods started after it do.
    let ignored = PodSpec {
        namespace: "shop",
        name: "quiet",
        uid: "uid-quiet",
        labels: &[],
        annotations: &[("spillway.ignore", "true")],
        containers: &[("main", &script("quiet", 3))],
    };
    // A Deployment's pod: source id from the workload.
    let web = PodSpec {
        namespace: "shop",
        name: "web-7d4b9c8f6d-x2k9p",
        uid: "uid-web-1",
        labels: &[("pod-template-hash", "7d4b9c8f6d"), ("tier", "front")],
        annotations: &[],
        containers: &[("nginx", &script("web", 5))],
    };
    // Two containers; source id from the annotation.
    let two = PodSpec {
        namespace: "batch",
        name: "worker-0",
        uid: "uid-worker-0",
        labels: &[("statefulset.kubernetes.io/pod-name", "worker-0")],
        annotations: &[("spillway.source_id", "jobs")],
        containers: &[("app", &script("app", 4)), ("sidecar", &script("side", 2))],
    };
    let _quiet = run_pod(&mut rt, &logs, &ignored).await;
    let web_pod = run_pod(&mut rt, &logs, &web).await;
    let two_pod = run_pod(&mut rt, &logs, &two).await;
    let complete = |got: &[Envelope]| {
        lines(got, web.name, "nginx").len() >= 6
            && lines(got, two.name, "app").len() >= 5
            && lines(got, two.name, "sidecar").len() >= 3
    };
    let got = collect_until(&mut consumer, Duration::from_secs(30), complete).await;
    assert_eq!(
        sorted(lines(&got, web.name, "nginx")),
        sorted(want("web", 5)),
        "{}",
        collector.proc.log()
    );
    assert_eq!(sorted(lines(&got, two.name, "app")), sorted(want("app", 4)));
    assert_eq!(
        sorted(lines(&got, two.name, "sidecar")),
        sorted(want("side", 2))
    );
    // In order within a stream.
    let web_out: Vec<String> = lines(&got, web.name, "nginx")
        .into_iter()
        .filter(|l| !l.0)
        .map(|l| l.1)
        .collect();
    assert_eq!(
        web_out,
        (0..5).map(|i| format!("web-{i}")).collect::<Vec<_>>()
    );
    assert_tags(&got, &web_pod, &web, "nginx", "web");
    assert_tags(&got, &two_pod, &two, "app", "jobs");
    assert_tags(&got, &two_pod, &two, "sidecar", "jobs");
    assert!(
        got.iter().all(|e| e.instance_id != "quiet"),
        "an opted-out pod's lines arrived"
    );

    // The same lines through the CRI log files, tagged from their paths
    // (the files source knows no labels, annotations or container ids).
    let from_files = collect_until(&mut files_consumer, Duration::from_secs(30), complete).await;
    assert_eq!(
        sorted(lines(&from_files, web.name, "nginx")),
        sorted(want("web", 5))
    );
    assert_eq!(
        sorted(lines(&from_files, two.name, "app")),
        sorted(want("app", 4))
    );
    assert_eq!(
        sorted(lines(&from_files, two.name, "sidecar")),
        sorted(want("side", 2))
    );
    for (spec, container, source_id) in [
        (&web, "nginx", "web"),
        (&two, "app", "worker-0"),
        (&two, "sidecar", "worker-0"),
    ] {
        for e in from_files.iter().filter(|e| {
            e.instance_id == spec.name
                && e.tags.get("container").map(String::as_str) == Some(container)
        }) {
            assert_eq!(e.source_id, source_id, "{e:?}");
            let want: HashMap<String, String> = [
                ("namespace", spec.namespace),
                ("pod", spec.name),
                ("pod_uid", spec.uid),
                ("container", container),
                ("host", "e2e-host"),
                ("source_type", "container"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            assert_eq!(e.tags, want, "{e:?}");
        }
    }

    // Deleted and created again (a new uid and new containers).
    remove_pod(&mut rt, &web_pod.sandbox_id).await;
    let again = PodSpec {
        uid: "uid-web-2",
        containers: &[("nginx", &script("again", 3))],
        ..web
    };
    let again_pod = run_pod(&mut rt, &logs, &again).await;
    let got = collect_until(&mut consumer, Duration::from_secs(30), |got| {
        lines(got, again.name, "nginx").len() >= 4
    })
    .await;
    assert_eq!(
        sorted(lines(&got, again.name, "nginx")),
        sorted(want("again", 3))
    );
    assert_tags(&got, &again_pod, &again, "nginx", "web");

    // containerd restarted while the collector runs: pods started after
    // it are captured.
    runtime.restart().await;
    let mut rt = runtime.client();
    let after = PodSpec {
        namespace: "shop",
        name: "after-restart",
        uid: "uid-after",
        labels: &[("app.kubernetes.io/name", "late")],
        annotations: &[],
        containers: &[("main", &script("late", 3))],
    };
    let after_pod = run_pod(&mut rt, &logs, &after).await;
    let got = collect_until(&mut consumer, Duration::from_secs(40), |got| {
        lines(got, after.name, "main").len() >= 4
    })
    .await;
    assert_eq!(
        sorted(lines(&got, after.name, "main")),
        sorted(want("late", 3)),
        "{}",
        collector.proc.log()
    );
    assert_tags(&got, &after_pod, &after, "main", "late");
    runtime.remove_all_pods().await;
}
