//! The `control-plane` binary: the only place where concrete types meet.
//!
//! Owns: configuration (flags, each also `CONTROL_PLANE_<FLAG>`), the tracing
//! subscriber (`RUST_LOG`), wiring [`dispatcher::ModeRouter`] into a
//! [`scheduler::Scheduler`] over the store `--store` names (the embedded SQLite store
//! in `--data-dir` by default, see `storage.rs`; its kept state restored before
//! serving), serving
//! [`http_api::router`] on the API listener and [`http_api::management_router`] on the
//! management listener (the same [`http_api::Metrics`] observing the scheduler and
//! serving `/actuator/prometheus`) through [`http_server::serve`] with the HTTP limits
//! (the API listener over TLS with `--tls-cert`/`--tls-key`, see `security.rs`),
//! reloads on SIGHUP (the tokens file, the certificate and key), and graceful shutdown
//! on SIGINT/SIGTERM: [`scheduler::Scheduler::shutdown`] refuses
//! new invocations and lets in-flight work finish within the grace while both listeners
//! still accept (runtimes report results through `:complete`), then the listeners drain.
//!
//! It spawns nothing itself (the scheduler owns the engine's tasks, the HTTP server its
//! connections): both listeners are served on this task with `tokio::join!`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use core_types::DurationMs;
use dispatcher::{CertificateDer, ModeRouter, PoolConfig, PoolDispatcher};
use http_api::{ApiConfig, AppState, InvalidRuntimeConfig, RuntimeConfig};
use http_server::HttpLimits;
use scheduler::{CallbackSigning, MemoryLimits, RetryBackoff, SchedulerConfig};
use signals::shutdown_signal;
use tokio::net::TcpListener;

mod deployments;
mod security;
mod storage;

/// Who moves queued work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SchedulerMode {
    /// The scheduler loop dispatches queued work as soon as a slot is free.
    Background,
    /// No loop: queued work moves only through `:drain-once`.
    Manual,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// The nanofaas-compatible serverless control plane.
