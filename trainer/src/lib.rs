//! piddm trainer: the data path from PDE to evaluated one-step student.
//!
//! PDE and solver (`pde`) → data set (`dataset`) → residual operator (`residual`) → U-Net (`unet`)
//! → EDM teacher (`edm`, `teacher`) → pairs and one-step student (`student`) → inference (`infer`)
//! → amortised encoder (`amortise`) → evaluation (`eval`), with the shared training machinery in `train` and the whole run in `pipeline`.

pub mod amortise;
pub mod baselines;
pub mod conditional;
pub mod config;
pub mod dataset;
pub mod demo;
pub mod diagnose;
pub mod edm;
pub mod eval;
pub mod examples;
pub mod export;
pub mod fsutil;
pub mod infer;
pub mod netops;
pub mod ops;
pub mod pde;
pub mod pidm;
pub mod pipeline;
pub mod plot;
pub mod residual;
pub mod sampler;
pub mod st;
pub mod student;
pub mod teacher;
pub mod train;
pub mod unet;
