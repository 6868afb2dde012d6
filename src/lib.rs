//! piddm runtime: loads an exported PIDDM student and runs it behind a stable C ABI.
//!
//! The artifact contract (file layout, graph input and output names, model card) lives in [`card`];
//! the trainer writes artifacts through it and the runtime reads them.

pub mod card;

/// Crate version, as the C API reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
