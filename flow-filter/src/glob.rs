//! Small glob patterns for node names and DNS names: `*` matches a run of
//! characters from a class (never `/`), `?` one such character, every other
//! character itself (ASCII case-insensitively).
//!
//! Matching simulates the pattern as an NFA over a 128-bit state set: no
//! allocation and no exponential backtracking, whatever the input.

/// The longest pattern we accept (one bit of state per pattern position).
pub(crate) const MAX_PATTERN_LEN: usize = 127;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(u8),
    One,
    Star,
}

/// A compiled glob.
#[derive(Debug, Clone)]
pub(crate) struct Glob {
    toks: Vec<Tok>,
    /// Characters `*` and `?` may match.
    class: fn(u8) -> bool,
}

impl Glob {
    /// Compiles `pattern`; the caller validated its characters. Errors when
    /// it is longer than [`MAX_PATTERN_LEN`].
    pub(crate) fn new(pattern: &str, class: fn(u8) -> bool) -> Result<Self, String> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(format!("pattern longer than {MAX_PATTERN_LEN} characters"));
        }
        let toks = pattern
            .bytes()
            .map(|b| match b {
                b'*' => Tok::Star,
                b'?' => Tok::One,
                b => Tok::Lit(b.to_ascii_lowercase()),
            })
            .collect();
        Ok(Self { toks, class })
    }

    /// A glob that matches every string of `class` characters (`*`).
    pub(crate) fn any(class: fn(u8) -> bool) -> Self {
        Self {
            toks: vec![Tok::Star],
            class,
        }
    }

    /// Adds the states reachable through stars matching the empty string.
    fn closure(&self, mut states: u128) -> u128 {
        for (i, tok) in self.toks.iter().enumerate() {
            if *tok == Tok::Star && states & (1 << i) != 0 {
                states |= 1 << (i + 1);
            }
        }
        states
    }

    /// True when the whole `text` matches.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let mut states = self.closure(1);
        for c in text.bytes() {
            let c = c.to_ascii_lowercase();
            let mut next = 0u128;
            for (i, tok) in self.toks.iter().enumerate() {
                if states & (1 << i) == 0 {
                    continue;
                }
                match *tok {
                    Tok::Lit(l) if l == c => next |= 1 << (i + 1),
                    Tok::One if (self.class)(c) => next |= 1 << (i + 1),
                    Tok::Star if (self.class)(c) => next |= 1 << i,
                    _ => {}
                }
            }
            states = self.closure(next);
            if states == 0 {
                return false;
            }
        }
        states & (1 << self.toks.len()) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(c: u8) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')
    }

    #[test]
    fn globs() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything.example", true),
            ("*", "no/slash", false),
            ("k8s*", "k8s1", true),
            ("k8s*", "k8", false),
            ("*.example.com", "www.example.com", true),
            ("*.example.com", "example.com", false),
            ("node-?", "node-1", true),
            ("node-?", "node-12", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("Node", "nODE", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ];
        for (pattern, text, want) in cases {
            let g = Glob::new(pattern, dns).unwrap();
            assert_eq!(g.matches(text), *want, "{pattern:?} vs {text:?}");
        }
        assert!(Glob::any(dns).matches("x.y"));
        assert!(Glob::new(&"*".repeat(200), dns).is_err());
        // Many stars against a long mismatch stays linear.
        let g = Glob::new(&"*a".repeat(60), dns).unwrap();
        assert!(!g.matches(&"a".repeat(59)));
        assert!(g.matches(&"a".repeat(4000)));
    }
}
