//! The bounds every entry point and every loaded file is held to. They are checked before anything
//! is allocated: Rust aborts the process on a failed allocation, and no panic guard catches that.
//! The C header exports them as `PIDDM_MAX_*`.

/// Samples in one call.
pub const MAX_BATCH: usize = 4096;
/// Values in one array of one call (batch x channels x ny x nx): 2^26 float32, 256 MiB.
pub const MAX_VALUES: usize = 1 << 26;
/// Optimisation steps of one solve.
pub const MAX_STEPS: u64 = 100_000;
/// Grid points along either axis of a model.
pub const MAX_GRID: usize = 4096;
/// Field channels of a model.
pub const MAX_CHANNELS: usize = 64;
/// Values of one sample (channels x ny x nx) of a model.
pub const MAX_FIELD_VALUES: usize = 1 << 24;
/// ONNX Runtime intra-op threads a model may ask for.
pub const MAX_THREADS: usize = 1024;
/// Bytes of one model file (ONNX's protobuf encoding cannot exceed 2 GiB).
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// Field values one ONNX Runtime run takes at most, in at most CHUNK_SAMPLES samples (a larger
/// batch runs in chunks): bounds the network's activation memory, whatever the batch.
pub const CHUNK_VALUES: usize = 1 << 20;
pub const CHUNK_SAMPLES: usize = 64;
/// Answers per observation of one spread call.
pub const MAX_SPREAD_ANSWERS: usize = 1024;

use crate::error::{err, Result};

/// A zeroed buffer, or a status if the memory cannot be had (a failed allocation would abort).
pub(crate) fn zeros<T: Clone + Default>(n: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| err!(PIDDM_ERR_SIZE, "cannot allocate {n} values for {what}"))?;
    v.resize(n, T::default());
    Ok(v)
}
