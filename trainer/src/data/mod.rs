//! Data sets of solved PDE samples and the per-channel normalisation every model trains in.

pub mod dataset;
pub mod normalisation;

pub use dataset::{Dataset, DatasetMeta};
pub use normalisation::{Normalisation, SIGMA_DATA};
