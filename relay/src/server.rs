//! Starting the relay: listeners, services, background tasks.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;
use tonic_health::ServingStatus;
use tracing::{Instrument as _, info, info_span};

use crate::config::{ListenAddress, RelayConfig};
use crate::discovery::{self, watch_dns};
use crate::error::RelayError;
use crate::flows::FlowsSettings;
use crate::metrics::{self, Metrics};
use crate::observer::{RelayObserver, VERSION};
use crate::peer::{MAX_MESSAGE, PeerState, Source};
use crate::pool::{PeerPool, PoolSettings};
use crate::tls::{self, Reloading};

/// A started relay.
pub struct RunningRelay {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    pool: PeerPool,
    tasks: JoinSet<Result<(), RelayError>>,
}

impl std::fmt::Debug for RunningRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningRelay")
            .field("local_addr", &self.local_addr)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl RunningRelay {
    /// The address the gRPC listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the metrics listener, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The agents the relay knows.
    pub fn pool(&self) -> &PeerPool {
        &self.pool
    }

    /// Waits until every task of the relay ended (after the shutdown token
    /// fired), returning the first error.
    pub async fn wait(mut self) -> Result<(), RelayError> {
        let mut result = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            let outcome = joined
                .map_err(|source| RelayError::Task {
                    task: "relay",
                    source,
                })
                .and_then(|r| r);
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }
}

/// Binds `addr`; for `:port`, `[::]` and, without IPv6, `0.0.0.0`.
async fn bind(what: &'static str, addr: ListenAddress) -> Result<TcpListener, RelayError> {
    match TcpListener::bind(addr.addr).await {
        Ok(listener) => Ok(listener),
        Err(_) if addr.any => {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.addr.port()));
            TcpListener::bind(v4)
                .await
                .map_err(|source| RelayError::Bind {
                    what,
                    addr: v4,
                    source,
                })
        }
        Err(source) => Err(RelayError::Bind {
            what,
            addr: addr.addr,
            source,
        }),
    }
}

fn add_version_header(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    response.headers_mut().insert(
        flowscope_proto::RELAY_VERSION_HEADER,
        http::HeaderValue::from_static(VERSION),
    );
    response
}

