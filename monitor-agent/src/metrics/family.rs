//! A counter family for the per-flow hot path, with series that can expire.
//!
//! prometheus-client's `Family` wants an owned label set for every lookup (so a few `String`s
//! per flow and per metric) and cannot be iterated, so it cannot forget series whose endpoint is
//! gone. This one is looked up with borrowed `&str` values (hashed in place, compared without
//! allocating), remembers when each series was last incremented, and is encoded by a
//! [`prometheus_client::collector::Collector`]. Allocation happens only when a series is new.
//!
//! Cardinality is bounded twice: series of a family whose labels name endpoints are removed
//! when not incremented for the configured time (see [`CounterFamily::expire`]), and a family
//! never holds more than its cap of series (a new series past the cap is not created; the
//! flow is still counted in the families that have room, and the refusal is counted).

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    sync::{
        RwLock,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
};

/// The label values are hashed once by `hash_values`; the map then uses that hash as is.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _bytes: &[u8]) {
        unreachable!("only u64 keys are hashed");
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Buckets = HashMap<u64, Vec<Series>, BuildHasherDefault<PassThrough>>;

struct Series {
    values: Box<[Box<str>]>,
    count: AtomicU64,
    /// [`CounterFamily::inc`]'s `now` at the last increment.
    last_seen: AtomicU32,
}

impl Series {
    /// True if this series' label values are `values`.
    fn is<'v>(&self, mut values: impl Iterator<Item = &'v str>) -> bool {
        self.values.iter().all(|a| {
            values
                .next()
                .is_some_and(|b| same(a.as_bytes(), b.as_bytes()))
        }) && values.next().is_none()
    }
}

/// `a == b` for the short strings label values are, inline: `==` on slices calls `memcmp`
/// once per value, and those calls were a third of the metrics' cost per flow by a profile of
/// benchmark 3 (eight values per flow for the `flow` metric alone).
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut wa, mut wb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut wa).zip(&mut wb) {
        let word = |c: &[u8]| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        if word(x) != word(y) {
            return false;
        }
    }
    wa.remainder()
        .iter()
        .zip(wb.remainder())
        .all(|(x, y)| x == y)
}

/// A counter with a fixed list of label names and any number of series.
pub struct CounterFamily {
    /// Full name without `_total` (the encoder adds it).
    name: &'static str,
    help: &'static str,
    label_names: Vec<&'static str>,
    max_series: usize,
    series: RwLock<Buckets>,
    len: AtomicU64,
    /// Series not created because the family was full.
    refused: AtomicU64,
}

impl std::fmt::Debug for CounterFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterFamily")
            .field("name", &self.name)
            .field("labels", &self.label_names)
            .field("series", &self.len())
            .finish()
    }
}