#[derive(Debug, Parser)]
#[command(name = "control-plane", version, about)]
struct Args {
    /// API listener (`0` as port picks a free one).
    #[arg(long, env = "CONTROL_PLANE_API_ADDR", default_value = "127.0.0.1:8080")]
    api_addr: SocketAddr,
    /// Health listener.
    #[arg(
        long,
        env = "CONTROL_PLANE_MANAGEMENT_ADDR",
        default_value = "127.0.0.1:8081"
    )]
    management_addr: SocketAddr,
    /// `background` or `manual`.
    #[arg(
        long,
        env = "CONTROL_PLANE_SCHEDULER",
        value_enum,
        default_value = "background"
    )]
    scheduler: SchedulerMode,
    /// How long a finished execution stays readable (ISO-8601, e.g. `PT5M`).
    #[command(flatten)]
    store: storage::StoreFlags,
    #[arg(long, env = "CONTROL_PLANE_EXECUTION_TTL", default_value = "PT5M", value_parser = parse_positive_duration)]
    execution_ttl: DurationMs,
    /// How long an `Idempotency-Key` is remembered (ISO-8601).
    #[arg(long, env = "CONTROL_PLANE_IDEMPOTENCY_TTL", default_value = "PT5M", value_parser = parse_positive_duration)]
    idempotency_ttl: DurationMs,
    /// Memory finished executions may keep (estimated; `256MiB`, `1GiB`): past it the
    /// oldest are evicted before their TTL, counted by `execution_records_evicted_total`.
    #[arg(
        long,
        env = "CONTROL_PLANE_EXECUTION_MEMORY_BUDGET",
        default_value = "256MiB"
    )]
    execution_memory_budget: bytesize::ByteSize,
    /// Memory remembered idempotency keys may keep (estimated): past it the oldest are
    /// forgotten before their TTL, counted by `idempotency_keys_evicted_total`.
    #[arg(
        long,
        env = "CONTROL_PLANE_IDEMPOTENCY_MEMORY_BUDGET",
        default_value = "64MiB"
    )]
    idempotency_memory_budget: bytesize::ByteSize,
    /// Memory the inputs of queued and running executions may hold in all: past it
    /// `:invoke` and `:enqueue` are refused with 429 `QUEUE_FULL`.
    #[arg(
        long,
        env = "CONTROL_PLANE_QUEUED_INPUT_BUDGET",
        default_value = "512MiB"
    )]
    queued_input_budget: bytesize::ByteSize,
    /// Wait before a failed attempt's first retry (ISO-8601; doubles per retry, with
    /// jitter; `PT0S`: retries are due at once).
    #[arg(long, env = "CONTROL_PLANE_RETRY_BACKOFF_BASE", default_value = "PT0.1S", value_parser = parse_wait)]
    retry_backoff_base: Duration,
    /// Longest wait before a retry (ISO-8601).
    #[arg(long, env = "CONTROL_PLANE_RETRY_BACKOFF_MAX", default_value = "PT10S", value_parser = parse_wait)]
    retry_backoff_max: Duration,
    /// Request body limit in bytes.
    #[arg(long, env = "CONTROL_PLANE_MAX_BODY_BYTES", default_value_t = http_api::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Base URL runtimes call back (`<base>/<id>:complete`); default
    /// `http://<bound api addr>/v1/internal/executions`, `https://` with --tls-cert.
    #[arg(long, env = "CONTROL_PLANE_CALLBACK_BASE_URL")]
    callback_base_url: Option<String>,
    /// After SIGINT/SIGTERM, how long in-flight dispatches may still finish (ISO-8601).
    #[arg(long, env = "CONTROL_PLANE_SHUTDOWN_GRACE", default_value = "PT10S", value_parser = parse_positive_duration)]
    shutdown_grace: DurationMs,
    /// `text` or `json` log lines; the level comes from `RUST_LOG` (default `info`).
    #[arg(
        long,
        env = "CONTROL_PLANE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Stop as on SIGTERM when the process PID, which started this one, ends -- also by
    /// `kill -9` (the kernel's parent-death signal). For supervisors such as `nanofaas
    /// up`, so that nothing they started outlives them.
    #[arg(long, env = "CONTROL_PLANE_EXIT_WITH_PARENT", value_name = "PID")]
    exit_with_parent: Option<u32>,
    /// Threads that run the control plane's tasks; default: the CPUs this process may
    /// use (its affinity mask). With one, the control plane runs on a single-threaded
    /// runtime: on one CPU a work-stealing pool only adds hand-offs between threads.
    #[arg(long, env = "CONTROL_PLANE_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
    /// Serve `/v1/admin/runtime-config` (GET, PATCH, validate).
    #[arg(long, env = "CONTROL_PLANE_ADMIN_API")]
    admin_api: bool,
    /// PEM file of root certificates trusted for `https://` function endpoints, besides
    /// the platform's (a cluster's private CA, a self-signed endpoint).
    #[arg(long, env = "CONTROL_PLANE_DISPATCH_CA_FILE", value_name = "PATH")]
    dispatch_ca_file: Option<PathBuf>,
    #[command(flatten)]
    deployments: deployments::DeploymentFlags,
    #[command(flatten)]
    security: security::SecurityFlags,
    #[command(flatten)]
    http: HttpFlags,
    #[command(flatten)]
    runtime: RuntimeFlags,
}

/// The limits of both listeners (defaults: [`HttpLimits::default`]).
#[derive(Debug, clap::Args)]
struct HttpFlags {
    /// How long a client has to send a whole request head (ISO-8601); past it the
    /// connection is closed.
    #[arg(long, env = "CONTROL_PLANE_HTTP_HEADER_READ_TIMEOUT", default_value = "PT10S", value_parser = parse_positive_wait)]
    http_header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request (ISO-8601).
    #[arg(long, env = "CONTROL_PLANE_HTTP_IDLE_TIMEOUT", default_value = "PT60S", value_parser = parse_positive_wait)]
    http_idle_timeout: Duration,
    /// How long a request body may take to arrive (ISO-8601); past it: 408.
    #[arg(long, env = "CONTROL_PLANE_HTTP_BODY_READ_TIMEOUT", default_value = "PT60S", value_parser = parse_positive_wait)]
    http_body_read_timeout: Duration,
    /// The largest request line plus headers (`64KiB`); larger: 431.
    #[arg(
        long,
        env = "CONTROL_PLANE_HTTP_MAX_HEAD_BYTES",
        default_value = "64KiB"
    )]
    http_max_head_bytes: bytesize::ByteSize,
    /// Connections each listener keeps open at once; more wait until one closes.
    #[arg(
        long,
        env = "CONTROL_PLANE_HTTP_MAX_CONNECTIONS",
        default_value_t = 4096,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    http_max_connections: u32,
}

