//! Registering, scaling, listing and removing functions.

use super::*;

impl Scheduler {
    /// Registers a function and creates its queue. A `DEPLOYMENT` function is
    /// provisioned first (the provider's endpoint becomes its `endpointUrl`); without a
    /// provider able to run it, one that brought its own `endpointUrl` runs as `POOL`,
    /// any other is refused. Atomic: a refused registration leaves nothing behind.
    ///
    /// It runs in a task the scheduler owns: a caller that goes away half-way (a client
    /// that disconnects while its function is provisioned) does not cut it short, so
    /// nothing is left provisioned but unregistered.
    pub async fn register_function(
        &self,
        spec: FunctionSpec,
    ) -> Result<RegisteredFunction, RegisterError> {
        let this = self.clone();
        self.run_owned(async move { this.register_now(spec).await })
            .await
            .unwrap_or(Err(RegisterError::Interrupted))
    }

    async fn register_now(&self, spec: FunctionSpec) -> Result<RegisteredFunction, RegisterError> {
        let inner = &self.inner;
        let name = spec.name.clone();
        let _reservation = Reservation::take(&inner.registering, &name)
            .ok_or_else(|| AlreadyRegistered(name.clone()))?;
        if inner.functions.contains_key(&name) {
            return Err(AlreadyRegistered(name).into());
        }
        let created_at = inner.parts.clock.now();
        let mut registered = RegisteredFunction::new(Arc::new(spec), created_at);
        let queue = self.new_queue(&registered.spec);
        let mut reach = Reach::Itself;
        if registered.spec.execution_mode == ExecutionMode::Deployment {
            match self.deployment_for(&registered.spec) {
                Ok(provider) => {
                    let desired = Self::initial_replicas(&registered.spec);
                    reach = self
                        .provision(provider, &mut registered, &queue, desired)
                        .await?;
                }
                Err(reason) if registered.spec.endpoint_url.is_some() => {
                    queue.set_concurrency(registered.spec.concurrency as usize);
                    registered.effective_mode = ExecutionMode::Pool;
                    registered.degradation_reason =
                        Some(format!("{reason}: it runs as POOL at its endpointUrl"));
                }
                Err(reason) => {
                    return Err(RegisterError::NoProvider {
                        function: name,
                        reason,
                    });
                }
            }
        }
        if let Err(refused) = inner.parts.registry.register(registered.clone()).await {
            if let (Reach::Provider(_), Some(provider)) = (&reach, &inner.parts.deployments) {
                self.deprovision(provider.as_ref(), &name).await;
            }
            return Err(match refused {
                RegistryError::AlreadyRegistered(taken) => taken.into(),
                RegistryError::Unavailable(fault) => fault.into(),
            });
        }
        let runtime = self.install(registered, queue, reach);
        Ok(self.view(&runtime))
    }

    /// The provider that would run `spec`, or why none can.
    fn deployment_for(&self, spec: &FunctionSpec) -> Result<&Arc<dyn DeploymentProvider>, String> {
        let Some(provider) = &self.inner.parts.deployments else {
            return Err("no deployment provider runs functions here".to_owned());
        };
        match provider.refuses(spec) {
            None => Ok(provider),
            Some(reason) => Err(format!(
                "the {} deployment provider cannot run it ({reason})",
                provider.name()
            )),
        }
    }

    /// A queue for `spec`. A `DEPLOYMENT` one lets nothing through until its provider
    /// says how it is reached (and, for replicas, how many are ready).
    pub(super) fn new_queue(&self, spec: &FunctionSpec) -> Arc<FunctionQueue> {
        let concurrency = match spec.execution_mode {
            ExecutionMode::Deployment => 0,
            ExecutionMode::Local | ExecutionMode::Pool => spec.concurrency as usize,
        };
        FunctionQueue::new(
            spec.name.clone(),
            spec.queue_size as usize,
            concurrency,
            self.inner.readiness.clone(),
        )
    }

    /// Provisions `registered` with `desired` replicas and records how it is reached
    /// (an endpoint becomes its `endpointUrl`; managed replicas get their target).
    pub(super) async fn provision(
        &self,
        provider: &Arc<dyn DeploymentProvider>,
        registered: &mut RegisteredFunction,
        queue: &Arc<FunctionQueue>,
        desired: u32,
    ) -> Result<Reach, ProvisionError> {
        let target = store::ReplicaTarget {
            desired,
            pinned: registered.replicas.is_some_and(|kept| kept.pinned),
        };
        let (hooks, replicas) = self.replica_hooks(registered, queue, target);
        let provisioned = provider.provision(&registered.spec, desired, hooks).await?;
        let concurrency = registered.spec.concurrency as usize;
        Ok(match provisioned {
            Provisioned::Endpoint(endpoint) => {
                let mut spec = FunctionSpec::clone(&registered.spec);
                spec.endpoint_url = Some(endpoint);
                registered.spec = Arc::new(spec);
                queue.set_concurrency(concurrency);
                Reach::Provider(ProviderReach::Endpoint)
            }
            Provisioned::Replicas => {
                registered.replicas = Some(target);
                Reach::Provider(ProviderReach::Replicas(replicas))
            }
            Provisioned::PerInvocation => {
                queue.set_concurrency(concurrency);
                Reach::Provider(ProviderReach::PerInvocation)
            }
        })
    }

