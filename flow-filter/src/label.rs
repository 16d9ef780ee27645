//! `source_label`, `destination_label`, `node_labels`: Kubernetes label
//! selectors evaluated against Cilium-style labels (`k8s:app=web`,
//! `reserved:world`), as Hubble does.
//!
//! Selector syntax (comma = AND): `key`, `!key`, `key=value`, `key==value`,
//! `key!=value`, `key in (a,b)`, `key notin (a)`, `key>1`, `key<1`; the empty
//! selector matches everything. A key may carry a source prefix
//! (`k8s:app`, `reserved:world`) that must then equal the label's source; a
//! key without one (`app`) — or with `any:` — matches the key from any source.
//! A label without a source (`foo=bar`) has the source `unspec`.

/// One label requirement's operator.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Exists,
    NotExists,
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

/// A selector key: optional source (`None` = any source) and key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    source: Option<String>,
    key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: Key,
    op: Op,
}

/// Splits a Cilium label string into (source, key, value) like Cilium's
/// `ParseLabel`: the source is what precedes the first `:` (`unspec` when
/// there is none, `reserved` for a leading `$`), the value what follows the
/// first `=`.
fn parse_label(label: &str) -> (&str, &str, &str) {
    let (source, rest) = if let Some(rest) = label.strip_prefix('$') {
        ("reserved", rest)
    } else {
        match label.split_once(':') {
            Some(("", rest)) => ("unspec", rest),
            Some((source, rest)) => (source, rest),
            None => ("unspec", label),
        }
    };
    match rest.split_once('=') {
        Some((key, value)) => (source, key, value),
        None => (source, rest, ""),
    }
}

impl Key {
    /// The value of the first label with this key, if any.
    fn find<'l>(&self, labels: &'l [String]) -> Option<&'l str> {
        labels.iter().find_map(|l| {
            let (source, key, value) = parse_label(l);
            let source_ok = self.source.as_deref().is_none_or(|s| s == source);
            (source_ok && key == self.key).then_some(value)
        })
    }
}

impl Requirement {
    fn matches(&self, labels: &[String]) -> bool {
        let found = self.key.find(labels);
        match &self.op {
            Op::Exists => found.is_some(),
            Op::NotExists => found.is_none(),
            Op::In(values) => found.is_some_and(|v| values.iter().any(|x| x == v)),
            Op::NotIn(values) => found.is_none_or(|v| values.iter().all(|x| x != v)),
            Op::Gt(n) => found
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Op::Lt(n) => found
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

/// One compiled selector: all requirements must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// True when `labels` satisfy every requirement.
    pub(crate) fn matches(&self, labels: &[String]) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Parses a selector string.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let tokens = lex(text);
        Parser {
            tokens: &tokens,
            pos: 0,
        }
        .selector()
    }
}

/// Label selectors of one filter field, ORed.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelMatcher {
    selectors: Vec<Selector>,
}

impl LabelMatcher {
    pub(crate) fn compile(values: &[String]) -> Result<Self, (String, String)> {
        let selectors = values
            .iter()
            .map(|v| Selector::parse(v).map_err(|r| (v.clone(), r)))
            .collect::<Result<_, _>>()?;
        Ok(Self { selectors })
    }

    pub(crate) fn matches(&self, labels: &[String]) -> bool {
        self.selectors.iter().any(|s| s.matches(labels))
    }
}

// ---------------------------------------------------------------------------
// Lexer and parser (Kubernetes' selector grammar)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Ident(&'a str),
    /// `!`
    Not,
    /// `=` or `==`
    Eq,
    /// `!=`
    NotEq,
    Comma,
    Open,
    Close,
    Gt,
    Lt,
}

fn is_special(c: char) -> bool {
    c.is_whitespace() || matches!(c, '!' | '=' | ',' | '(' | ')' | '<' | '>')
}

fn lex(text: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let (token, len) = match c {
            '!' if rest.starts_with("!=") => (Token::NotEq, 2),
            '!' => (Token::Not, 1),
            '=' if rest.starts_with("==") => (Token::Eq, 2),
            '=' => (Token::Eq, 1),
            ',' => (Token::Comma, 1),
            '(' => (Token::Open, 1),
            ')' => (Token::Close, 1),
            '>' => (Token::Gt, 1),
            '<' => (Token::Lt, 1),
            _ => {
                let len = rest.find(is_special).unwrap_or(rest.len());
                (Token::Ident(&rest[..len]), len)
            }
        };
        tokens.push(token);
        rest = &rest[len..];
    }
    tokens
}

struct Parser<'t, 'a> {
    tokens: &'t [Token<'a>],
    pos: usize,
}

