//! The runtime configuration as last patched, kept so a restart continues from it.

use std::sync::Mutex;

use async_trait::async_trait;

use crate::StoreUnavailable;

/// A runtime configuration and its revision, as the API wrote it (a JSON document the
/// store does not interpret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredConfig {
    /// Its revision.
    pub revision: u64,
    /// The configuration, as JSON text.
    pub document: String,
}

/// Where the runtime configuration is kept. `save` returns after it is durable (in a
/// durable backend).
#[async_trait]
pub trait ConfigStore: Send + Sync + 'static {
    /// The configuration last saved, if any.
    async fn load(&self) -> Result<Option<StoredConfig>, StoreUnavailable>;
    /// Saves `config`, replacing the one before.
    async fn save(&self, config: StoredConfig) -> Result<(), StoreUnavailable>;
}

/// In memory: forgotten with the process.
#[derive(Debug, Default)]
pub struct MemoryConfigStore {
    config: Mutex<Option<StoredConfig>>,
}

#[async_trait]
impl ConfigStore for MemoryConfigStore {
    async fn load(&self) -> Result<Option<StoredConfig>, StoreUnavailable> {
        Ok(self.config.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn save(&self, config: StoredConfig) -> Result<(), StoreUnavailable> {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = Some(config);
        Ok(())
    }
}