/// FxHash's multiply-and-rotate over 8-byte words, with each value's length mixed in so that
/// ("a", "bc") and ("ab", "c") differ. SipHash (std's default) took about a third of
/// `observe_flow`; resistance to crafted collisions buys little here: values come from closed
/// sets, pod metadata or port numbers, and the series cap bounds every bucket.
fn hash_values<'v>(values: impl Iterator<Item = &'v str>) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = 0;
    let mut add = |w: u64| h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    for v in values {
        let mut words = v.as_bytes().chunks_exact(8);
        for c in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            add(u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        add(u64::from_le_bytes(w));
        add(v.len() as u64);
    }
    // murmur3's finaliser: the map indexes buckets by the low bits, which Fx mixes poorly.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl CounterFamily {
    /// A family named `name` (e.g. `hubble_drop`, exported as `hubble_drop_total`).
    pub fn new(
        name: &'static str,
        help: &'static str,
        label_names: Vec<&'static str>,
        max_series: usize,
    ) -> Self {
        CounterFamily {
            name,
            help,
            label_names,
            max_series,
            series: RwLock::default(),
            len: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The exported name, without `_total`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The help text.
    pub fn help(&self) -> &'static str {
        self.help
    }

    /// Calls `f` with each series' label values (in the order of the label names) and count:
    /// for exporters that push (OTLP), which cannot go through a Prometheus encoder.
    pub fn for_each(&self, mut f: impl FnMut(&[Box<str>], u64)) {
        let Ok(map) = self.series.read() else { return };
        for s in map.values().flatten() {
            f(&s.values, s.count.load(Ordering::Relaxed));
        }
    }

    /// Label names, in the order [`CounterFamily::inc`] takes the values.
    pub fn label_names(&self) -> &[&'static str] {
        &self.label_names
    }

    /// Number of series.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    /// True without series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Series refused because the family was full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Adds one to the series of `values` (one per label name), creating it if needed.
    /// `now` is a coarse clock (seconds) used by [`CounterFamily::expire`].
    pub fn inc(&self, values: &[&str], now: u32) {
        self.inc_parts(values, std::iter::empty(), now);
    }

    /// [`CounterFamily::inc`] with the values given in two parts (the metric's own labels,
    /// then the context's), so that the caller need not copy them into one array.
    pub fn inc_parts<'t>(
        &self,
        head: &[&'t str],
        tail: impl Iterator<Item = &'t str> + Clone,
        now: u32,
    ) {
        let values = || head.iter().copied().chain(tail.clone());
        debug_assert_eq!(values().count(), self.label_names.len(), "{}", self.name);
        let hash = hash_values(values());
        {
            let Ok(map) = self.series.read() else { return };
            if let Some(s) = map
                .get(&hash)
                .and_then(|b| b.iter().find(|s| s.is(values())))
            {
                s.count.fetch_add(1, Ordering::Relaxed);
                s.last_seen.store(now, Ordering::Relaxed);
                return;
            }
        }
        let Ok(mut map) = self.series.write() else {
            return;
        };
        let bucket = map.entry(hash).or_default();
        // Another thread may have created it between the two locks.
        if let Some(s) = bucket.iter().find(|s| s.is(values())) {
            s.count.fetch_add(1, Ordering::Relaxed);
            s.last_seen.store(now, Ordering::Relaxed);
            return;
        }
        if self.len() as usize >= self.max_series {
            self.refused.fetch_add(1, Ordering::Relaxed);
            if bucket.is_empty() {
                map.remove(&hash);
            }
            return;
        }
        bucket.push(Series {
            values: values().map(Box::from).collect(),
            count: AtomicU64::new(1),
            last_seen: AtomicU32::new(now),
        });
        self.len.fetch_add(1, Ordering::Relaxed);
    }

    /// The value of one series (tests and status).
    pub fn get(&self, values: &[&str]) -> Option<u64> {
        let map = self.series.read().ok()?;
        map.get(&hash_values(values.iter().copied()))?
            .iter()
            .find(|s| s.is(values.iter().copied()))
            .map(|s| s.count.load(Ordering::Relaxed))
    }

    /// Removes the series not incremented since `now - ttl` (seconds); returns how many.
    pub fn expire(&self, now: u32, ttl: u32) -> u64 {
        let Ok(mut map) = self.series.write() else {
            return 0;
        };
        let mut removed = 0;
        map.retain(|_, bucket| {
            bucket.retain(|s| {
                let keep = now.saturating_sub(s.last_seen.load(Ordering::Relaxed)) < ttl;
                removed += u64::from(!keep);
                keep
            });
            !bucket.is_empty()
        });
        self.len.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    /// Writes the family (HELP, TYPE and every series), sorted so that scrapes are stable.
    pub fn encode_into(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric =
            encoder.encode_descriptor(self.name, self.help, None, MetricType::Counter)?;
        let Ok(map) = self.series.read() else {
            return Ok(());
        };
        let mut all: Vec<&Series> = map.values().flatten().collect();
        all.sort_by(|a, b| a.values.cmp(&b.values));
        for s in all {
            let labels: Vec<(&str, &str)> = self
                .label_names
                .iter()
                .copied()
                .zip(s.values.iter().map(|v| &**v))
                .collect();
            metric
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&s.count.load(Ordering::Relaxed), None)?;
        }
        Ok(())
    }
}

impl Collector for CounterFamily {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_into(&mut encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn text(f: &Arc<CounterFamily>) -> String {
        let mut r = prometheus_client::registry::Registry::default();
        r.register_collector(Box::new(f.clone()));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &r).unwrap();
        out
    }

    /// The inline comparison is `==` for every pair of lengths around the word size, equal or
    /// differing in any one byte.
    #[test]
    fn same_is_equality() {
        let base: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for n in 0..base.len() {
            for m in 0..base.len() {
                let (a, b) = (&base[..n], &base[..m]);
                assert_eq!(same(a, b), a == b, "{n} {m}");
            }
            for i in 0..n {
                let mut other = base[..n].to_vec();
                other[i] ^= 1;
                assert!(!same(&base[..n], &other), "{n} {i}");
            }
        }
    }

    /// Values given in two parts find the series the same values in one part made.
    #[test]
    fn parts_are_the_values_in_order() {
        let f = CounterFamily::new("x", "x", vec!["a", "b", "c"], 10);
        f.inc(&["one", "two", "three"], 0);
        f.inc_parts(&["one"], ["two", "three"].into_iter(), 0);
        f.inc_parts(&["one", "two"], ["three"].into_iter(), 0);
        f.inc_parts(&["one", "two"], ["thre", "e"].into_iter().take(1), 0);
        assert_eq!(f.get(&["one", "two", "three"]), Some(3));
        assert_eq!(f.get(&["one", "two", "thre"]), Some(1));
    }

    #[test]
    fn counts_encodes_and_escapes() {
        let f = Arc::new(CounterFamily::new(
            "hubble_drop",
            "Number of drops",
            vec!["reason", "protocol"],
            10,
        ));
        f.inc(&["POLICY_DENIED", "TCP"], 0);
        f.inc(&["POLICY_DENIED", "TCP"], 0);
        f.inc(&["NETFILTER_DROP", "UDP\"x"], 0);
        assert_eq!(f.get(&["POLICY_DENIED", "TCP"]), Some(2));
        assert_eq!(f.len(), 2);
        assert_eq!(
            text(&f),
            "# HELP hubble_drop_total Number of drops\n\
             # TYPE hubble_drop_total counter\n\
             hubble_drop_total{reason=\"NETFILTER_DROP\",protocol=\"UDP\\\"x\"} 1\n\
             hubble_drop_total{reason=\"POLICY_DENIED\",protocol=\"TCP\"} 2\n"
        );
    }

    #[test]
    fn values_are_not_confused_by_concatenation() {
        let f = CounterFamily::new("x", "x", vec!["a", "b"], 10);
        f.inc(&["a", "bc"], 0);
        f.inc(&["ab", "c"], 0);
        assert_eq!(f.len(), 2);
        assert_eq!(f.get(&["a", "bc"]), Some(1));
    }

    #[test]
    fn expiry_and_cap() {
        let f = CounterFamily::new("x", "x", vec!["pod"], 2);
        f.inc(&["a"], 10);
        f.inc(&["b"], 100);
        f.inc(&["c"], 100);
        assert_eq!((f.len(), f.refused()), (2, 1), "the cap holds");
        assert_eq!(f.expire(100, 60), 1, "a was last seen 90 s ago");
        assert_eq!(f.get(&["a"]), None);
        assert_eq!(f.get(&["b"]), Some(1));
        f.inc(&["c"], 101);
        assert_eq!(f.get(&["c"]), Some(1), "room again after expiry");
    }
}
