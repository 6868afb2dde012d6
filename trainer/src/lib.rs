//! piddm trainer: the data path from a PDE to an exported, evaluated one-step surrogate. The modules
//! are declared in that order and each imports only those above it (a test holds it):
//!
//! util (files, figures, seeds) → pde (families: parameters, solvers, residuals over `FieldOps`,
//! tasks, presets) → data (solved data sets, normalisation) → nets (the U-Net over `NetOps`) →
//! physics (the residual on a grid, the solve's objective) → diffusion (EDM, the one-step student,
//! the sampler and its hooks) → config (presets) → checkpoint (roles, provenance, files) → train
//! (the loop, AdamW and EMA) → stages (teacher, PIDM, pairs, students, solve, encoder) → export
//! (ONNX) → eval (evaluation, baselines, diagnosis) → pipeline (every stage of a preset) → apps (the
//! demo, the solver examples, answers through the C ABI) → cli (the subcommands).

pub mod util;

pub mod pde;

pub mod data;

pub mod nets;

pub mod physics;

pub mod diffusion;

pub mod config;

pub mod checkpoint;

pub mod train;

pub mod stages;

pub mod export;

pub mod eval;

pub mod pipeline;

pub mod apps;

pub mod cli;
