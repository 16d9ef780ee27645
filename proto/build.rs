//! Compiles `proto/**/*.proto` without a system `protoc`:
//!
//! 1. `protox` parses the files into a `FileDescriptorSet` (with imports and
//!    source info, so generated code carries the `.proto` comments);
//! 2. the encoded set is written to `$OUT_DIR/flowscope_descriptor.bin` and
//!    exposed as `FILE_DESCRIPTOR_SET` (for gRPC server reflection);
//! 3. `tonic-prost-build` generates the messages, clients and servers;
//! 4. `pbjson-build` generates protojson-compatible serde impls, which we patch
//!    so that enum numbers unknown to us round-trip (see `patch_enums`).

use std::path::{Path, PathBuf};

use prost::Message as _;

type BoxError = Box<dyn std::error::Error>;

/// Our `.proto` files, relative to `proto/`.
const PROTOS: &[&str] = &[
    "flow/flow.proto",
    "relay/relay.proto",
    "peer/peer.proto",
    "observer/observer.proto",
    "flowscope/v1/flowscope.proto",
];

/// Packages we generate code for (all but the well-known types).
const PACKAGES: &[&str] = &[".flow", ".relay", ".peer", ".observer", ".flowscope.v1"];

/// Well-known types and the Rust types that carry them (see `src/wkt.rs`).
/// Wrappers (BoolValue, UInt32Value, ...) keep prost's default mapping to
/// `Option<bool>`, `Option<u32>`, ..., whose JSON is already protojson's.
const EXTERN_WKT: &[(&str, &str)] = &[
    (".google.protobuf.Timestamp", "crate::wkt::Timestamp"),
    (".google.protobuf.Any", "crate::wkt::Any"),
    (".google.protobuf.FieldMask", "crate::wkt::FieldMask"),
    (".google.protobuf.Duration", "crate::wkt::Duration"),
];

/// Messages whose serde impls are hand-written in `src/json.rs`: protojson
/// prints a oneof member at its declaration position, pbjson prints oneofs
/// after all other fields, and these two declare their oneof first
/// (`{"flow":…,"node_name":…,"time":…}` is what `hubble observe -o json` prints).
const HAND_WRITTEN_JSON: &[&str] = &[".observer.GetFlowsResponse", ".observer.ExportEvent"];

fn main() -> Result<(), BoxError> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let proto_root = manifest_dir.join("proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());
    for file in PROTOS {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }

    let fds = protox::compile(PROTOS, [&proto_root])?;
    let encoded = fds.encode_to_vec();
    std::fs::write(out_dir.join("flowscope_descriptor.bin"), &encoded)?;

    // `prost::Name` impls with Go's type URL domain, so that
    // `Any::from_msg(&ext)` yields `type.googleapis.com/flowscope.v1.FlowExtension`.
    let mut config = prost_build::Config::new();
    config
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com");

    let mut builder = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Keep tonic's transport (hyper, tokio net) out of this crate; users
        // create a `Channel` themselves and call `XxxClient::new(channel)`.
        .build_transport(false)
        .out_dir(&out_dir);
    for (proto, rust) in EXTERN_WKT {
        builder = builder.extern_path(*proto, *rust);
    }
    // prost-build inspects the well-known types' descriptors too; it emits no
    // code for them since they are all extern.
    builder.compile_fds_with_config(fds, config)?;

    let mut json = pbjson_build::Builder::new();
    json.register_descriptors(&encoded)?
        .out_dir(&out_dir)
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .ignore_unknown_enum_variants()
        .exclude(HAND_WRITTEN_JSON.iter().copied());
    for (proto, rust) in EXTERN_WKT {
        json.extern_path(*proto, *rust);
    }
    json.build(PACKAGES)?;

    for package in PACKAGES {
        let file = out_dir.join(format!("{}.serde.rs", package.trim_start_matches('.')));
        patch_enums(&file)?;
    }
    Ok(())
}

/// pbjson refuses to serialize an enum number that has no name in our
/// `.proto` ("Invalid variant") and maps such numbers to 0 when parsing.
/// protojson prints the number and keeps it. A relay forwarding flows from a
/// newer Hubble agent (a new DropReason, say) must not fail, so every enum
/// field goes through `crate::json::EnumValue<E>`, which does what protojson
/// does. The rewrite is checked: the build fails if pbjson's output changes
/// shape (pbjson-build is pinned exactly in the workspace for that reason).
fn patch_enums(file: &Path) -> Result<(), BoxError> {
    const MAP_ERR: &str =
        r#".map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", "#;
    let text = std::fs::read_to_string(file)?;
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with(MAP_ERR) {
            // Previous line: `let v = E::try_from(expr)` or `E::try_from(v)`.
            let prev = out.pop().ok_or("map_err without a previous line")?;
            let at = prev
                .find("::try_from(")
                .ok_or("map_err after no try_from")?;
            let start = prev[..at].rfind([' ', '(']).map_or(0, |i| i + 1);
            let enum_ty = &prev[start..at];
            let arg = prev[at + "::try_from(".len()..]
                .strip_suffix(')')
                .ok_or("unexpected try_from line")?;
            let rest = trimmed
                .rsplit_once(")))")
                .ok_or("unexpected map_err line")?
                .1;
            out.push(format!(
                "{}Ok::<_, S::Error>(crate::json::EnumValue::<{enum_ty}>::new({arg})){rest}",
                &prev[..start]
            ));
            continue;
        }
        let mut line = line.to_string();
        // Repeated enum fields.
        if let Some((head, tail)) = line.split_once("map_.next_value::<Vec<")
            && let Some((enum_ty, tail)) =
                tail.split_once(">>()?.into_iter().map(|x| x as i32).collect()")
        {
            line = format!(
                "{head}map_.next_value::<Vec<crate::json::EnumValue<{enum_ty}>>>()?\
                 .into_iter().map(crate::json::EnumValue::value).collect(){tail}"
            );
        }
        // Singular enum fields.
        if let Some((head, tail)) = line.split_once("map_.next_value::<")
            && let Some((enum_ty, tail)) = tail.split_once(">()? as i32")
        {
            line = format!(
                "{head}map_.next_value::<crate::json::EnumValue<{enum_ty}>>()?.value(){tail}"
            );
        }
        out.push(line);
    }
    let patched = out.join("\n") + "\n";
    for leftover in ["Invalid variant", " as i32"] {
        if patched.contains(leftover) {
            return Err(format!(
                "{}: pbjson output changed shape, `{leftover}` left after patching",
                file.display()
            )
            .into());
        }
    }
    std::fs::write(file, patched)?;
    Ok(())
}
