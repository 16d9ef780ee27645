//! A small reader for the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! We need two things from it: the offsets of a few `sk_buff` / `net_device` / `net` members for
//! the drop tracepoint (they move between kernel builds), and the names of `enum
//! skb_drop_reason` (their numbers move between kernel versions). A full BTF library is not
//! needed for that; the format is documented in the kernel's `Documentation/bpf/btf.rst`.

use std::collections::HashMap;

/// Errors reading BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The blob is not BTF or is cut short.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// A type or member we need is not there.
    #[error("BTF has no {0}")]
    Missing(String),
}

const BTF_MAGIC: u16 = 0xeb9f;

// Kinds (btf.rst, "BTF Type Encoding").
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    type_id: u32,
    /// Offset in bits from the start of the containing struct.
    bit_offset: u32,
}

#[derive(Debug, Clone)]
enum Type {
    /// struct or union: its members.
    Composite { name: u32, members: Vec<Member> },
    /// enum or enum64: (name, value) pairs.
    Enum { name: u32, values: Vec<(u32, i64)> },
    /// typedef / const / volatile / restrict / type tag: refers to another type.
    Alias { type_id: u32 },
    /// Anything else (we never look inside).
    Other,
}

/// A parsed BTF blob.
pub struct Btf {
    strings: Vec<u8>,
    /// Indexed by type id (id 0 is `void`).
    types: Vec<Type>,
    /// Named structs/unions/enums -> ids.
    by_name: HashMap<String, Vec<u32>>,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, BtfError> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(BtfError::Malformed("truncated"))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> std::io::Result<Result<Self, BtfError>> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux")?;
        Ok(Self::parse(&data))
    }

    /// Parses a little-endian BTF blob.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if u16_at(data, 0)? != BTF_MAGIC {
            return Err(BtfError::Malformed(
                "bad magic (big-endian BTF is not supported)",
            ));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_bytes = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();

        let mut types = vec![Type::Other]; // id 0: void
        let mut off = 0;
        while off < types_bytes.len() {
            let name = u32_at(types_bytes, off)?;
            let info = u32_at(types_bytes, off + 4)?;
            let size_or_type = u32_at(types_bytes, off + 8)?;
            off += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let ty = match kind {
                KIND_INT => {
                    off += 4;
                    Type::Other
                }
                KIND_PTR | KIND_FWD | KIND_FUNC | KIND_FLOAT => Type::Other,
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias {
                        type_id: size_or_type,
                    }
                }
                KIND_ARRAY => {
                    off += 12;
                    Type::Other
                }
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let m_name = u32_at(types_bytes, off)?;
                        let m_type = u32_at(types_bytes, off + 4)?;
                        let m_off = u32_at(types_bytes, off + 8)?;
                        // With kind_flag, the top 8 bits are a bitfield size.
                        let bit_offset = if kind_flag {
                            m_off & 0x00ff_ffff
                        } else {
                            m_off
                        };
                        members.push(Member {
                            name: m_name,
                            type_id: m_type,
                            bit_offset,
                        });
                        off += 12;
                    }
                    Type::Composite { name, members }
                }
                KIND_ENUM => {
                    let mut values = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let v_name = u32_at(types_bytes, off)?;
                        let v = u32_at(types_bytes, off + 4)? as i32 as i64;
                        values.push((v_name, v));
                        off += 8;
                    }
                    Type::Enum { name, values }
                }
                KIND_ENUM64 => {
                    let mut values = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let v_name = u32_at(types_bytes, off)?;
                        let lo = u32_at(types_bytes, off + 4)? as u64;
                        let hi = u32_at(types_bytes, off + 8)? as u64;
                        values.push((v_name, (hi << 32 | lo) as i64));
                        off += 12;
                    }
                    Type::Enum { name, values }
                }
                KIND_FUNC_PROTO => {
                    off += 8 * vlen;
                    Type::Other
                }
                KIND_VAR => {
                    off += 4;
                    Type::Other
                }
                KIND_DATASEC => {
                    off += 12 * vlen;
                    Type::Other
                }
                KIND_DECL_TAG => {
                    off += 4;
                    Type::Other
                }
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            types.push(ty);
        }

        let mut btf = Btf {
            strings,
            types,
            by_name: HashMap::new(),
        };
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, ty) in btf.types.iter().enumerate() {
            let name = match ty {
                Type::Composite { name, .. } | Type::Enum { name, .. } => *name,
                _ => continue,
            };
            if name != 0 {
                by_name
                    .entry(btf.str_at(name).to_owned())
                    .or_default()
                    .push(id as u32);
            }
        }
        btf.by_name = by_name;
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            match self.types.get(id as usize)? {
                Type::Alias { type_id } => id = *type_id,
                ty => return Some(ty),
            }
        }
        None
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous structs and unions
    /// (the kernel groups many `sk_buff` members in them).
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let ids = self
            .by_name
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for &id in ids {
            if let Some(Type::Composite { members, .. }) = self.types.get(id as usize)
                && let Some(bits) = self.find_member(members, member, 0)
            {
                return Ok(bits / 8);
            }
        }
        Err(BtfError::Missing(format!("{name}.{member}")))
    }

    fn find_member(&self, members: &[Member], wanted: &str, base: u32) -> Option<u32> {
        for m in members {
            if m.name != 0 && self.str_at(m.name) == wanted {
                return Some(base + m.bit_offset);
            }
        }
        for m in members.iter().filter(|m| m.name == 0) {
            if let Some(Type::Composite { members: inner, .. }) = self.resolve(m.type_id)
                && let Some(found) = self.find_member(inner, wanted, base + m.bit_offset)
            {
                return Some(found);
            }
        }
        None
    }

    /// The values of `enum name`, as (value, name) pairs.
    pub fn enum_values(&self, name: &str) -> Result<Vec<(i64, String)>, BtfError> {
        let ids = self
            .by_name
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for &id in ids {
            if let Some(Type::Enum { values, .. }) = self.types.get(id as usize) {
                return Ok(values
                    .iter()
                    .map(|(n, v)| (*v, self.str_at(*n).to_owned()))
                    .collect());
            }
        }
        Err(BtfError::Missing(format!("enum {name}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob by hand: `struct s { int a; union { int b; struct { int c; } }; }` and
    /// `enum e { X = 1, Y = 7 }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0c\0e\0X\0Y\0";
        let s = |name: &str| -> u32 {
            let pos = strings.windows(name.len() + 2).position(|w| {
                w[0] == 0 && &w[1..=name.len()] == name.as_bytes() && w[name.len() + 1] == 0
            });
            pos.expect("string") as u32 + 1
        };
        let mut t = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                t.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int (size 4)
        push(&[s("int"), KIND_INT << 24, 4, 32]);
        // 2: struct { int c; } (anonymous), size 4
        push(&[0, KIND_STRUCT << 24 | 1, 4, s("c"), 1, 0]);
        // 3: union { int b; struct {int c;}; } (anonymous), size 4
        push(&[0, KIND_UNION << 24 | 2, 4, s("b"), 1, 0, 0, 2, 0]);
        // 4: struct s { int a; union ...; } size 8; union at byte 4
        push(&[s("s"), KIND_STRUCT << 24 | 2, 8, s("a"), 1, 0, 0, 3, 32]);
        // 5: typedef-free enum e
        push(&[s("e"), KIND_ENUM << 24 | 2, 4, s("X"), 1, s("Y"), 7]);
        let mut blob = Vec::new();
        let hdr_len = 24u32;
        blob.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        blob.push(1); // version
        blob.push(0); // flags
        blob.extend_from_slice(&hdr_len.to_le_bytes());
        blob.extend_from_slice(&0u32.to_le_bytes()); // type_off
        blob.extend_from_slice(&(t.len() as u32).to_le_bytes());
        blob.extend_from_slice(&(t.len() as u32).to_le_bytes()); // str_off
        blob.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        blob.extend_from_slice(&t);
        blob.extend_from_slice(strings);
        blob
    }

    #[test]
    fn finds_members_through_anonymous_unions() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert_eq!(btf.member_offset("s", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("s", "b").unwrap(), 4);
        assert_eq!(btf.member_offset("s", "c").unwrap(), 4);
        assert!(matches!(
            btf.member_offset("s", "zz"),
            Err(BtfError::Missing(_))
        ));
    }

    #[test]
    fn reads_enum_values() {
        let btf = Btf::parse(&sample()).expect("parse");
        let v = btf.enum_values("e").unwrap();
        assert_eq!(v, vec![(1, "X".to_owned()), (7, "Y".to_owned())]);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, not at all").is_err());
        assert!(Btf::parse(&[]).is_err());
    }

    /// On the machine's own kernel (skipped where there is no BTF, failed under CI).
    #[test]
    fn running_kernel_has_the_members_we_need() {
        let Ok(Ok(btf)) = Btf::from_sys_fs() else {
            testbed::skip(
                "btf::tests::running_kernel_has_the_members_we_need",
                "no readable /sys/kernel/btf/vmlinux",
            );
            return;
        };
        for m in [
            "head",
            "network_header",
            "transport_header",
            "mac_header",
            "dev",
            "len",
        ] {
            btf.member_offset("sk_buff", m).unwrap();
        }
        btf.member_offset("net_device", "ifindex").unwrap();
        let reasons = btf.enum_values("skb_drop_reason").unwrap();
        assert!(
            reasons
                .iter()
                .any(|(_, n)| n == "SKB_DROP_REASON_NETFILTER_DROP")
        );
    }
}
