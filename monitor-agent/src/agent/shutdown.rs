//! How the agent stops: one type that owns the order (mini-redis's `shutdown.rs`).
//!
//! A stop is *requested* by one token (main's signal handler, or the agent itself when its
//! reader dies); nothing else listens to that token. Each stage then has a token or a handle of
//! its own, and [`Shutdown::run`] fires them one after the other, waiting for each stage to
//! end before the next begins:
//!
//! 1. **Watchers**: the interface follower, the endpoints file and the Kubernetes watch stop, so
//!    nothing attaches again and the enrichment stops changing under the last flows; the
//!    conntrack GC stops with them.
//! 2. **Detach**: every TC program and the drop tracepoint. No event can enter the ring after
//!    this.
//! 3. **Drain**: the reader reads the ring one last time and ends; what it read goes through
//!    decode and the hooks like any event (the history, metrics, export).
//! 4. **Exporters**: the file exporter writes what is queued and flushes; OTLP sends its queue.
//!    Both are bounded (a hung disk or a receiver that is down must not hang the agent).
//! 5. **Serving**: the gRPC server, the metrics and web servers stop. Follow streams end once
//!    they have sent what the history holds (the drained flows included), so a follower sees
//!    its stream end cleanly after the last flow; in-flight requests get a bounded time.
//!
//! Doing it in one place replaces a token that stopped everything at once (followers lost the
//! drained flows) plus two flags for the interface thread and the reader.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Decode;
use crate::kernel::{datapath::Datapath, reader::QueueReceiver};

/// How long the watchers may take to stop before they are aborted.
const WATCHERS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long each exporter may take to write or send what it holds.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long in-flight requests and follow streams get once serving stops: a client that keeps
/// an idle connection open must not hold the node's agent hostage.
const SERVING_TIMEOUT: Duration = Duration::from_secs(3);

/// The agent's stages that outlive a request to stop, and the order in which they end.
pub(super) struct Shutdown {
    requested: CancellationToken,
    watchers: CancellationToken,
    reader_stop: CancellationToken,
    serving: CancellationToken,
    iface_watcher: Option<std::thread::JoinHandle<()>>,
    watcher_tasks: Vec<JoinHandle<()>>,
    datapath: Option<Arc<Mutex<Datapath>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    metrics: Option<crate::metrics::Running>,
    socket: PathBuf,
}

impl Shutdown {
    /// A shutdown that starts when `requested` fires; `socket` is removed once serving stopped.
    pub(super) fn new(requested: CancellationToken, socket: PathBuf) -> Self {
        Shutdown {
            requested,
            watchers: CancellationToken::new(),
            reader_stop: CancellationToken::new(),
            serving: CancellationToken::new(),
            iface_watcher: None,
            watcher_tasks: Vec::new(),
            datapath: None,
            reader: None,
            server: None,
            metrics: None,
            socket,
        }
    }

    /// Fires when a stop is requested.
    pub(super) fn requested(&self) -> &CancellationToken {
        &self.requested
    }

    /// Stage 1's token: what watches interfaces and endpoints ends when it fires.
    pub(super) fn watchers(&self) -> CancellationToken {
        self.watchers.clone()
    }

    /// Stage 3's token: the ring reader drains the ring once more and ends when it fires.
    pub(super) fn reader(&self) -> CancellationToken {
        self.reader_stop.clone()
    }

    /// Stage 5's token: servers and follow streams end when it fires.
    pub(super) fn serving(&self) -> CancellationToken {
        self.serving.clone()
    }

    /// The interface follower's thread (stage 1).
    pub(super) fn iface_watcher(&mut self, thread: std::thread::JoinHandle<()>) {
        self.iface_watcher = Some(thread);
    }

    /// A task of stage 1: the endpoints file, Kubernetes, the conntrack GC.
    pub(super) fn watcher_task(&mut self, task: JoinHandle<()>) {
        self.watcher_tasks.push(task);
    }

    /// The programs to detach (stage 2).
    pub(super) fn datapath(&mut self, dp: Arc<Mutex<Datapath>>) {
        self.datapath = Some(dp);
    }

    /// The ring reader's thread (stage 3).
    pub(super) fn reader_thread(&mut self, thread: std::thread::JoinHandle<()>) {
        self.reader = Some(thread);
    }

    /// The API server (stage 5).
    pub(super) fn server(&mut self, task: JoinHandle<anyhow::Result<()>>) {
        self.server = Some(task);
    }

    /// The metrics server (stage 5).
    pub(super) fn metrics(&mut self, running: crate::metrics::Running) {
        self.metrics = Some(running);
    }

    /// Stops everything, in order (module docs). `decode` hands on what the reader drains from
    /// `rx` and holds the exporters. Returns the first error of the drained batches; every
    /// stage runs whatever happens.
    pub(super) async fn run(
        mut self,
        decode: &mut Decode,
        rx: &mut QueueReceiver,
    ) -> anyhow::Result<()> {
        info!("shutting down");

        // 1. Watchers: nothing may attach again once we detach.
        self.watchers.cancel();
        if let Some(t) = self.iface_watcher.take() {
            // A thread: joined off the async workers (it wakes at least every 200 ms).
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        for task in std::mem::take(&mut self.watcher_tasks) {
            let abort = task.abort_handle();
            if tokio::time::timeout(WATCHERS_TIMEOUT, task).await.is_err() {
                warn!("an endpoint watcher did not stop within {WATCHERS_TIMEOUT:?}: aborted");
                abort.abort();
            }
        }

        // 2. Detach: no event can enter the ring after this.
        if let Some(dp) = &self.datapath
            && let Ok(mut d) = dp.lock()
        {
            d.detach_all();
        }

        // 3. Drain: the reader reads the ring once more, then ends (and closes its queue).
        self.reader_stop.cancel();
        if let Some(t) = self.reader.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let mut result = Ok(());
        while let Some(batch) = rx.recv().await {
            if let Err(e) = decode.batch(&batch)
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        if let Err(e) = decode.finish()
            && result.is_ok()
        {
            result = Err(e);
        }

        // 4. Exporters: write and send what they hold, bounded.
        decode.close_exporters(EXPORT_TIMEOUT).await;

        // 5. Serving: follow streams end after the last flow, then the servers.
        self.serving.cancel();
        if let Some(m) = self.metrics.take() {
            m.stopped().await;
        }
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            match tokio::time::timeout(SERVING_TIMEOUT, server).await {
                Ok(Ok(Err(e))) => warn!("API server: {e:#}"),
                Ok(Err(e)) => warn!("API server task: {e}"),
                Ok(Ok(Ok(()))) => {}
                Err(_) => {
                    warn!(
                        "clients still connected after {SERVING_TIMEOUT:?}: closing their connections"
                    );
                    abort.abort();
                }
            }
        }
        let _ = std::fs::remove_file(&self.socket);
        info!("detached from every interface");
        result
    }
}
