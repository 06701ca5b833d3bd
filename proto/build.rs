//! Generates the tonic/prost code from `proto/*.proto` with the vendored protoc, so a fresh
//! machine needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto");
    // A restore's and a stop's results are shown to scripts as JSON (`restore show --output
    // json`): they serialize with serde, enums as their words (src/names.rs).
    let mut config = tonic_prost_build::configure().bytes(".");
    for message in [
        "RestoreResult",
        "Connection",
        "Verification",
        "DatabaseVerification",
        "TableMismatch",
        "FailedObject",
        "PhaseTimes",
        "StopResult",
    ] {
        config = config.type_attribute(
            format!("strongbox.v1.{message}"),
            "#[derive(serde::Serialize)]",
        );
    }
    for (field, ty) in [
        ("RestoreResult.outcome", "RestoreOutcome"),
        ("Connection.engine", "Engine"),
    ] {
        config = config.field_attribute(
            format!("strongbox.v1.{field}"),
            format!("#[serde(serialize_with = \"crate::names::as_word::<crate::v1::{ty}, _>\")]"),
        );
    }
    config.compile_protos(
        &[
            "proto/types.proto",
            "proto/strongbox.proto",
            "proto/catalog.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