    /// Makes a registered function the scheduler's.
    pub(super) fn install(
        &self,
        registered: RegisteredFunction,
        queue: Arc<FunctionQueue>,
        reach: Reach,
    ) -> Arc<FunctionRuntime> {
        let spec = Arc::clone(&registered.spec);
        let (replicas, per_invocation) = match reach {
            Reach::Provider(ProviderReach::Replicas(replicas)) => (Some(replicas), false),
            Reach::Provider(ProviderReach::PerInvocation) => (None, true),
            Reach::Itself | Reach::Provider(ProviderReach::Endpoint) => (None, false),
        };
        let runtime = Arc::new(FunctionRuntime {
            registered,
            spec,
            queue,
            replicas,
            per_invocation,
        });
        self.inner
            .functions
            .insert(runtime.spec.name.clone(), Arc::clone(&runtime));
        runtime
    }

    /// What a reader sees of a registered function: as registered, with its replicas'
    /// current target.
    fn view(&self, runtime: &FunctionRuntime) -> RegisteredFunction {
        let mut registered = runtime.registered.clone();
        if let Some(replicas) = &runtime.replicas {
            registered.replicas = Some(replicas.target());
        }
        registered
    }

    pub(super) async fn deprovision(&self, provider: &dyn DeploymentProvider, name: &FunctionName) {
        if let Err(error) = provider.deprovision(name).await {
            tracing::error!(function = %name, %error, "managed deployment could not be removed");
        }
    }

    /// Removes a function. Its queued executions end in `error` with
    /// `FUNCTION_REMOVED` (their sync callers are answered at once); running ones finish.
    /// Like registration it runs in a task the scheduler owns, so a caller that goes
    /// away cannot leave the function half removed.
    pub async fn remove_function(
        &self,
        name: &FunctionName,
    ) -> Result<RegisteredFunction, RemoveError> {
        let (this, name) = (self.clone(), name.clone());
        self.run_owned(async move { this.remove_now(&name).await })
            .await
            .unwrap_or(Err(RemoveError::Interrupted))
    }

    async fn remove_now(&self, name: &FunctionName) -> Result<RegisteredFunction, RemoveError> {
        if !self.inner.functions.contains_key(name) {
            return Err(RemoveError::UnknownFunction(name.clone()));
        }
        // Forgotten durably first: if the registry cannot, nothing is removed.
        self.inner.parts.registry.remove(name.as_str()).await?;
        let Some((_, runtime)) = self.inner.functions.remove(name) else {
            return Err(RemoveError::UnknownFunction(name.clone()));
        };
        for queued in runtime.queue.close() {
            let error = ErrorInfo::new(
                ErrorCode::FunctionRemoved,
                format!("function {name} was removed"),
            );
            let _ = self
                .complete(
                    &queued.id,
                    None,
                    Completion::error(error),
                    CompletionSource::FunctionRemoved,
                )
                .await;
        }
        let removed = self.view(&runtime);
        if removed.effective_mode == ExecutionMode::Deployment
            && let Some(provider) = &self.inner.parts.deployments
        {
            self.deprovision(provider.as_ref(), name).await;
        }
        Ok(removed)
    }

    /// One registered function (the scheduler's view: no store is asked).
    pub fn function(&self, name: &str) -> Option<RegisteredFunction> {
        self.inner
            .functions
            .get(name)
            .map(|runtime| self.view(&runtime))
    }

    /// Every registered function, by name.
    pub fn functions(&self) -> Vec<RegisteredFunction> {
        let mut functions: Vec<_> = self
            .inner
            .functions
            .iter()
            .map(|runtime| self.view(&runtime))
            .collect();
        functions.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        functions
    }

    /// How loaded a function's queue is, read from its counters (no lock, nothing
    /// copied: cheap enough for every metrics scrape).
    pub fn queue_load(&self, name: &str) -> Option<QueueLoad> {
        let runtime = self.inner.functions.get(name)?;
        Some(QueueLoad {
            depth: runtime.queue.depth(),
            in_flight: runtime.queue.in_flight(),
        })
    }

    /// A function's queue and slots, if it is registered (copies every queued id: for
    /// inspection, not for a hot path).
    pub fn queue_snapshot(&self, name: &str) -> Option<QueueSnapshot> {
        let runtime = self.inner.functions.get(name)?;
        let queue = &runtime.queue;
        Some(QueueSnapshot {
            queued: queue.queued_ids(),
            in_flight: queue.in_flight(),
            concurrency: queue.concurrency(),
            capacity: queue.capacity(),
        })
    }
}

/// A name held in the set of registrations in progress until dropped.
struct Reservation<'a> {
    set: &'a dashmap::DashSet<FunctionName>,
    name: FunctionName,
}

impl<'a> Reservation<'a> {
    fn take(set: &'a dashmap::DashSet<FunctionName>, name: &FunctionName) -> Option<Self> {
        set.insert(name.clone()).then(|| Self {
            set,
            name: name.clone(),
        })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.set.remove(&self.name);
    }
}

/// How a registered function is reached.
pub(super) enum Reach {
    /// By the scheduler's dispatcher alone (`LOCAL`, `POOL`, a `DEPLOYMENT` run as
    /// `POOL`).
    Itself,
    /// Through what its deployment provider provisioned.
    Provider(ProviderReach),
}

/// What a provider provisioned ([`Provisioned`], with the replicas' state).
pub(super) enum ProviderReach {
    Endpoint,
    Replicas(Arc<replicas::Replicas>),
    PerInvocation,
}
