//! The default id generator.

use core_types::{ExecutionId, IdGenerator, TraceId};

/// UUID v7 ids: unique, and sortable by creation time.
#[derive(Clone, Copy, Debug, Default)]
pub struct UuidV7Ids;

impl IdGenerator for UuidV7Ids {
    fn execution_id(&self) -> ExecutionId {
        ExecutionId::new(uuid::Uuid::now_v7().to_string())
    }

    fn trace_id(&self) -> TraceId {
        TraceId::new(uuid::Uuid::now_v7().simple().to_string())
    }
}
