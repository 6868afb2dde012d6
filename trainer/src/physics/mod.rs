//! The physics the models are held to: a family's residual on a grid, and the solve's objective
//! (observation misfit plus the residual of the answer), each written once over `FieldOps`.

pub mod correction;
pub mod defect;
pub mod objective;
pub mod phases;
pub mod recolour;
pub mod residual;
pub mod translate;

pub use correction::Correction;
pub use defect::DefectOp;
pub use residual::ResidualOp;
