//! The diffusion teacher: EDM training on the normalised joint fields. No PDE term.

use crate::checkpoint::{self, CheckpointMeta, Role, TrainState};
use crate::config::Preset;
use crate::data::Dataset;
use crate::diffusion::Edm;
use crate::train::{self, Outcome};
use crate::util::seed::batch_indices;
use anyhow::{bail, Result};
use std::path::Path;

pub fn train_teacher(
    preset: &Preset,
    data: &Dataset,
    out: &Path,
    resume: bool,
    stop_after: Option<u64>,
) -> Result<Outcome> {
    let mut state = train::open_state(out, resume, || {
        Ok(TrainState::new(CheckpointMeta {
            format: checkpoint::FORMAT_VERSION,
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
            weights_only: false,
        }))
    })?;
    state.meta.expect_role(Role::Teacher, out)?;
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
