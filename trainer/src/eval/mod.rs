//! Measuring what was trained: the metrics, the evaluation's problems, the evaluation of teacher and
//! students side by side, the methods compared, the baselines beside PIDDM, and the diagnosis of
//! where a conditional answer's error comes from.

pub mod metrics;

pub mod problems;

pub mod method;

pub mod evaluate;

pub mod baselines;

pub mod diagnose;
