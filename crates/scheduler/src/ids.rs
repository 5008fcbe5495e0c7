//! The default id generator.

use core_types::{ExecutionId, IdGenerator, TraceId};
use uuid::Uuid;
use uuid::fmt::{Hyphenated, Simple};

/// UUID v7 ids: unique, and sortable by creation time.
#[derive(Clone, Copy, Debug, Default)]
pub struct UuidV7Ids;

// Encoded on the stack and copied once into the id's `Arc<str>`: `to_string` would
// run the formatting machinery and allocate a `String` only to copy it again.
impl IdGenerator for UuidV7Ids {
    fn execution_id(&self) -> ExecutionId {
        let mut text = [0; Hyphenated::LENGTH];
        ExecutionId::new(&*Uuid::now_v7().hyphenated().encode_lower(&mut text))
    }

    fn trace_id(&self) -> TraceId {
        let mut text = [0; Simple::LENGTH];
        TraceId::new(&*Uuid::now_v7().simple().encode_lower(&mut text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_ids_are_hyphenated_lowercase_v7_uuids_and_trace_ids_simple_ones() {
        let ids = UuidV7Ids;
        let execution = Uuid::parse_str(ids.execution_id().as_str()).expect("a uuid");
        assert_eq!(execution.get_version_num(), 7);
        assert_eq!(
            ids.execution_id().as_str().len(),
            Hyphenated::LENGTH,
            "hyphenated"
        );
        let trace = ids.trace_id();
        assert_eq!(trace.as_str().len(), Simple::LENGTH, "no hyphens");
        assert_eq!(
            Uuid::parse_str(trace.as_str())
                .expect("a uuid")
                .get_version_num(),
            7
        );
        assert_eq!(trace.as_str(), trace.as_str().to_ascii_lowercase());
    }

    #[test]
    fn later_execution_ids_sort_after_earlier_ones() {
        let ids = UuidV7Ids;
        let first = ids.execution_id();
        let second = ids.execution_id();
        assert!(first.as_str() < second.as_str());
        assert_ne!(first, second);
    }
}
