//! List-then-watch for one kind of object, with resync: the API server's protocol
//! (<https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes>)
//! in one loop. Why not kube-runtime's watcher: see the module docs of [`super`].

use std::{fmt::Debug, time::Duration};

use futures::StreamExt as _;
use kube::{
    Api,
    api::{ListParams, WatchEvent, WatchParams},
};
use serde::de::DeserializeOwned;
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{KubernetesStatus, Resource, WatchTuning};

/// What one kind's loop tells the source.
#[derive(Debug)]
pub(crate) enum Update<K> {
    /// A complete list: the kind's whole state, replacing what was known.
    Listed(Vec<K>),
    /// An object was added or changed (boxed: a Pod is 2 KiB, a channel slot need not be).
    Applied(Box<K>),
    /// An object was deleted (its last state).
    Deleted(Box<K>),
}

/// One kind's list-then-watch loop.
pub(crate) struct ListWatch<K: Clone> {
    pub(crate) api: Api<K>,
    pub(crate) resource: Resource,
    pub(crate) field_selector: Option<String>,
    pub(crate) tuning: WatchTuning,
    pub(crate) status: std::sync::Arc<KubernetesStatus>,
}

/// Why a list failed in a way kube-rs does not call an error.
#[derive(Debug, thiserror::Error)]
#[error("the list has no resourceVersion to watch from")]
struct NoResourceVersion;

/// Exponential backoff with jitter: each pause is a random duration between half and all of
/// the current step, which doubles from `min` to `max`. Jitter spreads the retries of every
/// agent of a cluster when the API server comes back.
struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    rng: u64,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        // Seeded per process and per kind: agents must not retry in lockstep.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        Backoff {
            min,
            max: max.max(min),
            step: min,
            rng: seed | 1,
        }
    }

    fn next(&mut self) -> Duration {
        // xorshift64: good enough to spread retries, no dependency.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        half + Duration::from_nanos(self.rng % (half.as_nanos() as u64).max(1))
    }

    fn reset(&mut self) {
        self.step = self.min;
    }
}

/// How one watch request ended.
enum WatchEnd {
    /// The server ended it, or the connection dropped: watch again from the last version.
    Closed,
    /// The version expired (410 Gone): list again.
    Gone,
    /// An error: pause, then watch again from the last version.
    Failed,
    /// Cancelled, or the source is gone.
    Stop,
}

