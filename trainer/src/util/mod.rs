//! What every stage leans on and none of them owns: atomic files, the safetensors format, figures,
//! progress bars, per-step seeds and tensor conversion.

pub mod fs;
pub mod plot;
pub mod progress;
pub mod seed;
pub mod st;
pub mod tensor;