impl HttpFlags {
    /// The limits, if they can serve.
    fn to_limits(&self) -> Result<HttpLimits, http_server::InvalidLimits> {
        let limits = HttpLimits {
            header_read_timeout: self.http_header_read_timeout,
            idle_timeout: self.http_idle_timeout,
            body_read_timeout: self.http_body_read_timeout,
            max_head_bytes: bytes(self.http_max_head_bytes),
            max_connections: usize::try_from(self.http_max_connections).unwrap_or(usize::MAX),
        };
        limits.validate()?;
        Ok(limits)
    }
}

/// The runtime configuration's starting values (revision 1; the admin API changes them
/// while serving). Defaults: [`RuntimeConfig::default`].
#[derive(Debug, clap::Args)]
struct RuntimeFlags {
    /// Global limit on `:invoke` + `:enqueue` requests per second. The default is far
    /// above what one control plane serves, so it never is a benchmark's bottleneck.
    #[arg(
        long,
        env = "CONTROL_PLANE_RATE_MAX_PER_SECOND",
        default_value_t = http_api::DEFAULT_RATE_MAX_PER_SECOND,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    rate_max_per_second: u32,
    /// Sync invocations hold a place in their function's sync queue while they wait.
    #[arg(long, env = "CONTROL_PLANE_SYNC_QUEUE_ENABLED")]
    sync_queue_enabled: bool,
    /// Refuse sync invocations whose line is too deep or estimated wait too long.
    #[arg(long, env = "CONTROL_PLANE_SYNC_QUEUE_ADMISSION_ENABLED")]
    sync_queue_admission_enabled: bool,
    /// Longest estimated wait a sync invocation is admitted into (ISO-8601).
    #[arg(long, env = "CONTROL_PLANE_SYNC_QUEUE_MAX_ESTIMATED_WAIT", default_value = "PT2S", value_parser = parse_wait)]
    sync_queue_max_estimated_wait: Duration,
    /// Longest an admitted sync invocation may stay queued before dispatch (ISO-8601).
    #[arg(long, env = "CONTROL_PLANE_SYNC_QUEUE_MAX_QUEUE_WAIT", default_value = "PT2S", value_parser = parse_wait)]
    sync_queue_max_queue_wait: Duration,
    /// Least `Retry-After` of a sync-queue rejection, in seconds.
    #[arg(
        long,
        env = "CONTROL_PLANE_SYNC_QUEUE_RETRY_AFTER_SECONDS",
        default_value_t = 2,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    sync_queue_retry_after_seconds: u32,
}

impl RuntimeFlags {
    /// The starting configuration, if its values fit together.
    fn to_config(&self) -> Result<RuntimeConfig, InvalidRuntimeConfig> {
        let config = RuntimeConfig {
            rate_max_per_second: self.rate_max_per_second,
            sync_queue_enabled: self.sync_queue_enabled,
            sync_queue_admission_enabled: self.sync_queue_admission_enabled,
            sync_queue_max_estimated_wait: self.sync_queue_max_estimated_wait,
            sync_queue_max_queue_wait: self.sync_queue_max_queue_wait,
            sync_queue_retry_after_seconds: self.sync_queue_retry_after_seconds,
        };
        config.validate()?;
        Ok(config)
    }
}

/// A strict ISO-8601 duration (`PT2S`, `PT0.5S`), zero or more.
fn parse_wait(text: &str) -> Result<Duration, String> {
    core_types::parse_iso_duration(text).map_err(|e| e.to_string())
}

