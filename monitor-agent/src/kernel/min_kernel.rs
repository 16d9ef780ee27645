//! The oldest kernel the programs can load on, read from the object the agent embeds, and held
//! against README.md's Requirements: a program that starts using a newer helper or instruction
//! fails this test until the README says so.
//!
//! What decides it: the helpers the programs call (each appeared in a known kernel release, see
//! `include/uapi/linux/bpf.h` and bcc's `docs/kernel-versions.md`) and the instructions they use
//! (atomics other than a plain add need 5.12, `JMP32` 5.1, kfunc calls 5.13+). Map types follow
//! from the helpers (the ring buffer's own appeared with it, in 5.8). Attaching with tcx needs
//! 6.6, but the agent falls back to clsact filters before that (`--attach-mode`).

/// The object the agent loads (as in `datapath`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor-ebpf"));

/// First kernel release with BPF helper `id` (the `BPF_FUNC_*` number), for the helpers the
/// programs use and their close relatives; `None` for one this table does not know yet.
fn helper_since(id: i32) -> Option<((u32, u32), &'static str)> {
    Some(match id {
        1 => ((3, 19), "bpf_map_lookup_elem"),
        2 => ((3, 19), "bpf_map_update_elem"),
        3 => ((3, 19), "bpf_map_delete_elem"),
        4 => ((4, 1), "bpf_probe_read"),
        5 => ((4, 1), "bpf_ktime_get_ns"),
        8 => ((4, 1), "bpf_get_smp_processor_id"),
        25 => ((4, 4), "bpf_perf_event_output"),
        26 => ((4, 5), "bpf_skb_load_bytes"),
        34 => ((4, 8), "bpf_get_hash_recalc"),
        69 => ((4, 18), "bpf_fib_lookup"),
        113 => ((5, 5), "bpf_probe_read_kernel"),
        115 => ((5, 5), "bpf_probe_read_kernel_str"),
        130 => ((5, 8), "bpf_ringbuf_output"),
        131 => ((5, 8), "bpf_ringbuf_reserve"),
        132 => ((5, 8), "bpf_ringbuf_submit"),
        133 => ((5, 8), "bpf_ringbuf_discard"),
        134 => ((5, 8), "bpf_ringbuf_query"),
        160 => ((5, 11), "bpf_ktime_get_coarse_ns"),
        _ => return None,
    })
}

fn u16_at(b: &[u8], off: usize) -> usize {
    u16::from_le_bytes([b[off], b[off + 1]]) as usize
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], off: usize) -> usize {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap()) as usize
}

/// The instructions of every executable section of the (little-endian ELF64) object.
fn code_sections(elf: &[u8]) -> Vec<(String, &[u8])> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF object");
    assert_eq!((elf[4], elf[5]), (2, 1), "not a little-endian ELF64 object");
    let (shoff, shentsize, shnum, shstrndx) = (
        u64_at(elf, 0x28),
        u16_at(elf, 0x3a),
        u16_at(elf, 0x3c),
        u16_at(elf, 0x3e),
    );
    let header = |i: usize| &elf[shoff + i * shentsize..shoff + (i + 1) * shentsize];
    let names = header(shstrndx);
    let names = &elf[u64_at(names, 24)..u64_at(names, 24) + u64_at(names, 32)];
    (0..shnum)
        .map(header)
        .filter(|h| u32_at(h, 4) == 1 && u64_at(h, 8) & 0x4 != 0) // PROGBITS, SHF_EXECINSTR
        .map(|h| {
            let name = &names[u32_at(h, 0) as usize..];
            let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
            let (off, size) = (u64_at(h, 24), u64_at(h, 32));
            (
                String::from_utf8_lossy(name).into_owned(),
                &elf[off..off + size],
            )
        })
        .collect()
}

