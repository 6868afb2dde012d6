//! The diffusion teacher: EDM training on the normalised joint fields. No PDE term.

use crate::config::Preset;
use crate::dataset::Dataset;
use crate::edm::Edm;
use crate::train::{self, CheckpointMeta, Outcome, Role, TrainState};
use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use std::path::Path;
use tch::Tensor;

/// `batch` indices in 0..n drawn from the step's seed.
pub fn batch_indices(seed: u64, step: u64, n: usize, batch: i64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(train::step_seed(seed, step));
    let idx: Vec<i64> = (0..batch).map(|_| rng.random_range(0..n as i64)).collect();
    Tensor::from_slice(&idx)
}

pub fn train_teacher(
    preset: &Preset,
    data: &Dataset,
    out: &Path,
    resume: bool,
    stop_after: Option<u64>,
) -> Result<Outcome> {
    let mut state = train::open_state(out, resume, || {
        Ok(TrainState::new(CheckpointMeta {
            format: train::FORMAT_VERSION,
            role: Role::Teacher,
            step: 0,
            seed: preset.data.seed,
            train: preset.teacher.clone(),
            unet: preset.model.clone(),
            edm: Edm::default(),
            data: (&data.meta).into(),
            student: None,
            amortiser: None,
            pidm: None,
            last_loss: f64::NAN,
        }))
    })?;
    if state.meta.role != Role::Teacher {
        bail!("{} is a student checkpoint, not a teacher", out.display());
    }
    if state.meta.unet != preset.model {
        bail!(
            "{} was made with another network ({:?}); the preset asks for {:?}",
            out.display(),
            state.meta.unet,
            preset.model
        );
    }
    // The preset may extend a finished run: its step count and schedule win.
    state.meta.train = preset.teacher.clone();
    state
        .meta
        .data
        .check_compatible(&data.meta, "the teacher checkpoint")?;
    if state.meta.data.normalisation != data.meta.normalisation {
        bail!("the teacher checkpoint was trained on another data set (normalisation differs); resume it with its own data set");
    }
    eprintln!(
        "teacher: {} parameters, {} training samples",
        state.model.parameter_count(),
        data.meta.count
    );
    let device = state.model.vs.device();
    let x_all = data
        .meta
        .normalisation
        .to_normalised(&data.fields)
        .to_device(device);
    let (edm, seed, batch, n) = (
        state.meta.edm,
        state.meta.seed,
        state.meta.train.batch,
        data.meta.count,
    );
    train::run(&mut state, out, "teacher", stop_after, |net, step| {
        let idx = batch_indices(seed, step, n, batch).to_device(device);
        Ok(edm.loss(net, &x_all.index_select(0, &idx)))
    })
}
