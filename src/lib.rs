//! piddm runtime: loads an exported PIDDM student and runs one-step generation, the PDE residual
//! check and the observation-conditioned solve on ONNX Runtime (CPU, or CUDA), in Rust and behind a
//! stable C ABI (`include/piddm.h`).
//!
//! The artifact contract (file layout, graph input and output names, model card) lives in [`card`];
//! the trainer writes artifacts through it and the runtime reads them.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod artifact;
pub mod canonical;
pub mod card;
mod determine;
pub mod error;
pub mod ffi;
pub mod limits;
pub mod model;
pub mod optim;
mod ortlib;

pub use error::{Error, Result, Status};
pub use model::{Device, Model, Options, SolveParams, SolveReport};
/// The process-wide ONNX Runtime environment piddm uses (for running other graphs beside it).
pub use ortlib::environment as ort_environment;

/// Crate version, as the C API reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
