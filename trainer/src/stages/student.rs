//! The one-step student d(eps) = D(sigma_max * eps; sigma_max) (`diffusion::edm::student`) and its
//! physics-informed distillation:
//!   loss = || d(eps) - ODE(eps) ||^2 + lambda_train * mean R(physical(d(eps)))^2
//!          + lambda_consistency * mean (e / s_u)^2
//! on pairs (eps, ODE(eps)) drawn from the EMA teacher's Heun probability-flow ODE; e ~ u - S(input)
//! is the defect (`physics::defect`: the residual mapped back to the solved field u, S the family's
//! solver), s_u u's normalisation scale, so the last term weighs the coarse scales and the boundary
//! values that R alone leaves loose. With `corrections` > 0, d(eps) is the network's output after
//! that many defect corrections (`physics::correction`), and the targets ODE(eps) are corrected
//! alike: the student learns the teacher's samples made consistent with their own input.

use super::pairs::{pairs, pairs_cache, Pairs};
use crate::checkpoint::{load_role, CheckpointMeta, Role, StudentInfo, TrainState};
use crate::config::Preset;
use crate::diffusion::edm::one_step;
use crate::nets::UNetConfig;
use crate::physics::{Correction, DefectOp};
use crate::train::{self, Outcome};
use crate::util::seed::{batch_indices, seed_tch};
use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{Kind, Tensor};

/// The physics terms' weights of a student's loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Physics {
    pub lambda_train: f64,
    pub lambda_consistency: f64,
    /// Defect corrections of the output (`physics::correction`).
    pub corrections: usize,
}

impl Physics {
    /// Plain distillation.
    pub const NONE: Physics = Physics {
        lambda_train: 0.0,
        lambda_consistency: 0.0,
        corrections: 0,
    };

    /// The preset's weights.
    pub fn of(preset: &Preset) -> Physics {
        Physics {
            lambda_train: preset.student.lambda_train,
            lambda_consistency: preset.student.lambda_consistency,
            corrections: preset.student.corrections,
        }
    }
}

pub fn distill(
    preset: &Preset,
    teacher: &Path,
    physics: Physics,
    out: &Path,
    resume: bool,
    stop_after: Option<u64>,
) -> Result<Outcome> {
    for (name, v) in [
        ("lambda_train", physics.lambda_train),
        ("lambda_consistency", physics.lambda_consistency),
    ] {
        if !(v >= 0.0 && v.is_finite()) {
            bail!("{name} must be finite and >= 0, got {v}");
        }
    }
    let scfg = &preset.student;
    let mut state = train::open_state(out, resume, || {
        let (tnet, tmeta) = load_role(teacher, Role::Teacher)
            .with_context(|| format!("loading teacher {}", teacher.display()))?;
        let mut st = TrainState::new(CheckpointMeta {
            role: Role::Student,
            step: 0,
            train: scfg.train_config(),
            student: Some(StudentInfo {
                lambda_train: physics.lambda_train,
                lambda_consistency: physics.lambda_consistency,
                corrections: physics.corrections,
                recolour: None,
                heun_steps: preset.sampler.steps,
                teacher_train_steps: tmeta.step,
                pairs: scfg.pairs,
                refresh_every: scfg.refresh_every,
            }),
            last_loss: f64::NAN,
            weights_only: false,
            // a preset whose network is periodic makes the student periodic even where its
            // teacher was trained with zero padding: the weights carry over, the edges retrain
            unet: UNetConfig {
                periodic: tmeta.unet.periodic || preset.model.periodic,
                ..tmeta.unet.clone()
            },
            ..tmeta
        });
        // The student starts as the teacher evaluated at sigma_max.
        st.model.copy_from(&tnet)?;
        st.ema.copy_from(&tnet)?;
        Ok(st)
    })?;
    state.meta.train = scfg.train_config();
    let info = state
        .meta
        .student
        .clone()
        .with_context(|| format!("{} is not a student checkpoint", out.display()))?;
    let (edm, seed, batch) = (state.meta.edm, state.meta.seed, state.meta.train.batch);
    let op = state.meta.data.residual_op();
    let norm = state.meta.data.normalisation.clone();
    let mut current: Option<(u64, Pairs)> = None;
    let solved = crate::physics::defect::solved_channel(&op.pde, op.grid);
    let defect = DefectOp::new(&op, norm.scale[solved]);
    let correction = Correction::new(op, &norm, info.corrections)?;
    let correct = |d: Tensor| match &correction {
        Some(c) => c.apply(&d),
        None => d,
    };
    let label = format!(
        "student (lambda_train {:e}, lambda_consistency {:e}, corrections {})",
        info.lambda_train, info.lambda_consistency, info.corrections
    );
    train::run(&mut state, out, &label, stop_after, |net, step| {
        let k = step.checked_div(info.refresh_every).unwrap_or(0);
        if current.as_ref().map(|c| c.0) != Some(k) {
            let mut p = pairs(
                teacher,
                k,
                info.pairs,
                info.heun_steps,
                Some(&pairs_cache(out, k)),
            )?;
            p.x0 = tch::no_grad(|| correct(p.x0));
            current = Some((k, p));
            seed_tch(seed, step);
        }
        let p = &current.as_ref().unwrap().1;
        let idx = batch_indices(seed, step, info.pairs, batch).to_device(p.eps.device());
        let (eps, x0) = (p.eps.index_select(0, &idx), p.x0.index_select(0, &idx));
        let d = correct(one_step(&edm, net, &eps));
        let mut loss = (&d - x0).square().mean(Kind::Float);
        if info.lambda_train > 0.0 || info.lambda_consistency > 0.0 {
            let x = norm.to_physical(&d);
            loss += op.mse_per_sample(&x).mean(Kind::Float) * info.lambda_train;
            if info.lambda_consistency > 0.0 {
                loss += defect.mse_per_sample(&x).mean(Kind::Float) * info.lambda_consistency;
            }
        }
        Ok(loss)
    })
}