impl<'a> Parser<'_, 'a> {
    fn peek(&self) -> Option<Token<'a>> {
        self.tokens.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let t = self.peek();
        self.pos += 1;
        t
    }

    fn selector(mut self) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        if self.peek().is_none() {
            return Ok(Selector { requirements });
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                None => return Ok(Selector { requirements }),
                Some(Token::Comma) => {}
                Some(t) => return Err(format!("expected ',' or end of selector, found {t:?}")),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.peek() == Some(Token::Not) {
            self.pos += 1;
            let key = self.key()?;
            return Ok(Requirement {
                key,
                op: Op::NotExists,
            });
        }
        let key = self.key()?;
        let op = match self.peek() {
            None | Some(Token::Comma) => Op::Exists,
            Some(Token::Eq) => {
                self.pos += 1;
                Op::In(vec![self.exact_value()?])
            }
            Some(Token::NotEq) => {
                self.pos += 1;
                Op::NotIn(vec![self.exact_value()?])
            }
            Some(Token::Ident("in")) => {
                self.pos += 1;
                Op::In(self.value_set()?)
            }
            Some(Token::Ident("notin")) => {
                self.pos += 1;
                Op::NotIn(self.value_set()?)
            }
            Some(t @ (Token::Gt | Token::Lt)) => {
                self.pos += 1;
                let Some(Token::Ident(n)) = self.next() else {
                    return Err("expected an integer after '>' or '<'".into());
                };
                let n: i64 = n.parse().map_err(|_| format!("{n:?} is not an integer"))?;
                if t == Token::Gt { Op::Gt(n) } else { Op::Lt(n) }
            }
            Some(t) => return Err(format!("expected an operator after the key, found {t:?}")),
        };
        Ok(Requirement { key, op })
    }

    fn key(&mut self) -> Result<Key, String> {
        let Some(Token::Ident(text)) = self.next() else {
            return Err("expected a label key".into());
        };
        let (source, key) = match text.split_once(':') {
            Some((source, key)) => (Some(source), key),
            None => (None, text),
        };
        if key.is_empty() {
            return Err("empty label key".into());
        }
        if key.contains(':') {
            return Err(format!("label key {text:?} has more than one ':'"));
        }
        if let Some(bad) = key
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')))
        {
            return Err(format!("invalid character {bad:?} in label key {text:?}"));
        }
        let source = match source {
            Some("") => return Err(format!("empty source in label key {text:?}")),
            Some("any") | None => None,
            Some(s) => {
                if let Some(bad) = s
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
                {
                    return Err(format!("invalid character {bad:?} in label source {s:?}"));
                }
                Some(s.to_string())
            }
        };
        Ok(Key {
            source,
            key: key.to_string(),
        })
    }

    /// The value after `=`, `==` or `!=`; empty when the selector or the
    /// requirement ends right there (`app=`).
    fn exact_value(&mut self) -> Result<String, String> {
        match self.peek() {
            None | Some(Token::Comma) => Ok(String::new()),
            Some(Token::Ident(v)) => {
                self.pos += 1;
                validate_value(v)?;
                Ok(v.to_string())
            }
            Some(t) => Err(format!("expected a value, found {t:?}")),
        }
    }

    /// `(a, b)`; `()` is the set holding the empty value, as in Kubernetes.
    fn value_set(&mut self) -> Result<Vec<String>, String> {
        if self.next() != Some(Token::Open) {
            return Err("expected '(' after in/notin".into());
        }
        if self.peek() == Some(Token::Close) {
            self.pos += 1;
            return Ok(vec![String::new()]);
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                Some(Token::Ident(v)) => {
                    validate_value(v)?;
                    values.push(v.to_string());
                }
                t => return Err(format!("expected a value in the set, found {t:?}")),
            }
            match self.next() {
                Some(Token::Comma) => {}
                Some(Token::Close) => return Ok(values),
                t => return Err(format!("expected ',' or ')' in the set, found {t:?}")),
            }
        }
    }
}

