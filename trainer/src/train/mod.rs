//! Training: the loop every stage runs and its optimiser.

pub mod adamw;
pub mod run;

pub use run::{open_state, request_stop, run, Outcome};