/// Writes `student` to `out` with `corrections` defect corrections of its output, weights and
/// optimiser state unchanged.
pub fn with_corrections(student: &Path, corrections: usize, out: &Path) -> Result<()> {
    let mut st = TrainState::load(student)?;
    st.meta.expect_role(Role::Student, student)?;
    let info = st
        .meta
        .student
        .as_mut()
        .with_context(|| format!("{} has no student information", student.display()))?;
    let was = info.corrections;
    info.corrections = corrections;
    let meta = &st.meta;
    Correction::new(
        meta.data.residual_op(),
        &meta.data.normalisation,
        corrections,
    )?;
    st.save(out)?;
    eprintln!(
        "wrote {} ({} -> {corrections} defect corrections)",
        out.display(),
        was
    );
    Ok(())
}

/// Writes `student` to `out` with gains per Fourier mode on its samples (`physics::recolour`):
/// the data's mean power per mode of the first level (of `data`, the training set) over that of
/// `samples` of the student's own samples (drawn without gains, seed 20 251 204). Weights,
/// corrections and optimiser state unchanged, so an encoder's tie to the weights holds; only
/// generation changes. For a family whose levels are time levels of a periodic field.
pub fn recolour(student: &Path, data: &Path, samples: usize, out: &Path) -> Result<()> {
    use crate::physics::recolour::{gains, Along};
    use crate::stages::solve::Student;
    let mut st = TrainState::load(student)?;
    st.meta.expect_role(Role::Student, student)?;
    let Some(along) = Along::of(&st.meta.data.pde, st.meta.data.grid) else {
        bail!(
            "{}: recolouring needs levels that are time levels of a periodic field; {} has none",
            student.display(),
            st.meta.data.pde.family().name()
        );
    };
    if samples < 64 {
        bail!("--samples {samples}: at least 64 samples to estimate a spectrum");
    }
    let set = crate::data::Dataset::load(data)?;
    if set.meta.pde != st.meta.data.pde || set.meta.grid != st.meta.data.grid {
        bail!("{} is not the student's family and grid", data.display());
    }
    let want = along.power(&set.fields)?;
    let info = st
        .meta
        .student
        .as_mut()
        .with_context(|| format!("{} has no student information", student.display()))?;
    info.recolour = None;
    let (c, n) = (st.meta.unet.channels, st.meta.data.grid.n as i64);
    let have = {
        let _g = tch::no_grad_guard();
        let s = Student::of(&st.ema, &st.meta);
        tch::manual_seed(20_251_204);
        let parts: Vec<Tensor> = (0..samples.div_ceil(64))
            .map(|i| {
                let b = (samples - 64 * i).min(64) as i64;
                s.generate(&Tensor::randn(
                    [b, c, n, n],
                    (Kind::Float, tch::Device::Cpu),
                ))
            })
            .collect();
        along.power(&Tensor::cat(&parts, 0))?
    };
    let g = gains(&want, &have)?;
    let n = st.meta.data.grid.n;
    // the modes along x (a plane's ky = 0 row), up to n / 2
    eprintln!(
        "recolour: power per mode along x of the first level, data / samples / gain:\n{}",
        (0..=n / 2)
            .map(|k| format!(
                "  mode {k}: {:.4e} / {:.4e} / {:.4}",
                want[k], have[k], g[k]
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    st.meta.student.as_mut().unwrap().recolour = Some(g);
    st.save(out)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
