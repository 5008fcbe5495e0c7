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
    /// Saves `config` if the revision kept is still `replaces` (a store that keeps
    /// none holds revision 1, the configuration the control plane started with):
    /// a compare-and-swap, so of two changes written against one revision only one is
    /// saved. `Ok(false)`: another change got there first, nothing was saved.
    async fn save(&self, config: StoredConfig, replaces: u64) -> Result<bool, StoreUnavailable>;
}

/// The revision a store holds, given what it keeps.
pub fn kept_revision(kept: Option<&StoredConfig>) -> u64 {
    kept.map_or(1, |config| config.revision)
}

/// In memory: forgotten with the process.
#[derive(Debug, Default)]
pub struct MemoryConfigStore {
    config: Mutex<Option<StoredConfig>>,
}

#[async_trait]
impl ConfigStore for MemoryConfigStore {
    async fn load(&self) -> Result<Option<StoredConfig>, StoreUnavailable> {
        Ok(self
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone())
    }

    async fn save(&self, config: StoredConfig, replaces: u64) -> Result<bool, StoreUnavailable> {
        let mut kept = self.config.lock().unwrap_or_else(|p| p.into_inner());
        if kept_revision(kept.as_ref()) != replaces {
            return Ok(false);
        }
        *kept = Some(config);
        Ok(true)
    }
}
