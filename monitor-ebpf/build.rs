//! Fail early, with a useful message, when the BPF linker is missing.
fn main() {
    println!("cargo:rerun-if-env-changed=PATH");
    // Let LLVM read and write unaligned words. Without it, the BPF backend reads every field of
    // a header a byte at a time (the packet's headers have no known alignment: an IPv4 address
    // was four byte loads, three shifts and three ors). The verifier accepts misaligned access
    // to packet and map memory wherever the kernel says the CPU does it efficiently
    // (CONFIG_HAVE_EFFICIENT_UNALIGNED_ACCESS: x86-64, arm64), never to the stack: buffers the
    // programs fill with helpers are aligned (parse::Aligned).
    println!("cargo:rustc-link-arg=--cpu-features=+allows-misaligned-mem-access");
    if which::which("bpf-linker").is_err() {
        println!(
            "cargo:warning=bpf-linker not found on PATH: run scripts/setup.sh (it installs bpf-linker built against LLVM 22)"
        );
    }
}