impl<K> ListWatch<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    /// Lists, then watches, forever: sends each update to `tx` (through `wrap`) until `cancel`
    /// fires or the receiver is gone.
    pub(crate) async fn run<C>(
        self,
        tx: mpsc::Sender<C>,
        wrap: fn(Update<K>) -> C,
        cancel: CancellationToken,
    ) {
        let mut backoff = Backoff::new(self.tuning.min_backoff, self.tuning.max_backoff);
        loop {
            // List.
            let listed = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.list() => r,
            };
            let (items, mut version) = match listed {
                Ok(l) => l,
                Err(e) => {
                    self.failed("list", &*e);
                    if !pause(backoff.next(), &cancel).await {
                        return;
                    }
                    continue;
                }
            };
            self.succeeded();
            debug!(resource = self.resource.as_str(), count = items.len(), %version, "listed");
            self.status
                .of(self.resource)
                .synced
                .store(true, std::sync::atomic::Ordering::Relaxed);
            if tx.send(wrap(Update::Listed(items))).await.is_err() {
                return;
            }
            backoff.reset();

            // Watch from the list's version until it expires.
            loop {
                let started = Instant::now();
                let end = self.watch_once(&mut version, &tx, wrap, &cancel).await;
                match end {
                    WatchEnd::Stop => return,
                    WatchEnd::Gone => {
                        self.status
                            .of(self.resource)
                            .relists
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        info!(
                            resource = self.resource.as_str(),
                            %version,
                            "Kubernetes watch: resource version expired (410 Gone); listing again"
                        );
                        break;
                    }
                    WatchEnd::Failed => {
                        if !pause(backoff.next(), &cancel).await {
                            return;
                        }
                    }
                    WatchEnd::Closed => {
                        // A watch that keeps ending at once (a proxy cutting it) must not spin.
                        if started.elapsed() < Duration::from_secs(1)
                            && !pause(backoff.next(), &cancel).await
                        {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The whole collection, page by page, and the version to watch from.
    async fn list(&self) -> Result<(Vec<K>, String), Box<dyn std::error::Error + Send + Sync>> {
        let mut items = Vec::new();
        let mut continue_token = None;
        loop {
            let params = ListParams {
                field_selector: self.field_selector.clone(),
                limit: Some(self.tuning.page_size),
                continue_token: continue_token.take(),
                ..ListParams::default()
            };
            let page = self.api.list(&params).await?;
            items.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => continue_token = Some(c),
                None => {
                    return match page.metadata.resource_version.filter(|v| !v.is_empty()) {
                        Some(v) => Ok((items, v)),
                        None => Err(Box::new(NoResourceVersion)),
                    };
                }
            }
        }
    }

    /// One watch request from `version`, which follows the events.
    async fn watch_once<C>(
        &self,
        version: &mut String,
        tx: &mpsc::Sender<C>,
        wrap: fn(Update<K>) -> C,
        cancel: &CancellationToken,
    ) -> WatchEnd {
        let timeout = self
            .tuning
            .watch_timeout
            .as_secs()
            .clamp(1, u64::from(u32::MAX)) as u32;
        let params = WatchParams {
            field_selector: self.field_selector.clone(),
            timeout: Some(timeout),
            bookmarks: true,
            ..WatchParams::default()
        };
        let started = tokio::select! {
            _ = cancel.cancelled() => return WatchEnd::Stop,
            r = self.api.watch(&params, version) => r,
        };
        let stream = match started {
            Ok(s) => s,
            // Some servers answer an expired version with a 410 status rather than an event.
            Err(kube::Error::Api(s)) if s.code == 410 => return WatchEnd::Gone,
            Err(e) => {
                self.failed("watch", &e);
                return WatchEnd::Failed;
            }
        };
        self.succeeded();
        let mut stream = std::pin::pin!(stream);
        // The server ends the watch after `timeoutSeconds`; a connection that died without a
        // word (no FIN, no RST) would otherwise block here forever.
        let deadline = Instant::now() + Duration::from_secs(u64::from(timeout) + 15);
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return WatchEnd::Stop,
                n = tokio::time::timeout_at(deadline, stream.next()) => n,
            };
            let update = match next {
                Err(_elapsed) => {
                    debug!(
                        resource = self.resource.as_str(),
                        "watch outlived its timeout"
                    );
                    return WatchEnd::Closed;
                }
                // kube-rs ends the stream on the server's close and on a connection cut
                // mid-chunk (an unexpected EOF): both resume from the last version.
                Ok(None) => return WatchEnd::Closed,
                Ok(Some(Ok(event))) => match event {
                    WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                        advance(version, o.meta().resource_version.as_deref());
                        Update::Applied(Box::new(o))
                    }
                    WatchEvent::Deleted(o) => {
                        advance(version, o.meta().resource_version.as_deref());
                        Update::Deleted(Box::new(o))
                    }
                    WatchEvent::Bookmark(b) => {
                        advance(version, Some(&b.metadata.resource_version));
                        continue;
                    }
                    WatchEvent::Error(s) if s.code == 410 => return WatchEnd::Gone,
                    WatchEvent::Error(s) => {
                        self.failed("watch", &kube::Error::Api(s));
                        return WatchEnd::Failed;
                    }
                },
                Ok(Some(Err(e))) => {
                    self.failed("watch stream", &e);
                    return WatchEnd::Failed;
                }
            };
            if tx.send(wrap(update)).await.is_err() {
                return WatchEnd::Stop;
            }
        }
    }

    fn succeeded(&self) {
        if self.status.set_up(self.resource) && self.status.errors(self.resource) > 0 {
            info!(
                resource = self.resource.as_str(),
                "Kubernetes API server reachable again"
            );
        }
    }

    fn failed(&self, what: &str, error: &dyn std::error::Error) {
        let was_up = self.status.set_down(self.resource);
        let synced = self.status.is_synced(self.resource);
        // Once per outage as a warning; the retries that follow at debug level.
        if was_up || self.status.errors(self.resource) == 1 {
            warn!(
                resource = self.resource.as_str(),
                "Kubernetes API server: {what} of {} failed: {error}; {}",
                self.resource.as_str(),
                if synced {
                    "keeping the last known state, retrying"
                } else {
                    "retrying"
                }
            );
        } else {
            debug!(
                resource = self.resource.as_str(),
                "{what} failed again: {error}"
            );
        }
    }
}

/// Moves the version to watch from to an event's, when it has one.
fn advance(version: &mut String, new: Option<&str>) {
    if let Some(v) = new.filter(|v| !v.is_empty()) {
        v.clone_into(version);
    }
}

/// Sleeps `d` unless cancelled first; false when cancelled.
async fn pause(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let steps: Vec<Duration> = (0..6).map(|_| b.next()).collect();
        let caps = [100, 200, 400, 800, 800, 800];
        for (d, cap) in steps.iter().zip(caps) {
            let cap = Duration::from_millis(cap);
            assert!(
                *d >= cap / 2 && *d <= cap,
                "{d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
        b.reset();
        assert!(b.next() <= Duration::from_millis(100));
    }
}
