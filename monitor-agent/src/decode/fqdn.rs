//! The FQDN cache: which names this node's pods resolved to which addresses, learnt from the
//! DNS answers the L7 capture sees, to fill `source_names` / `destination_names` on flows
//! (Hubble's names from Cilium's DNS proxy; here from packets, per node rather than per
//! endpoint).
//!
//! Bounded twice: an entry lives for the answer's TTL but at least `min_ttl` (Cilium's
//! `--tofqdns-min-ttl` plays the same part: clients keep using an address after its TTL), and
//! the cache holds at most `capacity` addresses; when full, the entry closest to expiry goes,
//! and the eviction is counted.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Most names kept per address (a CDN address can serve thousands of names).
const MAX_NAMES_PER_IP: usize = 8;

/// Counters of the cache, for metrics.
#[derive(Debug, Default)]
pub struct FqdnStats {
    /// Addresses in the cache.
    pub entries: AtomicU64,
    /// Addresses removed to make room before their TTL ran out.
    pub evictions: AtomicU64,
}

/// The names of one address.
#[derive(Default)]
struct Names {
    /// Each name and when it expires.
    entries: Vec<(String, Instant)>,
    /// The names, sorted, as flows carry them: shared by every flow to or from the address
    /// (looked up for both ends of every event, so handing out a clone of this `Arc` keeps the
    /// lookup free of allocations).
    sorted: Arc<[String]>,
    /// The earliest expiry in `entries`: until then `sorted` holds only valid names.
    first_expiry: Option<Instant>,
}

impl Names {
    fn rebuild(&mut self) {
        let mut v: Vec<String> = self.entries.iter().map(|(n, _)| n.clone()).collect();
        v.sort();
        self.sorted = v.into();
        self.first_expiry = self.entries.iter().map(|(_, e)| *e).min();
    }
}

/// Address → names, with expiry.
pub struct FqdnCache {
    by_ip: foldhash::HashMap<IpAddr, Names>,
    capacity: usize,
    min_ttl: Duration,
    stats: Arc<FqdnStats>,
}

impl FqdnCache {
    /// A cache of at most `capacity` addresses (0: names are never learnt).
    pub fn new(capacity: usize, min_ttl: Duration) -> Self {
        FqdnCache {
            by_ip: foldhash::HashMap::default(),
            capacity,
            min_ttl,
            stats: Arc::default(),
        }
    }

    /// The counters, shared with metrics.
    pub fn stats(&self) -> Arc<FqdnStats> {
        self.stats.clone()
    }

    /// Learns that `name` (without the trailing dot) resolved to `ips` with `ttl` seconds.
    pub fn insert(&mut self, name: &str, ips: &[IpAddr], ttl: u32, now: Instant) {
        if self.capacity == 0 || name.is_empty() {
            return;
        }
        let expires = now + Duration::from_secs(u64::from(ttl)).max(self.min_ttl);
        for ip in ips {
            if !self.by_ip.contains_key(ip) && self.by_ip.len() >= self.capacity {
                self.expire(now);
                if self.by_ip.len() >= self.capacity {
                    self.evict_one();
                }
            }
            let slot = self.by_ip.entry(*ip).or_default();
            let names = &mut slot.entries;
            match names.iter_mut().find(|(n, _)| n == name) {
                Some((_, e)) => *e = (*e).max(expires),
                None => {
                    if names.len() >= MAX_NAMES_PER_IP {
                        // The oldest-expiring name of this address makes room.
                        if let Some(i) = (0..names.len()).min_by_key(|&i| names[i].1) {
                            names.swap_remove(i);
                        }
                    }
                    names.push((name.to_owned(), expires));
                }
            }
            slot.rebuild();
        }
        self.stats
            .entries
            .store(self.by_ip.len() as u64, Ordering::Relaxed);
    }