/// Kubernetes label values: at most 63 of `[A-Za-z0-9._-]`.
fn validate_value(v: &str) -> Result<(), String> {
    if v.len() > 63 {
        return Err(format!("label value {v:?} is longer than 63 characters"));
    }
    match v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(bad) => Err(format!("invalid character {bad:?} in label value {v:?}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(ls: &[&str]) -> Vec<String> {
        ls.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parse_labels_like_cilium() {
        assert_eq!(parse_label("k8s:app=web"), ("k8s", "app", "web"));
        assert_eq!(parse_label("reserved:world"), ("reserved", "world", ""));
        assert_eq!(parse_label("label1"), ("unspec", "label1", ""));
        assert_eq!(parse_label("label1=val1=x"), ("unspec", "label1", "val1=x"));
        assert_eq!(
            parse_label("k8s:io.kubernetes.pod.namespace=default"),
            ("k8s", "io.kubernetes.pod.namespace", "default")
        );
        assert_eq!(parse_label("$host"), ("reserved", "host", ""));
        assert_eq!(parse_label(":x=y"), ("unspec", "x", "y"));
    }

    /// (selector, labels, matches)
    const CASES: &[(&str, &[&str], bool)] = &[
        // equality, any source
        ("app=web", &["k8s:app=web"], true),
        ("app=web", &["k8s:app=db"], false),
        ("app=web", &["any:app=web"], true),
        ("app=web", &["app=web"], true),
        ("app==web", &["k8s:app=web"], true),
        ("app=web", &[], false),
        // explicit source
        ("k8s:app=web", &["k8s:app=web"], true),
        ("k8s:app=web", &["container:app=web"], false),
        ("any:app=web", &["container:app=web"], true),
        ("reserved:world", &["reserved:world"], true),
        ("reserved:world", &["k8s:world"], false),
        ("reserved:host", &["reserved:world"], false),
        ("world", &["reserved:world"], true),
        ("unspec:label1", &["label1"], true),
        // inequality: absent key matches
        ("app!=web", &["k8s:app=db"], true),
        ("app!=web", &["k8s:app=web"], false),
        ("app!=web", &["k8s:other=x"], true),
        // sets
        ("app in (a,b)", &["k8s:app=b"], true),
        ("app in (a, b)", &["k8s:app=c"], false),
        ("app in (a)", &[], false),
        ("app notin (a)", &["k8s:app=b"], true),
        ("app notin (a)", &["k8s:app=a"], false),
        ("app notin (a)", &[], true),
        ("app notin ()", &["k8s:app="], false),
        ("app notin ()", &["k8s:app=x"], true),
        // existence
        ("app", &["k8s:app=anything"], true),
        ("app", &["k8s:apple=x"], false),
        ("!app", &["k8s:app=x"], false),
        ("!app", &["k8s:other=x"], true),
        ("! app", &[], true),
        // comma = AND
        ("app=web,tier=fe", &["k8s:app=web", "k8s:tier=fe"], true),
        ("app=web, tier=fe", &["k8s:app=web", "k8s:tier=be"], false),
        ("app=web,!canary", &["k8s:app=web"], true),
        (
            "app in (a,b), tier notin (x)",
            &["k8s:app=a", "k8s:tier=y"],
            true,
        ),
        // numeric
        ("replicas>2", &["k8s:replicas=3"], true),
        ("replicas>2", &["k8s:replicas=2"], false),
        ("replicas<2", &["k8s:replicas=1"], true),
        ("replicas<2", &["k8s:replicas=x"], false),
        // empty selector = everything
        ("", &[], true),
        ("", &["k8s:app=web"], true),
        // first label with the key decides (Cilium's LabelArray.Get)
        ("app=b", &["k8s:app=a", "container:app=b"], false),
        ("container:app=b", &["k8s:app=a", "container:app=b"], true),
        // empty value
        ("app=", &["k8s:app"], true),
        ("app=", &["k8s:app=x"], false),
        // Hubble's own test table
        ("label1", &["label1=val1"], true),
        ("label1=val1", &["label1=val1=toomuch"], false),
        ("k8s:app=bar", &["k8s.app=bar"], false),
        ("foo", &["k8s:foo=baz"], true),
        ("any:key", &["any.key"], false),
        (
            "k8s:io.kubernetes.pod.namespace=default",
            &["k8s:io.kubernetes.pod.namespace=default"],
            true,
        ),
    ];

    #[test]
    fn selectors() {
        for (selector, ls, want) in CASES {
            let s = Selector::parse(selector)
                .unwrap_or_else(|e| panic!("{selector:?} does not parse: {e}"));
            assert_eq!(s.matches(&labels(ls)), *want, "{selector:?} vs {ls:?}");
        }
    }

    #[test]
    fn invalid_selectors() {
        for bad in [
            "()",
            "=",
            "app in a",
            "app in (a",
            "app in (a b)",
            "any:k8s:bla",
            "k8s:",
            ":app",
            "app=web,",
            "app = web extra",
            "app>x",
            "app=we b",
            "app=a*b",
            "app notin",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn or_across_values() {
        let values = labels(&["app=web", "app=db"]);
        let m = LabelMatcher::compile(&values).unwrap();
        assert!(m.matches(&labels(&["k8s:app=db"])));
        assert!(!m.matches(&labels(&["k8s:app=cache"])));
    }
}
