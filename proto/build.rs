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

    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptor_path)?)?
        .preserve_proto_field_names()
        .emit_fields()
        .build(&[".loggregator.v2"])?;
    patch_doubles(&out.join("loggregator.v2.serde.rs"))
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
