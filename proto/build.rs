//! Compiles the Loggregator v2 `.proto` files, and the v1 (dropsonde)
//! events with the router's v1 ingest service, with protox (a pure-Rust
//! protobuf compiler, so no system `protoc` is needed), then generates prost
//! messages, tonic services and pbjson serde impls (protobuf-JSON) from the
//! resulting descriptor set.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/loggregator/v2/envelope.proto",
    "proto/loggregator/v2/ingress.proto",
    "proto/loggregator/v2/egress.proto",
    "proto/events/envelope.proto",
    "proto/plumbing/doppler.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let descriptor_path = out.join("loggregator_v2_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;

    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .bytes(".loggregator.v2.Log.payload")
        .bytes(".events.LogMessage.message")
        .bytes(".plumbing.EnvelopeData.payload")
        // InvalidArgument for malformed bytes, batch sizes checked first.
        .codec_path("crate::codec::Codec")
        .compile_fds(descriptors)?;

    encoded_services(&out)?;

    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptor_path)?)?
        .preserve_proto_field_names()
        .emit_fields()
        .build(&[".loggregator.v2"])?;
    patch_doubles(&out.join("loggregator.v2.serde.rs"))
}

/// The Ingress and Egress services and the Egress client of
/// `crate::encoded`: the same gRPC paths with types that carry envelopes
/// as bytes (see `src/encoded.rs`).
fn encoded_services(out: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use tonic_build::manual::{Builder, Method, Service};
    const CODEC: &str = "crate::encoded::Codec";
    let method = |name: &str, route: &str, input: &str, output: &str| {
        Method::builder()
            .name(name)
            .route_name(route)
            .input_type(input)
            .output_type(output)
            .codec_path(CODEC)
    };
    let service = |name: &str, methods: Vec<Method>| {
        methods
            .into_iter()
            .fold(
                Service::builder().name(name).package("loggregator.v2"),
                |s, m| s.method(m),
            )
            .build()
    };
    let ingress = service(
        "Ingress",
        vec![
            method(
                "sender",
                "Sender",
                "crate::encoded::WireEnvelope",
                "crate::v2::IngressResponse",
            )
            .client_streaming()
            .build(),
            method(
                "batch_sender",
                "BatchSender",
                "crate::encoded::WireBatch",
                "crate::v2::BatchSenderResponse",
            )
            .client_streaming()
            .build(),
            method(
                "send",
                "Send",
                "crate::encoded::WireBatch",
                "crate::v2::SendResponse",
            )
            .build(),
        ],
    );
    let egress = service(
        "Egress",
        vec![
            method(
                "receiver",
                "Receiver",
                "crate::v2::EgressRequest",
                "bytes::Bytes",
            )
            .server_streaming()
            .build(),
            method(
                "batched_receiver",
                "BatchedReceiver",
                "crate::v2::EgressBatchRequest",
                "crate::encoded::EnvelopeList",
            )
            .server_streaming()
            .build(),
        ],
    );
    let server_dir = out.join("encoded/server");
    std::fs::create_dir_all(&server_dir)?;
    Builder::new()
        .build_client(false)
        .out_dir(&server_dir)
        .compile(&[ingress, egress]);
    let egress_client = service(
        "Egress",
        vec![
            method(
                "batched_receiver",
                "BatchedReceiver",
                "crate::v2::EgressBatchRequest",
                "crate::encoded::WireBatch",
            )
            .server_streaming()
            .build(),
        ],
    );
    let client_dir = out.join("encoded/client");
    std::fs::create_dir_all(&client_dir)?;
    Builder::new()
        .build_server(false)
        .out_dir(&client_dir)
        .compile(&[egress_client]);
    Ok(())
}

/// pbjson writes `double` fields through serde, which turns NaN and the
/// infinities into `null`; protobuf-JSON wants the strings `"NaN"`,
/// `"Infinity"`, `"-Infinity"`. The two `double` fields of the Loggregator
/// protos are serialized through `crate::json::Double` instead. Fails the
/// build if pbjson's output no longer has the expected lines.
fn patch_doubles(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    const PATCHES: &[(&str, &str)] = &[
        (
            r#"struct_ser.serialize_field("value", &self.value)?;"#,
            r#"struct_ser.serialize_field("value", &crate::json::Double(self.value))?;"#,
        ),
        (
            r#"struct_ser.serialize_field("decimal", v)?;"#,
            r#"struct_ser.serialize_field("decimal", &crate::json::Double(*v))?;"#,
        ),
    ];
    let mut text = std::fs::read_to_string(path)?;
    for (from, to) in PATCHES {
        if text.matches(from).count() != 1 {
            return Err(
                format!("pbjson output changed: `{from}` is not there exactly once").into(),
            );
        }
        text = text.replace(from, to);
    }
    std::fs::write(path, text)?;
    Ok(())
}
