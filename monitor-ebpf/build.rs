//! Fail early, with a useful message, when the BPF linker is missing.
fn main() {
    println!("cargo:rerun-if-env-changed=PATH");
    if which::which("bpf-linker").is_err() {
        println!(
            "cargo:warning=bpf-linker not found on PATH: run scripts/setup.sh (it installs bpf-linker built against LLVM 22)"
        );
    }
}
