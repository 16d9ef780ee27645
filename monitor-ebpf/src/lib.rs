//! Empty library target: see Cargo.toml. The programs are in the `monitor-ebpf` binary.
#![no_std]