/// Starts the relay: loads TLS material (errors stop here, before anything
/// listens), binds the listeners, starts discovery and serves until
/// `shutdown` fires. Every task ends when it does; [`RunningRelay::wait`]
/// waits for them.
pub async fn start(
    config: RelayConfig,
    shutdown: CancellationToken,
) -> Result<RunningRelay, RelayError> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    // A bad OTLP option (endpoint, TLS files, filters) stops the relay here, before it listens.
    let otlp = match config.otlp.clone() {
        Some(opts) => {
            let otlp = crate::export::OtlpExport::start(opts, &config.name)?;
            registry.register_collector(otlp.collector());
            Some(otlp)
        }
        None => None,
    };
    let registry = Arc::new(registry);

    // TLS first: bad certificates must stop the relay before it listens.
    let server_tls = match &config.server_tls {
        None => None,
        Some(files) => {
            let f = files.clone();
            let mut watched = vec![files.cert.clone(), files.key.clone()];
            watched.extend(files.client_ca.iter().cloned());
            Some(Arc::new(Reloading::new("server", watched, move || {
                tls::server_config(&f)
            })?))
        }
    };
    let client_tls = match &config.client_tls {
        None => None,
        Some(files) => {
            let f = files.clone();
            let mut watched = files.ca.clone();
            watched.extend(files.cert.iter().cloned());
            watched.extend(files.key.iter().cloned());
            let reloading = Arc::new(Reloading::new("client", watched, move || {
                tls::client_config(&f)
            })?);
            if let Some(name) = &files.server_name {
                // Fail now rather than drop every peer later.
                tls::server_name(name)?;
            }
            Some((reloading, files.server_name.clone()))
        }
    };

    let pool = PeerPool::new(
        PoolSettings {
            check_interval: config.peer_check_interval,
            request_timeout: config.request_timeout,
            dial_timeout: config.dial_timeout,
            backoff: config.backoff,
            tls: client_tls.clone(),
        },
        metrics.clone(),
        shutdown.clone(),
    );

    let listener = bind("gRPC", config.listen_address).await?;
    let local_addr = listener.local_addr().map_err(|source| RelayError::Bind {
        what: "gRPC",
        addr: config.listen_address.addr,
        source,
    })?;
    let metrics_listener = match config.metrics_listen_address {
        Some(addr) => Some(bind("metrics", addr).await?),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let ui_listener = match config.ui_listen_address {
        Some(ui) => Some(
            bind(
                "web view",
                ListenAddress {
                    addr: ui.addr,
                    any: ui.any,
                },
            )
            .await?,
        ),
        None => None,
    };

    let mut tasks: JoinSet<Result<(), RelayError>> = JoinSet::new();

    // Discovery.
    pool.sync_source(Source::Static, discovery::static_peers(&config.peers));
    for (index, target) in config.peer_dns.iter().enumerate() {
        let span = info_span!("dns", name = %target);
        tasks.spawn(
            watch_dns(
                pool.clone(),
                index,
                target.clone(),
                config.resolver.clone(),
                config.dns_refresh_interval,
                shutdown.clone(),
            )
            .instrument(span)
            .then_ok(),
        );
    }

    for (index, target) in config.peer_service.iter().enumerate() {
        let span = info_span!("peer_service", address = %target);
        tasks.spawn(
            crate::discovery::watch_peer_service(
                pool.clone(),
                index,
                target.clone(),
                config.backoff,
                shutdown.clone(),
            )
            .instrument(span)
            .then_ok(),
        );
    }

    if let Some(pods) = &config.peer_pods {
        // A bad kubeconfig stops the relay here; an API server that is down does not.
        let client = crate::kubernetes::client(pods).await?;
        tasks.spawn(
            crate::kubernetes::watch_pods(
                pool.clone(),
                client,
                pods.clone(),
                config.backoff,
                shutdown.clone(),
            )
            .instrument(info_span!("pods", selector = %pods.selector))
            .then_ok(),
        );
    }

    // Certificate reloads.
    if let Some(server_tls) = &server_tls {
        tasks.spawn(
            server_tls
                .clone()
                .watch(config.tls_reload_interval, shutdown.clone())
                .then_ok(),
        );
    }
    if let Some((client_tls, _)) = &client_tls {
        tasks.spawn(
            client_tls
                .clone()
                .watch(config.tls_reload_interval, shutdown.clone())
                .then_ok(),
        );
    }

    // Health and node metrics follow the peers' states. The relay serves
    // (`hubble.server.Observer` SERVING) when at least one agent is connected.
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    {
        let pool = pool.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        let changed = pool.states_changed();
        tasks.spawn(
            async move {
                let mut last = None;
                loop {
                    let counts = pool.state_counts();
                    metrics.set_nodes(&counts);
                    let serving = counts
                        .iter()
                        .any(|(state, n)| *state == PeerState::Connected && *n > 0);
                    if last != Some(serving) {
                        let status = if serving {
                            ServingStatus::Serving
                        } else {
                            ServingStatus::NotServing
                        };
                        for service in ["", flowscope_proto::HUBBLE_HEALTH_SERVICE] {
                            health_reporter.set_service_status(service, status).await;
                        }
                        last = Some(serving);
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = changed.notified() => {}
                    }
                }
            }
            .then_ok(),
        );
    }

    // Reflection, v1 and v1alpha (older grpcurl speaks only v1alpha).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(flowscope_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(RelayError::Reflection)?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(RelayError::Reflection)?;

    let flows = Arc::new(FlowsSettings {
        sort_buffer_len_max: config.sort_buffer_len_max,
        sort_buffer_drain_timeout: config.sort_buffer_drain_timeout,
        status_aggregation_window: config.status_aggregation_window,
        client_buffer_len: config.client_buffer_len,
        node_buffer_len: config.node_buffer_len,
        settle_timeout: config.dial_timeout.min(config.request_timeout),
        history_stall_timeout: config.request_timeout.max(config.sort_buffer_drain_timeout),
        relay_name: config.name.clone(),
    });
    if let Some(otlp) = otlp {
        let feed = otlp.follow(
            pool.clone(),
            flows.clone(),
            metrics.clone(),
            shutdown.clone(),
        )?;
        tasks.spawn(feed.instrument(info_span!("otlp")).then_ok());
    }
    let observer = RelayObserver::new(
        pool.clone(),
        flows,
        metrics.clone(),
        shutdown.clone(),
        config.request_timeout,
    );
    let inspector = flowscope_proto::flowscope::v1::inspector_server::InspectorServer::new(
        crate::inspector::RelayInspector::new(pool.clone(), config.request_timeout),
    )
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);
    // GetFlows forwards flows encoded; the other methods are the generated server's.
    let observer = crate::observer::observer_service(observer);

    if let Some(listener) = ui_listener {
        // The web view calls the very Observer service served below, in process.
        let ui_tls = server_tls.clone().map(|tls| -> flowscope_ui::TlsSource {
            Arc::new(move || {
                let mut config = (*tls.current()).clone();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Arc::new(config)
            })
        });
        let api = flowscope_ui::api(observer.clone());
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            flowscope_ui::serve(listener, ui_tls, api, flowscope_ui::Role::Relay, shutdown).await;
            Ok(())
        });
    }

    let incoming = tls::incoming(listener, server_tls, shutdown.clone());
    let router = tonic::transport::Server::builder()
        // Find clients that vanished without closing their connection: a
        // following stream would otherwise hold its buffers until TCP gives up.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .layer(tower::util::MapResponseLayer::new(add_version_header))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(inspector)
        .add_service(observer);
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
                .map_err(RelayError::Serve)
        });
    }

    if let Some(listener) = metrics_listener {
        tasks.spawn(metrics::serve(listener, registry, shutdown.clone()).then_ok());
    }

    info!(
        address = %local_addr,
        tls = config.server_tls.is_some(),
        mtls = config.server_tls.as_ref().is_some_and(|t| !t.client_ca.is_empty()),
        peers = config.peers.len(),
        dns = config.peer_dns.len(),
        metrics = ?metrics_addr,
        otlp = config.otlp.as_ref().map(|o| o.endpoint.as_str()),
        "relay listening"
    );
    Ok(RunningRelay {
        local_addr,
        metrics_addr,
        pool,
        tasks,
    })
}

/// `fut.then_ok()`: a unit future as a `Result` task.
trait ThenOk: std::future::Future<Output = ()> + Sized {
    fn then_ok(self) -> impl std::future::Future<Output = Result<(), RelayError>> + Send
    where
        Self: Send,
    {
        async move {
            self.await;
            Ok(())
        }
    }
}

impl<F: std::future::Future<Output = ()>> ThenOk for F {}
