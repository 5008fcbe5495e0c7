//! The control-plane binary: wires the concrete crates together (filled in by the service issue).
fn main() {}
