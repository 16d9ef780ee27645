//! Builds the kernel programs (the `monitor-ebpf` crate) for the BPF target with the nightly
//! toolchain and bpf-linker, and leaves the object in OUT_DIR for `include_bytes_aligned!`.
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../monitor-ebpf");
    let package = aya_build::Package {
        name: "monitor-ebpf",
        root_dir: root,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
