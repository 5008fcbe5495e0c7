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

    async fn register_now(
        &self,
        mut spec: FunctionSpec,
    ) -> Result<RegisteredFunction, RegisterError> {
        let inner = &self.inner;
        let name = spec.name.clone();
        let _reservation = Reservation::take(&inner.registering, &name)
            .ok_or_else(|| AlreadyRegistered(name.clone()))?;
        if inner.functions.contains_key(&name) {
            return Err(AlreadyRegistered(name).into());
        }

        let provider = match spec.execution_mode {
            ExecutionMode::Deployment => inner
                .parts
                .deployments
                .as_ref()
                .filter(|provider| provider.supports(&spec)),
            ExecutionMode::Local | ExecutionMode::Pool => None,
        };
        let effective_mode = match (spec.execution_mode, provider) {
            (ExecutionMode::Deployment, Some(provider)) => {
                spec.endpoint_url = Some(provider.provision(&spec).await?);
                ExecutionMode::Deployment
            }
            (ExecutionMode::Deployment, None) if spec.endpoint_url.is_some() => ExecutionMode::Pool,
            (ExecutionMode::Deployment, None) => return Err(RegisterError::NoProvider(name)),
            (mode, _) => mode,
        };

        let spec = Arc::new(spec);
        let registered = RegisteredFunction {
            spec: Arc::clone(&spec),
            effective_mode,
            created_at: inner.parts.clock.now(),
        };
        if let Err(refused) = inner.parts.registry.register(registered.clone()).await {
            if let Some(provider) = provider {
                self.deprovision(provider.as_ref(), &name).await;
            }
            return Err(match refused {
                RegistryError::AlreadyRegistered(taken) => taken.into(),
                RegistryError::Unavailable(fault) => fault.into(),
            });
        }
        self.install(registered.clone());
        Ok(registered)
    }

    /// Gives a registered function its queue and makes it the scheduler's.
    pub(super) fn install(&self, registered: RegisteredFunction) -> Arc<FunctionRuntime> {
        let spec = Arc::clone(&registered.spec);
        let queue = FunctionQueue::new(
            spec.name.clone(),
            spec.queue_size as usize,
            spec.concurrency as usize,
            self.inner.readiness.clone(),
        );
        let runtime = Arc::new(FunctionRuntime {
            registered,
            spec,
            queue,
        });
        self.inner
            .functions
            .insert(runtime.spec.name.clone(), Arc::clone(&runtime));
        runtime
    }

    pub(super) async fn deprovision(&self, provider: &dyn DeploymentProvider, name: &FunctionName) {
        if let Err(error) = provider.deprovision(name).await {
            tracing::error!(function = %name, %error, "managed deployment could not be removed");
        }
    }

    /// Sets the replica count of a provisioned `DEPLOYMENT` function.
    pub async fn set_replicas(
        &self,
        name: &FunctionName,
        replicas: u32,
    ) -> Result<(), ReplicasError> {
        let function = self
            .function(name.as_str())
            .ok_or_else(|| ReplicasError::UnknownFunction(name.clone()))?;
        let provider = match (function.effective_mode, &self.inner.parts.deployments) {
            (ExecutionMode::Deployment, Some(provider)) => provider,
            (mode, _) => {
                return Err(ReplicasError::NotDeployment {
                    function: function.spec.name.clone(),
                    mode,
                });
            }
        };
        provider.set_replicas(&function.spec.name, replicas).await?;
        Ok(())
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
        let removed = runtime.registered.clone();
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
            .map(|runtime| runtime.registered.clone())
    }

    /// Every registered function, by name.
    pub fn functions(&self) -> Vec<RegisteredFunction> {
        let mut functions: Vec<_> = self
            .inner
            .functions
            .iter()
            .map(|runtime| runtime.registered.clone())
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
