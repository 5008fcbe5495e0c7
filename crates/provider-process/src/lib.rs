//! The `process` deployment provider: runs the replicas of `DEPLOYMENT` functions as
//! local processes, and the commands of one-shot (`STDIO`, `FILE`) functions once per
//! invocation.
//!
//! Owns: starting a function's `command` (argv, no shell) in its own process group with
//! the replica environment, readiness (`GET /health`), restarting replicas that exit or
//! never get ready (exponential backoff, a crash loop reported in the function's
//! status), stopping them (SIGTERM, then SIGKILL after a grace), the ring of what they
//! wrote, and dispatching to the ready replicas (least in flight first). Nothing it
//! starts outlives the control plane: every child leads its own group, killed with it
//! when its owner lets go; the kernel kills a replica if the control plane dies, and
//! the next start kills what is left of any group (a ledger of process groups in
//! `--data-dir`).
//!
//! Must not know: queues, records or stores (the scheduler keeps the desired count and
//! decides scaling), or HTTP routes. It spawns no task: its supervision runs in tasks
//! the scheduler owns, handed over through [`core_types::TaskOwner`].

mod child;
mod health;
mod ledger;
mod logs;
mod oneshot;
mod replicas;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use core_types::{
    DeploymentHooks, DeploymentProvider, DeploymentStatus, DeprovisionError, Dispatch,
    DispatchOutcome, DispatchRequest, ErrorCode, ErrorInfo, FunctionName, FunctionSpec,
    ProvisionError, Provisioned, RuntimeMode, SetReplicasError,
};
use dispatcher::PoolDispatcher;

use ledger::GroupLedger;
use replicas::Deployment;

/// The ledger of process groups could not be taken.
#[derive(Debug, thiserror::Error)]
#[error("the process provider's ledger {}: {source}", dir.display())]
pub struct LedgerError {
    dir: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The provider's name, in logs, errors and `degradationReason`.
const NAME: &str = "process";

/// How the process provider runs replicas (control-plane flags).
#[derive(Clone, Debug)]
pub struct ProcessConfig {
    /// How long a new replica may take to answer `GET /health` with 2xx.
    pub start_timeout: Duration,
    /// How long a replica (or a one-shot command's group) has between SIGTERM and
    /// SIGKILL.
    pub stop_grace: Duration,
    /// The first wait before a failed replica is started again; it doubles with each
    /// failure in a row, up to `restart_backoff_max`.
    pub restart_backoff_base: Duration,
    /// The longest wait before a failed replica is started again.
    pub restart_backoff_max: Duration,
    /// Lines of output kept per function.
    pub log_lines: usize,
    /// Where one-shot `FILE` functions get their per-invocation directories.
    pub scratch_dir: PathBuf,
    /// Where the ledger of running process groups is kept (one provider at a time).
    pub ledger_dir: PathBuf,
    /// The largest output a one-shot command may produce.
    pub max_output_bytes: usize,
}

impl ProcessConfig {
    /// The wait before the start that follows the `failures`-th failure in a row.
    fn restart_backoff(&self, failures: u32) -> Duration {
        let doubling = 2_u32.saturating_pow(failures.saturating_sub(1).min(20));
        self.restart_backoff_base
            .saturating_mul(doubling)
            .min(self.restart_backoff_max)
    }
}

/// The `process` deployment provider (and the `Dispatch` of the functions it runs).
#[derive(Clone, Debug)]
pub struct ProcessProvider {
    config: Arc<ProcessConfig>,
    pool: PoolDispatcher,
    ledger: Arc<GroupLedger>,
    deployments: Arc<Mutex<HashMap<FunctionName, Arc<Deployment>>>>,
}

impl ProcessProvider {
    /// A provider that dispatches to its replicas through `pool` (the pool dispatcher
    /// the `POOL` functions use: same wire contract, same connection pooling). It takes
    /// the ledger in `config.ledger_dir` (refused while another provider holds it) and
    /// kills what an earlier control plane's process groups still run.
    pub fn new(config: ProcessConfig, pool: PoolDispatcher) -> Result<Self, LedgerError> {
        let (ledger, leftovers) =
            GroupLedger::open(&config.ledger_dir).map_err(|source| LedgerError {
                dir: config.ledger_dir.clone(),
                source,
            })?;
        if leftovers.ended > 0 {
            tracing::warn!(
                groups = leftovers.ended,
                "ended process groups an earlier control plane left running (it was killed)"
            );
        }
        Ok(Self {
            config: Arc::new(config),
            pool,
            ledger: Arc::new(ledger),
            deployments: Arc::default(),
        })
    }

    fn deployment(&self, function: &FunctionName) -> Option<Arc<Deployment>> {
        self.deployments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(function)
            .cloned()
    }

    fn take_deployment(&self, function: &FunctionName) -> Option<Arc<Deployment>> {
        self.deployments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(function)
    }