/// A strict ISO-8601 duration, positive.
fn parse_positive_wait(text: &str) -> Result<Duration, String> {
    let duration = parse_wait(text)?;
    if duration.is_zero() {
        return Err(format!("must be positive, got {text}"));
    }
    Ok(duration)
}

/// An ISO-8601 duration (`PT5M`, `PT0.5S`), positive, as milliseconds.
fn parse_positive_duration(text: &str) -> Result<DurationMs, String> {
    let duration = parse_positive_wait(text)?;
    let millis = u64::try_from(duration.as_millis()).map_err(|_| format!("too long: {text}"))?;
    Ok(DurationMs(millis))
}

/// The extra roots of `--dispatch-ca-file`, read and checked before anything starts: a
/// bad file is a start-up error, not a `DISPATCH_ERROR` on every `https` attempt.
fn dispatch_roots(file: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, String> {
    file.map_or(Ok(Vec::new()), |path| {
        dispatcher::read_pem_certificates(path).map_err(|e| format!("--dispatch-ca-file: {e}"))
    })
}

/// The base of the callback URLs runtimes are given: `--callback-base-url`, else the
/// bound API address in the API's own scheme (a runtime calling a TLS listener over
/// plain HTTP would only ever be closed).
fn callback_base_url(given: Option<String>, api_scheme: &str, api_addr: SocketAddr) -> String {
    let Some(given) = given else {
        return format!("{api_scheme}://{api_addr}/v1/internal/executions");
    };
    if api_scheme == "https" && given.starts_with("http://") {
        // A TLS-terminating proxy in between may make it right; say so, do not refuse.
        tracing::warn!(
            callback_base_url = given,
            "the API listener speaks only TLS but --callback-base-url is http://: runtimes reach it only through something that adds TLS"
        );
    }
    given
}

/// A size flag as bytes (saturating on 32-bit targets).
fn bytes(size: bytesize::ByteSize) -> usize {
    usize::try_from(size.as_u64()).unwrap_or(usize::MAX)
}

/// Every allocation of the control plane. An invocation makes a few dozen small,
/// short-lived ones; mimalloc serves them in ~12-14 % fewer instructions per invocation
/// than glibc malloc (callgrind), with the same idle RSS and per-record memory once
/// transparent huge pages are off (the `no_thp` feature).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
        LogFormat::Json => logs.json().with_current_span(true).init(),
    }
    // Before the runtime starts its threads: the request is the calling thread's.
    if let Err(e) = follow_parent(args.exit_with_parent) {
        tracing::error!(error = %e, "control plane failed");
        return std::process::ExitCode::FAILURE;
    }
    let runtime = match build_runtime(args.worker_threads) {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "control plane failed");
            std::process::ExitCode::FAILURE
        }
    }
}

/// With `--exit-with-parent PID`, asks the kernel for SIGTERM when the parent dies (the
/// shutdown then runs as for any SIGTERM), and refuses to start if PID is not the
/// parent any more: it may have died before the request, and then no signal comes.
fn follow_parent(parent: Option<u32>) -> Result<(), String> {
    let Some(parent) = parent else {
        return Ok(());
    };
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
        .map_err(|e| format!("--exit-with-parent {parent}: {e}"))?;
    let actual = rustix::process::getppid().map(|pid| pid.as_raw_pid());
    if actual.and_then(|pid| u32::try_from(pid).ok()) != Some(parent) {
        return Err(format!(
            "--exit-with-parent {parent}: that process is not this one's parent (any more)"
        ));
    }
    Ok(())
}

/// The tokio runtime for `worker_threads` (default: the CPUs this process may use).
fn build_runtime(worker_threads: Option<u16>) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = worker_threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        usize::from,
    );
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build()
}

