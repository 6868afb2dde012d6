//! Per-step randomness: every random draw of step k of a run comes from (run seed, k), so a run
//! resumed at step k repeats steps k+1... bit for bit, whatever ran before it in the process.

use rand::{Rng, SeedableRng};
use tch::Tensor;

/// Mixes the run seed and the step into one seed (splitmix64 finaliser).
pub fn step_seed(seed: u64, step: u64) -> u64 {
    let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step.wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seeds tch's generator for step `step` of the run seeded `seed`.
pub fn seed_tch(seed: u64, step: u64) {
    tch::manual_seed((step_seed(seed, step) >> 1) as i64);
}

/// `batch` indices in 0..n drawn from the step's seed.
pub fn batch_indices(seed: u64, step: u64, n: usize, batch: i64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(step_seed(seed, step));
    let idx: Vec<i64> = (0..batch).map(|_| rng.random_range(0..n as i64)).collect();
    Tensor::from_slice(&idx)
}
