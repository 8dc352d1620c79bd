//! Wiring: opens the store, builds the catalogs, the hardened HTTP client and the engine, and
//! runs the API and the workers until shutdown.
//!
//! Invariant: a process that holds the data directory's lock is the only one using that store,
//! so it may rescue every step left running at once; otherwise expired leases are waited for.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, StateInner, auth};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::connectors::{ConnectorContext, ConnectorRegistry};
use crate::engine::{Breakers, Dispatcher, EngineContext, Maintenance};
use crate::net::HttpClientFactory;
use crate::observability::{Telemetry, logging};
use crate::pipelines::{PipelineContext, PipelineManager};
use crate::schedule::scheduler::{Scheduler, SchedulerContext};
use crate::secrets::Sealer;
use crate::sinks::{SinkContext, SinkRegistry, SinkValidation};
use crate::store::SharedStore;
use crate::store::sqlite::SqliteStore;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Secrets(#[from] crate::secrets::KeyError),
    #[error("outgoing http client: {0}")]
    Http(#[from] crate::net::UpstreamError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving http: {0}")]
    Serve(std::io::Error),
    #[error("schedule in the configuration: {0}")]
    Schedule(#[from] crate::schedule::scheduler::AcceptError),
    #[error("{0}")]
    Platform(String),
    #[error("pipeline in the configuration: {0}")]
    Pipeline(#[from] crate::pipelines::accept::SyncError),
    #[error(transparent)]
    Config(#[from] crate::config::Error),
}

/// What one process does: serve the API, run the workers, run the scheduler (all by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Role {
    Api,
    Worker,
    Scheduler,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Api, Role::Worker, Role::Scheduler];
}

/// Replacements for the built-in parts, for tests.
#[derive(Default)]
pub struct Parts {
    pub clock: Option<SharedClock>,
    pub connectors: Option<ConnectorRegistry>,
    pub sinks: Option<SinkRegistry>,
}

/// A built application: state for the router and context for the engine.
pub struct App {
    pub state: AppState,
    pub engine: EngineContext,
    pub scheduler: SchedulerContext,
    pub store: SharedStore,
    /// Runs the pipelines while the engine runs (worker role).
    pub pipelines: Arc<PipelineManager>,
    /// Metric ingest; its snapshots run with the API role.
    pub metrics: Arc<crate::metrics::MetricsService>,
    /// Held for the process lifetime when this process is the data directory's only user.
    lock: Option<Flock<File>>,
}

fn data_dir_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::DataDir {
        path: path.to_owned(),
        source,
    }
}

/// Takes the data directory's lock without waiting; `None` when another process holds it.
fn try_lock(data_dir: &Path) -> Result<Option<Flock<File>>, Error> {
    let path = data_dir.join("gleaner.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(data_dir_error(&path))?;
    Ok(Flock::lock(file, FlockArg::LockExclusiveNonblock).ok())
}

/// Makes sure at least one API token exists: on first start an admin token is created and
/// written to `<data_dir>/admin-token` (mode 0600), and the log says where.
async fn ensure_admin_token(store: &SharedStore, data_dir: &Path, now: i64) -> Result<(), Error> {
    if store.token_count().await? > 0 {
        return Ok(());
    }
    // The file is written before the token is stored: a crash in between leaves no stored
    // token, so the next start makes a new one and rewrites the file.
    let token = auth::generate_token();
    let path = data_dir.join("admin-token");
    write_private(&path, &format!("{token}\n")).map_err(data_dir_error(&path))?;
    let id = uuid::Uuid::now_v7().to_string();
    store
        .insert_token(&id, "admin", &auth::hash_token(&token), now)
        .await?;
    tracing::warn!(path = %path.display(), "created the admin API token; read it from this file");
    Ok(())
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = File::options()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

impl App {
    /// Opens the store under `config.data_dir` and builds everything around it.
    pub async fn build(config: &Config, parts: Parts) -> Result<Self, Error> {
        std::fs::create_dir_all(&config.data_dir).map_err(data_dir_error(&config.data_dir))?;
        let lock = try_lock(&config.data_dir)?;
        if lock.is_none() {
            tracing::warn!(
                "another process uses this data directory; leases of its steps are left to expire"
            );
        }
        let store: SharedStore = Arc::new(SqliteStore::open(
            &config.store_path(),
            config.store.read_connections.unwrap_or(4),
        )?);
        let clock = parts.clock.unwrap_or_else(|| Arc::new(SystemClock));
        ensure_admin_token(&store, &config.data_dir, clock.now()).await?;
        let sealer = Sealer::load(&config.secrets, &config.data_dir)?;
        let http = HttpClientFactory::new(&config.net)?;
        let connectors = parts
            .connectors
            .unwrap_or_else(|| ConnectorRegistry::builtin(config));
        let sinks = parts
            .sinks
            .unwrap_or_else(|| SinkRegistry::builtin(&config.sinks).with_store(store.clone()));
        let files_root = config.files_root();
        let telemetry = Telemetry::new();
        let breakers = Breakers::new(config.engine.breaker.clone());
        let connector_context = ConnectorContext {
            http: http.clone(),
            clock: clock.clone(),
            telemetry: telemetry.clone(),
        };
        let engine = EngineContext {
            store: store.clone(),
            clock: clock.clone(),
            connectors: connectors.clone(),
            sinks: sinks.clone(),
            connector_context: connector_context.clone(),
            sink_context: SinkContext {
                http: http.clone(),
                clock: clock.clone(),
                files_root: files_root.clone(),
            },
            telemetry: telemetry.clone(),
            config: Arc::new(config.engine.clone()),
            breakers: breakers.clone(),
            sealer: sealer.clone(),
        };
        let sink_validation = SinkValidation {
            files_root: files_root.clone(),
            guard: http.guard().clone(),
        };
        let scheduler = SchedulerContext {
            store: store.clone(),
            clock: clock.clone(),
            connectors: connectors.clone(),
            sinks: sinks.clone(),
            sink_validation: sink_validation.clone(),
            defaults: config.engine.step_defaults(),
            timezone: config.timezone()?,
            sealer: sealer.clone(),
            changed: Arc::new(tokio::sync::Notify::new()),
        };
        crate::schedule::scheduler::sync_config(&scheduler, &config.schedule).await?;
        crate::pipelines::accept::sync_config(
            &store,
            &connectors,
            &sealer,
            &config.pipeline,
            clock.now(),
        )
        .await?;
        crate::platforms::sync_config(&store, &scheduler.catalog(), &config.platform, clock.now())
            .await?;
        let pipelines = PipelineManager::new(PipelineContext {
            store: store.clone(),
            clock: clock.clone(),
            connectors: connectors.clone(),
            connector_context: connector_context.clone(),
            limits: crate::net::UpstreamLimits::new(&config.net.rate_limits),
            data_dir: config.data_dir.clone(),
            sealer: sealer.clone(),
            owner: format!("pipelines-{}", uuid::Uuid::now_v7().simple()).into(),
            lease: config.engine.lease_timeout,
        });
        let metrics = crate::metrics::MetricsService::open(
            store.clone(),
            clock.clone(),
            config.metrics.clone(),
        )
        .await?;
        let state = AppState::new(StateInner {
            scheduler: scheduler.clone(),
            store: store.clone(),
            clock,
            connectors,
            sinks,
            connector_context,
            sink_validation,
            breakers,
            engine: config.engine.clone(),
            server: config.server.clone(),
            datahog: config.datahog.clone(),
            telemetry,
            data_dir: config.data_dir.clone(),
            log_file: logging::log_file(&config.data_dir),
            tokens: auth::TokenCache::default(),
            pipelines: pipelines.clone(),
            metrics: metrics.clone(),
        });
        Ok(Self {
            state,
            engine,
            scheduler,
            store,
            pipelines,
            metrics,
            lock,
        })
    }

    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// The router as a service that knows each client's address (for `[server.open_routes]`).
    pub fn service(
        &self,
    ) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<
        axum::Router,
        std::net::SocketAddr,
    > {
        self.router()
            .into_make_service_with_connect_info::<std::net::SocketAddr>()
    }

    /// Starts the scheduler; it stops when `shutdown` is cancelled.
    /// Starts the metric snapshots and, when `[metrics] statsd_listen` is set, the StatsD
    /// listener feeding the same ingest path.
    pub async fn start_metrics(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, Error> {
        let statsd = match self.metrics.config().statsd_listen {
            Some(addr) => Some(
                crate::metrics::statsd::serve(self.metrics.clone(), addr, shutdown.clone())
                    .await
                    .map_err(|source| Error::Listen { addr, source })?,
            ),
            None => None,
        };
        let snapshots = self.metrics.clone().run(shutdown.clone());
        Ok(tokio::spawn(async move {
            snapshots.await;
            if let Some(statsd) = statsd {
                let _ = statsd.await;
            }
        }))
    }

    pub fn start_scheduler(&self, shutdown: &CancellationToken) -> tokio::task::JoinHandle<()> {
        let scheduler = Scheduler::new(self.scheduler.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move { scheduler.run(stop).await })
    }

    /// Starts the workers and the upkeep loops; they stop when `shutdown` is cancelled.
    pub async fn start_engine(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, Error> {
        let maintenance = Maintenance::new(self.engine.clone());
        if self.lock.is_some() {
            maintenance.rescue_all_now().await?;
        }
        let dispatcher = Dispatcher::new(self.engine.clone());
        tracing::info!(owner = dispatcher.owner(), "workers started");
        let (dispatch_stop, upkeep_stop, pipelines_stop) =
            (shutdown.clone(), shutdown.clone(), shutdown.clone());
        let pipelines = self.pipelines.clone();
        Ok(tokio::spawn(async move {
            tokio::join!(
                dispatcher.run(dispatch_stop),
                maintenance.run(upkeep_stop),
                pipelines.run(pipelines_stop)
            );
        }))
    }

    /// Runs this process's `roles` until `shutdown`: the API on `listener` (when given), the
    /// workers, the scheduler.
    pub async fn run(
        self,
        listener: Option<TcpListener>,
        roles: &[Role],
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let mut tasks = Vec::new();
        if roles.contains(&Role::Worker) {
            tasks.push(self.start_engine(&shutdown).await?);
        }
        if roles.contains(&Role::Scheduler) {
            tasks.push(self.start_scheduler(&shutdown));
        }
        if roles.contains(&Role::Api) {
            tasks.push(self.start_metrics(&shutdown).await?);
        }
        let served = match listener {
            Some(listener) => {
                let stop = shutdown.clone();
                axum::serve(listener, self.service())
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
                    .map_err(Error::Serve)
            }
            None => {
                shutdown.cancelled().await;
                Ok(())
            }
        };
        shutdown.cancel();
        for task in tasks {
            let _ = task.await;
        }
        served
    }
}

/// `gleaner serve`: binds the configured address, records it in `<data_dir>/listen.addr`, and
/// runs until SIGINT or SIGTERM.
pub async fn serve(config: Config, roles: &[Role]) -> Result<(), Error> {
    let app = App::build(&config, Parts::default()).await?;
    let listener = if roles.contains(&Role::Api) {
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| Error::Listen { addr, source })?;
        let addr_file = config.data_dir.join("listen.addr");
        std::fs::write(&addr_file, format!("{bound}\n")).map_err(data_dir_error(&addr_file))?;
        tracing::info!(addr = %bound, data_dir = %config.data_dir.display(), "listening");
        Some(listener)
    } else {
        None
    };
    tracing::info!(roles = ?roles, "started");
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    app.run(listener, roles, shutdown).await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
