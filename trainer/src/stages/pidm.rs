//! PIDM (Bastek et al. 2025): a teacher trained with an added residual loss on the denoiser's clean
//! estimate D(x_t; sigma), in physical units, at every sampled noise level:
//!   L = EDM loss + w * mean over the batch of the interior mean of R(D)^2.
//! Here the teacher's run continues with the term added (its weights, EMA and Adam moments, the
//! same batches and learning rate), so that a sweep over w costs a fraction of a teacher each.

use crate::checkpoint::{PidmInfo, Role, TrainState};
use crate::config::Preset;
use crate::data::{Dataset, Normalisation};
use crate::diffusion::Edm;
use crate::nets::UNet;
use crate::physics::ResidualOp;
use crate::train::{self, Outcome};
use crate::util::seed::{batch_indices, seed_tch};
use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{Kind, Tensor};

/// Per-sample interior mean of R^2 of clean estimates `d` (normalised units): [B].
pub fn estimate_residual(op: &ResidualOp, norm: &Normalisation, d: &Tensor) -> Tensor {
    op.mse_per_sample(&norm.to_physical(d))
}

/// The PIDM loss on clean normalised data `x0`, and its residual term (before the weight).
pub fn loss(
    edm: &Edm,
    net: &UNet,
    x0: &Tensor,
    op: &ResidualOp,
    norm: &Normalisation,
    weight: f64,
) -> (Tensor, Tensor) {
    let (denoising, d) = edm.loss_and_estimate(net, x0);
    let residual = estimate_residual(op, norm, &d).mean(Kind::Float);
    (denoising + &residual * weight, residual)
}

/// Continues the teacher at `teacher` for `steps` steps with the residual term of weight `weight`,
/// into `out` (resumable: a stopped run continues with `resume`).
#[allow(clippy::too_many_arguments)]
pub fn train_pidm(
    preset: &Preset,
    data: &Dataset,
    teacher: &Path,
    weight: f64,
    steps: u64,
    out: &Path,
    resume: bool,
    stop_after: Option<u64>,
) -> Result<Outcome> {
    if !(weight.is_finite() && weight >= 0.0) {
        bail!("the PIDM residual weight must be finite and >= 0, got {weight}");
    }
    let mut state = train::open_state(out, resume, || {
        let mut st = TrainState::load_resumable(teacher)
            .with_context(|| format!("loading the teacher {}", teacher.display()))?;
        st.meta.expect_role(Role::Teacher, teacher)?;
        if st.meta.pidm.is_some() {
            bail!("{} is a PIDM teacher, not a plain one", teacher.display());
        }
        st.meta.pidm = Some(PidmInfo {
            weight,
            teacher_step: st.meta.step,
        });
        Ok(st)
    })?;
    let info = state
        .meta
        .pidm
        .clone()
        .with_context(|| format!("{} is not a PIDM checkpoint", out.display()))?;
    if info.weight != weight {
        bail!(
            "{} was trained with weight {}, not {weight}",
            out.display(),
            info.weight
        );
    }
    if state.meta.unet != preset.model {
        bail!(
            "{} was made with another network than the preset's",
            out.display()
        );
    }
    state.meta.train.steps = info.teacher_step + steps;
    state
        .meta
        .data
        .check_compatible(&data.meta, "the teacher checkpoint")?;
    if state.meta.data.normalisation != data.meta.normalisation {
        bail!("the teacher was trained on another data set (normalisation differs)");
    }
    eprintln!(
        "pidm: weight {weight:e}, from teacher step {} to {}",
        info.teacher_step, state.meta.train.steps
    );
    let device = state.model.vs.device();
    let norm = data.meta.normalisation.clone();
    let op = state.meta.data.residual_op();
    let x_all = norm.to_normalised(&data.fields).to_device(device);
    let (edm, seed, batch, n) = (
        state.meta.edm,
        state.meta.seed,
        state.meta.train.batch,
        data.meta.count,
    );
    // The two terms on the first batch, to judge the weight by.
    let (denoising, residual) = tch::no_grad(|| {
        seed_tch(seed, state.meta.step);
        let idx = batch_indices(seed, state.meta.step, n, batch).to_device(device);
        let x0 = x_all.index_select(0, &idx);
        let (total, r) = loss(&edm, &state.model.net, &x0, &op, &norm, 0.0);
        (f64::try_from(total), f64::try_from(r))
    });
    eprintln!(
        "pidm: on one batch, denoising loss {:.3e}, residual term {:.3e} (x weight {weight:e} = {:.3e})",
        denoising?,
        residual.as_ref().map_or(f64::NAN, |r| *r),
        residual.as_ref().map_or(f64::NAN, |r| r * weight)
    );
    train::run(&mut state, out, "pidm", stop_after, |net, step| {
        let idx = batch_indices(seed, step, n, batch).to_device(device);
        Ok(loss(&edm, net, &x_all.index_select(0, &idx), &op, &norm, weight).0)
    })
}
