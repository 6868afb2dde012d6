//! What users run on an exported model, through the runtime: the end-to-end demo, the solver
//! examples' problems and report, conditional answers through the C ABI, the calibration of their spread, and the C-ABI handle
//! they and `piddm-bench` share.

pub mod capi;
pub mod conditional;
pub mod demo;
pub mod examples;
pub mod spread;