    /// The names of `ip` still valid at `now`, sorted (Hubble's order is its cache's; sorted is
    /// stable for clients and tests); `None` without any. Allocates nothing unless a name
    /// expired since the last [`FqdnCache::expire`].
    pub fn shared_names(&self, ip: &IpAddr, now: Instant) -> Option<Arc<[String]>> {
        let names = self.by_ip.get(ip)?;
        if names.first_expiry.is_some_and(|e| e > now) {
            return Some(names.sorted.clone());
        }
        let mut v: Vec<String> = names
            .entries
            .iter()
            .filter(|(_, e)| *e > now)
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        (!v.is_empty()).then(|| v.into())
    }

    /// [`FqdnCache::shared_names`] as a list (empty without any).
    pub fn names(&self, ip: &IpAddr, now: Instant) -> Vec<String> {
        self.shared_names(ip, now)
            .map(|a| a.to_vec())
            .unwrap_or_default()
    }

    /// Removes what expired by `now` (the agent calls it every second).
    pub fn expire(&mut self, now: Instant) {
        self.by_ip.retain(|_, names| {
            let before = names.entries.len();
            names.entries.retain(|(_, e)| *e > now);
            if names.entries.len() != before {
                names.rebuild();
            }
            !names.entries.is_empty()
        });
        self.stats
            .entries
            .store(self.by_ip.len() as u64, Ordering::Relaxed);
    }

    fn evict_one(&mut self) {
        let victim = self
            .by_ip
            .iter()
            .min_by_key(|(_, names)| names.entries.iter().map(|(_, e)| *e).max())
            .map(|(ip, _)| *ip);
        if let Some(ip) = victim {
            self.by_ip.remove(&ip);
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_live_for_the_ttl_but_at_least_the_minimum() {
        let t0 = Instant::now();
        let mut c = FqdnCache::new(10, Duration::from_secs(60));
        c.insert("one.one.one.one", &[ip("1.0.0.1"), ip("1.1.1.1")], 5, t0);
        c.insert("a.example", &[ip("1.0.0.1")], 300, t0);
        assert_eq!(
            c.names(&ip("1.0.0.1"), t0),
            ["a.example", "one.one.one.one"]
        );
        let later = t0 + Duration::from_secs(61);
        assert_eq!(c.names(&ip("1.0.0.1"), later), ["a.example"]);
        c.expire(later);
        assert!(c.names(&ip("1.1.1.1"), later).is_empty());
        assert_eq!(c.names(&ip("1.0.0.1"), later), ["a.example"]);
        assert_eq!(c.stats().entries.load(Ordering::Relaxed), 1);
        // Between expiries every lookup lends the same shared list.
        let (a, b) = (
            c.shared_names(&ip("1.0.0.1"), later).unwrap(),
            c.shared_names(&ip("1.0.0.1"), later).unwrap(),
        );
        assert!(Arc::ptr_eq(&a, &b));
        assert!(c.shared_names(&ip("1.1.1.1"), later).is_none());
    }

    #[test]
    fn a_full_cache_evicts_the_entry_closest_to_expiry_and_counts_it() {
        let t0 = Instant::now();
        let mut c = FqdnCache::new(2, Duration::from_secs(1));
        c.insert("short", &[ip("10.0.0.1")], 10, t0);
        c.insert("long", &[ip("10.0.0.2")], 1000, t0);
        c.insert("new", &[ip("10.0.0.3")], 100, t0);
        assert!(c.names(&ip("10.0.0.1"), t0).is_empty());
        assert_eq!(c.names(&ip("10.0.0.2"), t0), ["long"]);
        assert_eq!(c.names(&ip("10.0.0.3"), t0), ["new"]);
        assert_eq!(c.stats().evictions.load(Ordering::Relaxed), 1);
        // Names per address are bounded too.
        for i in 0..20 {
            c.insert(&format!("n{i}"), &[ip("10.0.0.3")], 100 + i, t0);
        }
        assert_eq!(c.names(&ip("10.0.0.3"), t0).len(), MAX_NAMES_PER_IP);
    }
}