async fn run(args: Args) -> std::io::Result<()> {
    // Refuse flags that do not fit together before binding anything.
    let runtime = args.runtime.to_config().map_err(std::io::Error::other)?;
    let limits = args.http.to_limits().map_err(std::io::Error::other)?;
    let extra_root_certificates =
        dispatch_roots(args.dispatch_ca_file.as_deref()).map_err(std::io::Error::other)?;
    args.security
        .check_exposure(args.api_addr)
        .map_err(std::io::Error::other)?;
    let security = args
        .security
        .load(&args.store.data_dir)
        .map_err(std::io::Error::other)?;
    let tls = args.security.load_tls().map_err(std::io::Error::other)?;
    let api_listener = TcpListener::bind(args.api_addr).await?;
    let management_listener = TcpListener::bind(args.management_addr).await?;
    let api_addr = api_listener.local_addr()?;
    let management_addr = management_listener.local_addr()?;
    let api_scheme = if tls.is_some() { "https" } else { "http" };
    let api_listener = match &tls {
        Some(tls) => http_server::Listener::tls(api_listener, tls.clone()),
        None => http_server::Listener::plain(api_listener),
    };

    let callback_base_url = callback_base_url(args.callback_base_url, api_scheme, api_addr);
    let pool = PoolDispatcher::with_config(PoolConfig {
        extra_root_certificates,
        ..PoolConfig::default()
    });
    let limits_of_memory = MemoryLimits {
        execution_ttl: args.execution_ttl,
        idempotency_ttl: args.idempotency_ttl,
        execution_memory_budget: bytes(args.execution_memory_budget),
        idempotency_memory_budget: bytes(args.idempotency_memory_budget),
    };
    let provider = args
        .deployments
        .provider(&args.store.data_dir, pool.clone(), args.max_body_bytes)
        .map_err(|error| {
            std::io::Error::other(format!("--data-dir: {error}; choose another --data-dir"))
        })?;
    let mut router = ModeRouter::new(pool);
    if let Some(provider) = &provider {
        router = router.with_deployments(Arc::clone(&provider.dispatch));
    }
    let mut opened = storage::open(&args.store, limits_of_memory, Arc::new(router))
        .await
        .map_err(std::io::Error::other)?;
    opened.parts.deployments = provider.map(|provider| provider.deployments);
    let (runtime, runtime_revision) = opened.kept_runtime.unwrap_or((runtime, 1));
    let config = SchedulerConfig {
        callback_base_url: Some(Arc::from(callback_base_url.as_str())),
        retry_backoff: RetryBackoff {
            base: args.retry_backoff_base,
            max: args.retry_backoff_max.max(args.retry_backoff_base),
        },
        queued_input_budget: bytes(args.queued_input_budget),
        autoscaling: args.deployments.autoscaling(),
        callback_signer: security
            .as_ref()
            .map(|security| CallbackSigning(Arc::new(security.key.clone()))),
        ..SchedulerConfig::default()
    };
    let state = AppState::assemble(
        opened.parts,
        config,
        ApiConfig {
            max_body_bytes: args.max_body_bytes,
            admin_api: args.admin_api,
            runtime,
            runtime_revision,
            runtime_store: opened.runtime_store,
            auth: security.as_ref().map(|security| Arc::clone(&security.auth)),
        },
    );
    let scheduler = state.scheduler().clone();
    let restored = scheduler.restore().await.map_err(|error| {
        std::io::Error::other(format!(
            "--data-dir: taking up the kept state failed: {error}"
        ))
    })?;
    tracing::info!(
        store = opened.description,
        functions = restored.functions,
        queued = restored.queued,
        redispatched = restored.redispatched,
        ended = restored.ended,
        runtime_config_revision = runtime_revision,
        "store open"
    );
    match args.scheduler {
        SchedulerMode::Background => scheduler.start_background(),
        SchedulerMode::Manual => scheduler.start_sweeper(),
    }
    let api = http_api::router(state.clone());
    let management = http_api::management_router(state);
    tracing::info!(
        %api_addr,
        api_url = %format_args!("{api_scheme}://{api_addr}"),
        %management_addr,
        scheduler = ?args.scheduler,
        callback_base_url,
        "control plane listening"
    );

    // The signal ends the engine first: `shutdown` refuses new invocations at once, and
    // while it waits out the grace both listeners still accept, so the callbacks of
    // in-flight executions land. Only then do the listeners drain.
    let grace = Duration::from_millis(args.shutdown_grace.0);
    let drain = tokio_util::sync::CancellationToken::new();
    let signal = async {
        shutdown_signal().await;
        tracing::info!(
            ?grace,
            "shutdown signal received; refusing new invocations, accepting callbacks until in-flight work ends or the grace is over"
        );
        scheduler.shutdown(grace).await;
        tracing::info!("no execution left; closing the listeners");
        drain.cancel();
    };
    let drain_limit = DRAIN_LIMIT.min(grace);
    let reloads = async {
        if security.is_some() || tls.is_some() {
            signals::on_hangup(drain.cancelled(), || {
                if let Some(security) = &security {
                    args.security.reload_tokens(&security.auth);
                }
                if let Some(tls) = &tls {
                    args.security.reload_tls(tls);
                }
            })
            .await;
        }
    };
    tokio::join!(
        signal,
        reloads,
        http_server::serve(api_listener, api, limits, drain.cancelled(), drain_limit),
        http_server::serve(
            management_listener,
            management,
            limits,
            drain.cancelled(),
            drain_limit
        ),
    );
    if let Some(sqlite) = opened.sqlite {
        // Everything handed over is committed, the directory released.
        sqlite.close().await;
    }
    tracing::info!("control plane stopped");
    Ok(())
}

