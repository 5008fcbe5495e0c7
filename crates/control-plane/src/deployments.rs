//! Who runs `DEPLOYMENT` replicas (`--deployment-provider`), and how.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use core_types::{DeploymentProvider, Dispatch};
use dispatcher::PoolDispatcher;
use provider_process::{ProcessConfig, ProcessProvider};
use scheduler::AutoscalingConfig;

use crate::{parse_positive_wait, parse_wait};

/// The deployment providers this build has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProviderKind {
    /// Replicas are local processes (the function's `command`).
    Process,
    /// Nothing runs replicas: a `DEPLOYMENT` needs its own `endpointUrl` (then it runs
    /// as `POOL`).
    None,
}

/// The flags of the deployment provider and the autoscaler.
#[derive(Debug, clap::Args)]
pub(crate) struct DeploymentFlags {
    /// Who runs `DEPLOYMENT` replicas: `process` (local processes) or `none`.
    #[arg(
        long,
        env = "CONTROL_PLANE_DEPLOYMENT_PROVIDER",
        value_enum,
        default_value = "process"
    )]
    deployment_provider: ProviderKind,
    /// How long a new replica may take to answer `GET /health` with 2xx (ISO-8601).
    #[arg(long, env = "CONTROL_PLANE_REPLICA_START_TIMEOUT", default_value = "PT30S", value_parser = parse_positive_wait)]
    replica_start_timeout: Duration,
    /// How long a stopped replica has between SIGTERM and SIGKILL (ISO-8601).
    #[arg(long, env = "CONTROL_PLANE_REPLICA_STOP_GRACE", default_value = "PT5S", value_parser = parse_wait)]
    replica_stop_grace: Duration,
    /// First wait before a failed replica is started again; doubles per failure in a
    /// row (ISO-8601).
    #[arg(long, env = "CONTROL_PLANE_REPLICA_RESTART_BACKOFF_BASE", default_value = "PT0.5S", value_parser = parse_wait)]
    replica_restart_backoff_base: Duration,
    /// Longest wait before a failed replica is started again (ISO-8601).
    #[arg(long, env = "CONTROL_PLANE_REPLICA_RESTART_BACKOFF_MAX", default_value = "PT30S", value_parser = parse_wait)]
    replica_restart_backoff_max: Duration,
    /// Lines of replica output kept per function (`GET /v1/functions/{name}/logs`).
    #[arg(long, env = "CONTROL_PLANE_REPLICA_LOG_LINES", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    replica_log_lines: u32,
    /// How often the autoscaler looks at `INTERNAL`-scaled functions (ISO-8601).
    #[arg(long, env = "CONTROL_PLANE_AUTOSCALE_INTERVAL", default_value = "PT1S", value_parser = parse_positive_wait)]
    autoscale_interval: Duration,
    /// Scale down only to the highest count asked for over this long (ISO-8601).
    #[arg(long, env = "CONTROL_PLANE_SCALE_DOWN_WINDOW", default_value = "PT30S", value_parser = parse_wait)]
    scale_down_window: Duration,
    /// With `minReplicas: 0`, idle this long scales a function to zero (ISO-8601).
    #[arg(long, env = "CONTROL_PLANE_SCALE_TO_ZERO_AFTER", default_value = "PT60S", value_parser = parse_wait)]
    scale_to_zero_after: Duration,
}

/// The provider the flags ask for, as the deployment port and as the dispatcher of
/// the functions it runs.
pub(crate) struct Provider {
    pub(crate) deployments: Arc<dyn DeploymentProvider>,
    pub(crate) dispatch: Arc<dyn Dispatch>,
}

impl DeploymentFlags {
    /// The configured provider, if any. One-shot `FILE` functions get their
    /// directories under `<data-dir>/scratch`; the process groups it runs are recorded
    /// in `<data-dir>/process-groups` (what a killed predecessor left is ended here).
    pub(crate) fn provider(
        &self,
        data_dir: &Path,
        pool: PoolDispatcher,
        max_output_bytes: usize,
    ) -> Result<Option<Provider>, provider_process::LedgerError> {
        match self.deployment_provider {
            ProviderKind::None => Ok(None),
            ProviderKind::Process => {
                let provider = Arc::new(ProcessProvider::new(
                    ProcessConfig {
                        start_timeout: self.replica_start_timeout,
                        stop_grace: self.replica_stop_grace,
                        restart_backoff_base: self.replica_restart_backoff_base,
                        restart_backoff_max: self
                            .replica_restart_backoff_max
                            .max(self.replica_restart_backoff_base),
                        log_lines: self.replica_log_lines as usize,
                        scratch_dir: data_dir.join("scratch"),
                        ledger_dir: data_dir.join("process-groups"),
                        max_output_bytes,
                    },
                    pool,
                )?);
                Ok(Some(Provider {
                    deployments: Arc::clone(&provider) as Arc<dyn DeploymentProvider>,
                    dispatch: provider,
                }))
            }
        }
    }

    /// The autoscaler's timing.
    pub(crate) fn autoscaling(&self) -> AutoscalingConfig {
        AutoscalingConfig {
            interval: self.autoscale_interval,
            scale_down_window: self.scale_down_window,
            idle_to_zero: self.scale_to_zero_after,
        }
    }
}