    fn failed(function: &FunctionName, message: String) -> ProvisionError {
        ProvisionError::Failed {
            provider: NAME.to_owned(),
            function: function.clone(),
            message,
        }
    }
}

fn one_shot(spec: &FunctionSpec) -> bool {
    matches!(spec.runtime_mode, RuntimeMode::Stdio | RuntimeMode::File)
}

#[async_trait::async_trait]
impl DeploymentProvider for ProcessProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn refuses(&self, spec: &FunctionSpec) -> Option<String> {
        spec.command
            .is_empty()
            .then(|| "the function has no command to run".to_owned())
    }

    async fn provision(
        &self,
        spec: &Arc<FunctionSpec>,
        replicas: u32,
        hooks: DeploymentHooks,
    ) -> Result<Provisioned, ProvisionError> {
        if let Some(reason) = self.refuses(spec) {
            return Err(ProvisionError::Unsupported {
                provider: NAME.to_owned(),
                function: spec.name.clone(),
                reason,
            });
        }
        // Provisioning again (a registration retried) starts from nothing.
        if let Some(previous) = self.take_deployment(&spec.name) {
            previous.remove().await;
        }
        let deployment = Arc::new(Deployment::new(
            Arc::clone(spec),
            hooks,
            self.config.log_lines,
            Arc::clone(&self.ledger),
        ));
        self.deployments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.name.clone(), Arc::clone(&deployment));
        if one_shot(spec) {
            return Ok(Provisioned::PerInvocation);
        }
        deployment.scale(replicas, &self.config);
        if let Err(failure) = deployment.wait_ready(replicas).await {
            // Atomic: nothing of a refused registration keeps running.
            if let Some(deployment) = self.take_deployment(&spec.name) {
                deployment.remove().await;
            }
            let tail = deployment.logs.tail(5).join("\n");
            let message = if tail.is_empty() {
                failure
            } else {
                format!("{failure}; its last output:\n{tail}")
            };
            return Err(Self::failed(&spec.name, message));
        }
        Ok(Provisioned::Replicas)
    }

    async fn deprovision(&self, function: &FunctionName) -> Result<(), DeprovisionError> {
        if let Some(deployment) = self.take_deployment(function) {
            deployment.remove().await;
        }
        Ok(())
    }

    async fn set_replicas(
        &self,
        function: &FunctionName,
        replicas: u32,
    ) -> Result<(), SetReplicasError> {
        let deployment = self
            .deployment(function)
            .filter(|d| !one_shot(&d.spec))
            .ok_or_else(|| SetReplicasError::NotProvisioned {
                provider: NAME.to_owned(),
                function: function.clone(),
            })?;
        deployment.scale(replicas, &self.config);
        Ok(())
    }

    fn status(&self, function: &FunctionName) -> Option<DeploymentStatus> {
        let deployment = self.deployment(function)?;
        Some(DeploymentStatus {
            ready: deployment.ready(),
            restarts: deployment.restarts(),
            crash_loop: deployment.crash_loop(),
        })
    }

    fn logs(&self, function: &FunctionName, tail: usize) -> Option<Vec<String>> {
        Some(self.deployment(function)?.logs.tail(tail))
    }

    async fn shutdown(&self) {
        let all: Vec<_> = self
            .deployments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, deployment)| deployment)
            .collect();
        // Side by side: each waits out its own replicas' grace.
        futures::future::join_all(all.iter().map(|deployment| deployment.remove())).await;
    }
}

#[async_trait::async_trait]
impl Dispatch for ProcessProvider {
    async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
        let function = &request.function.name;
        let Some(deployment) = self.deployment(function) else {
            return Err(ErrorInfo::new(
                ErrorCode::DispatchError,
                format!("the process provider does not run function {function}"),
            ));
        };
        if one_shot(&deployment.spec) {
            let limits = oneshot::OneShotLimits {
                max_output_bytes: self.config.max_output_bytes,
            };
            return oneshot::run_once(&request, limits, &self.config.scratch_dir, &self.ledger)
                .await;
        }
        let Some(picked) = deployment.pick() else {
            return Err(ErrorInfo::new(
                ErrorCode::DispatchError,
                format!("no replica of function {function} is ready"),
            ));
        };
        let mut outcome = self.pool.dispatch_to(&picked.endpoint, &request).await;
        if let Ok(success) = &mut outcome
            && let Some(init) = picked.cold_start()
        {
            success.cold_start = true;
            success
                .init_duration_ms
                .get_or_insert(u64::try_from(init.as_millis()).unwrap_or(u64::MAX));
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restart_backoff_doubles_per_failure_in_a_row_up_to_its_maximum() {
        let config = ProcessConfig {
            start_timeout: Duration::from_secs(1),
            stop_grace: Duration::from_secs(1),
            restart_backoff_base: Duration::from_millis(500),
            restart_backoff_max: Duration::from_secs(30),
            log_lines: 10,
            scratch_dir: PathBuf::new(),
            ledger_dir: PathBuf::new(),
            max_output_bytes: 1,
        };
        let waits: Vec<u128> = (1..=9)
            .map(|failures| config.restart_backoff(failures).as_millis())
            .collect();
        assert_eq!(
            waits,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(config.restart_backoff(u32::MAX), Duration::from_secs(30));
    }
}