/// After the grace, how long answers still being written may take before their
/// connections are closed (idle connections and half-sent requests close at once).
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// The shutdown and reload signals, without spawning.
mod signals {
    /// Calls `reload` on every SIGHUP until `stopped` resolves (never where there is
    /// no SIGHUP, or it cannot be listened for).
    pub(crate) async fn on_hangup(
        stopped: impl std::future::Future<Output = ()>,
        reload: impl Fn(),
    ) {
        tokio::pin!(stopped);
        #[cfg(unix)]
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hangups) => loop {
                tokio::select! {
                    () = &mut stopped => return,
                    _ = hangups.recv() => reload(),
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; reloads are off"),
        }
        stopped.await;
    }

    /// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
    pub(crate) async fn shutdown_signal() {
        let ctrl_c = async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::warn!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    term.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {}
            () = terminate => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_with_parent_refuses_a_process_that_is_not_the_parent() {
        assert_eq!(follow_parent(None), Ok(()));
        let parent = rustix::process::getppid().map_or(0, |pid| pid.as_raw_pid());
        let parent = u32::try_from(parent).unwrap();
        assert_eq!(follow_parent(Some(parent)), Ok(()));
        let error = follow_parent(Some(parent + 1)).unwrap_err();
        assert!(error.contains("not this one's parent"), "{error}");
    }

    #[test]
    fn ttls_are_iso_8601() {
        assert_eq!(
            parse_positive_duration("PT5M").unwrap(),
            DurationMs(300_000)
        );
        assert_eq!(parse_positive_duration("PT0.5S").unwrap(), DurationMs(500));
        assert!(parse_positive_duration("PT0S").is_err());
        assert!(parse_positive_duration("five minutes").is_err());
        assert!(parse_positive_duration("5m").is_err(), "ISO-8601 only");
    }

    #[test]
    fn defaults_match_the_contract() {
        let args = Args::try_parse_from(["control-plane"]).unwrap();
        assert_eq!(args.api_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(args.management_addr.to_string(), "127.0.0.1:8081");
        assert_eq!(args.scheduler, SchedulerMode::Background);
        assert_eq!(args.execution_ttl, DurationMs(300_000));
        assert_eq!(args.max_body_bytes, 6 * 1024 * 1024);
        assert_eq!(args.execution_memory_budget.as_u64(), 256 * 1024 * 1024);
        assert_eq!(args.idempotency_memory_budget.as_u64(), 64 * 1024 * 1024);
        assert_eq!(args.queued_input_budget.as_u64(), 512 * 1024 * 1024);
        assert_eq!(args.retry_backoff_base, Duration::from_millis(100));
        assert_eq!(args.retry_backoff_max, Duration::from_secs(10));
        assert!(args.callback_base_url.is_none());
        assert_eq!(args.shutdown_grace, DurationMs(10_000));
        assert_eq!(args.log_format, LogFormat::Text);
        assert!(!args.admin_api);
        assert_eq!(args.worker_threads, None);
        assert_eq!(args.dispatch_ca_file, None);
        assert_eq!(args.http.to_limits().unwrap(), HttpLimits::default());
        assert_eq!(args.runtime.to_config().unwrap(), RuntimeConfig::default());
        assert_eq!(args.runtime.rate_max_per_second, 100_000);
    }

    #[test]
    fn the_default_callback_url_speaks_the_api_listener_s_scheme() {
        let addr: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        assert_eq!(
            callback_base_url(None, "https", addr),
            "https://127.0.0.1:8443/v1/internal/executions"
        );
        assert_eq!(
            callback_base_url(None, "http", addr),
            "http://127.0.0.1:8443/v1/internal/executions"
        );
        let given = "https://cp.example:443/v1/internal/executions".to_owned();
        assert_eq!(callback_base_url(Some(given.clone()), "http", addr), given);
    }

    #[test]
    fn one_worker_thread_runs_a_single_threaded_runtime() {
        use tokio::runtime::RuntimeFlavor;
        let flavor = |threads| {
            build_runtime(Some(threads))
                .unwrap()
                .handle()
                .runtime_flavor()
        };
        assert_eq!(flavor(1), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(3), RuntimeFlavor::MultiThread);
        assert!(Args::try_parse_from(["control-plane", "--worker-threads", "0"]).is_err());
    }

    #[test]
    fn runtime_flags_set_the_starting_configuration() {
        let args = Args::try_parse_from([
            "control-plane",
            "--admin-api",
            "--rate-max-per-second",
            "50",
            "--sync-queue-enabled",
            "--sync-queue-admission-enabled",
            "--sync-queue-max-estimated-wait",
            "PT0.5S",
            "--sync-queue-max-queue-wait",
            "PT3S",
            "--sync-queue-retry-after-seconds",
            "4",
        ])
        .unwrap();
        assert!(args.admin_api);
        let config = args.runtime.to_config().unwrap();
        assert_eq!(
            config,
            RuntimeConfig {
                rate_max_per_second: 50,
                sync_queue_enabled: true,
                sync_queue_admission_enabled: true,
                sync_queue_max_estimated_wait: Duration::from_millis(500),
                sync_queue_max_queue_wait: Duration::from_secs(3),
                sync_queue_retry_after_seconds: 4,
            }
        );
    }

    #[test]
    fn a_dispatch_ca_file_that_cannot_be_used_stops_the_start_with_its_reason() {
        assert_eq!(dispatch_roots(None).unwrap(), Vec::new());
        let dir = std::env::temp_dir().join(format!("control-plane-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let missing = dir.join("missing.pem");
        let error = dispatch_roots(Some(&missing)).unwrap_err();
        assert!(
            error.starts_with("--dispatch-ca-file: cannot read "),
            "{error}"
        );
        assert!(error.contains("missing.pem"), "{error}");

        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "no certificate here\n").unwrap();
        let error = dispatch_roots(Some(&not_pem)).unwrap_err();
        assert!(error.contains("holds no PEM certificate"), "{error}");

        let args = Args::try_parse_from([
            "control-plane",
            "--dispatch-ca-file",
            not_pem.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(args.dispatch_ca_file.as_deref(), Some(not_pem.as_path()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn runtime_flags_are_refused_when_they_do_not_fit_together() {
        for bad in [
            &["--rate-max-per-second", "0"][..],
            &["--sync-queue-retry-after-seconds", "0"],
            &["--sync-queue-max-queue-wait", "2s"],
        ] {
            let parsed =
                Args::try_parse_from(std::iter::once("control-plane").chain(bad.iter().copied()));
            assert!(parsed.is_err(), "{bad:?} was accepted");
        }
        let args = Args::try_parse_from([
            "control-plane",
            "--sync-queue-max-estimated-wait",
            "PT5S",
            "--sync-queue-max-queue-wait",
            "PT1S",
        ])
        .unwrap();
        let InvalidRuntimeConfig(problems) = args.runtime.to_config().unwrap_err();
        assert_eq!(problems[0].field, "syncQueueMaxEstimatedWait");
    }
}