#[test]
fn readme_states_the_oldest_kernel_the_programs_load_on() {
    let mut needs = ((3, 19), "eBPF".to_owned());
    let mut helpers = std::collections::BTreeSet::new();
    let mut raise = |v: (u32, u32), why: String| {
        if v > needs.0 {
            needs = (v, why);
        }
    };
    let sections = code_sections(OBJECT);
    assert!(
        sections.len() >= 2,
        "the TC and tracepoint programs: {:?}",
        sections.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    for (section, code) in &sections {
        for insn in code.chunks_exact(8) {
            let (op, src, imm) = (
                insn[0],
                insn[1] >> 4,
                i32::from_le_bytes(insn[4..8].try_into().unwrap()),
            );
            match (op, src) {
                // call: a helper by number (src 0), a function of the object (1), a kfunc (2).
                (0x85, 0) => match helper_since(imm) {
                    Some((v, name)) => {
                        helpers.insert(format!("{name} ({}.{})", v.0, v.1));
                        raise(v, format!("{name} in {section}"));
                    }
                    None => panic!(
                        "{section} calls BPF helper {imm}, unknown to this test: add it to \
                         helper_since with the kernel release that introduced it"
                    ),
                },
                (0x85, 2) => panic!("{section} calls a kfunc: which kernel has it?"),
                // Atomic (BPF_STX | BPF_ATOMIC, 32 or 64 bits): a plain add (imm 0, the old
                // XADD) is as old as eBPF; fetch, and/or/xor, xchg and cmpxchg came in 5.12.
                (0xc3 | 0xdb, _) if imm != 0 => raise((5, 12), format!("atomic op {imm:#x}")),
                // BPF_JMP32 class.
                (op, _) if op & 0x07 == 0x06 => raise((5, 1), format!("JMP32 in {section}")),
                _ => {}
            }
        }
    }
    let ((major, minor), why) = needs;
    println!("the programs need Linux {major}.{minor}: {why}; helpers: {helpers:?}");
    assert_eq!((major, minor), (5, 11), "the newest thing used: {why}");
    let readme = include_str!("../../../README.md");
    let claim = format!("Linux {major}.{minor} or later");
    assert!(
        readme.contains(&claim),
        "README.md's Requirements must say \"{claim}\" (needed by {why})"
    );
}

/// The programs are compiled with misaligned memory access allowed (monitor-ebpf/build.rs), for
/// word loads from packet headers. The verifier accepts that for packet and map memory on
/// x86-64 and arm64, but refuses any misaligned access to the stack, on every architecture
/// ("misaligned stack access"), and LLVM may join neighbouring stack stores into one that is
/// misaligned. This finds such accesses in the object (the ones through the frame pointer, r10,
/// which is how LLVM addresses its stack slots) before a kernel does.
#[test]
fn no_misaligned_stack_access() {
    let mut bad = Vec::new();
    for (section, code) in code_sections(OBJECT) {
        let mut i = 0;
        while i + 8 <= code.len() {
            let insn = &code[i..i + 8];
            let (op, regs) = (insn[0], insn[1]);
            let off = i16::from_le_bytes([insn[2], insn[3]]);
            i += if op == 0x18 { 16 } else { 8 }; // ld_imm64 takes two slots
            let class = op & 0x07;
            // LDX (class 1) addresses through src, ST/STX (2, 3) through dst; MEM, MEMSX and
            // ATOMIC modes all access memory.
            let base = match class {
                1 => regs >> 4,
                2 | 3 => regs & 0x0f,
                _ => continue,
            };
            if base != 10 || !matches!(op & 0xe0, 0x60 | 0x80 | 0xc0) {
                continue;
            }
            let size = [4i16, 2, 1, 8][usize::from((op >> 3) & 0x03)];
            if off % size != 0 {
                bad.push(format!(
                    "{section}+{}: {size}-byte access at r10{off:+}",
                    i / 8
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "misaligned stack accesses the verifier will refuse:\n{}",
        bad.join("\n")
    );
}
