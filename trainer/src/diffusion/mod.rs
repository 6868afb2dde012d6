//! The diffusion model: EDM's preconditioning, loss and schedule, the one-step student function,
//! and the teacher's sampler with the guidance hooks the baselines differ by.

pub mod edm;
pub mod sampler;

pub use edm::Edm;
