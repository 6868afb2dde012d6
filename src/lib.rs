//! piddm runtime: loads an exported PIDDM student and runs it behind a stable C ABI.
//!
//! The runtime proper (ONNX Runtime session, C API) lands with the runtime work; this crate already
//! owns the facts that both halves of the project share.

/// Crate version, as the C API will report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
