//! The one-step student d(eps) = D(sigma_max * eps; sigma_max) and its physics-informed distillation:
//!   loss = || d(eps) - ODE(eps) ||^2 + lambda_train * mean R(physical(d(eps)))^2
//! on pairs (eps, ODE(eps)) drawn from the EMA teacher's Heun probability-flow ODE.

use crate::config::Preset;
use crate::edm::Edm;
use crate::netops::{NetOps, TchOps};
use crate::teacher::batch_indices;
use crate::train::{self, load_ema, CheckpointMeta, Outcome, Role, StudentInfo, TrainState};
use crate::unet::UNet;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// The student d(eps) = D(sigma_max eps; sigma_max) in normalised units, from standard normal eps
/// [B, C, H, W], on any backend (tch here, ONNX nodes in the export).
pub fn student<B: NetOps>(b: &mut B, edm: &Edm, net: &UNet, eps: &B::V) -> B::V {
    let sigma = Tensor::from_slice(&[edm.sigma_max as f32]).to_device(net.device());
    let sigma = b.constant(&sigma);
    let x = b.affine(eps, edm.sigma_max, 0.0);
    edm.precondition(b, net, &x, &sigma)
}

/// [`student`] on tch tensors.
pub fn one_step(edm: &Edm, net: &UNet, eps: &Tensor) -> Tensor {
    student(&mut TchOps, edm, net, eps)
}

/// A pair set: standard normal eps and the teacher's ODE(eps), normalised units.
pub struct Pairs {
    pub eps: Tensor,
    pub x0: Tensor,
}

const PAIRS_KEY: &str = "piddm.pairs";

/// Draws pair set number `k` (deterministic in the teacher checkpoint's seed and k), or reads it from
/// `cache` when a file there was made from the same teacher and settings.
pub fn pairs(
    teacher: &Path,
    k: u64,
    count: usize,
    heun_steps: usize,
    cache: Option<&Path>,
) -> Result<Pairs> {
    let (net, meta) = load_ema(teacher)?;
    let tag = serde_json::json!({"teacher_step": meta.step, "teacher_seed": meta.seed, "k": k,
        "count": count, "heun_steps": heun_steps, "grid": meta.data.grid.n})
    .to_string();
    if let Some(c) = cache {
        if let Ok((mut t, m)) = crate::st::read(c, PAIRS_KEY, "pair set") {
            if m == tag {
                if let (Some(eps), Some(x0)) = (t.remove("eps"), t.remove("x0")) {
                    return Ok(Pairs { eps, x0 });
                }
            }
        }
    }
    let dev = net.vs.device();
    let (c, n) = (meta.unet.channels, meta.data.grid.n as i64);
    tch::manual_seed((train::step_seed(meta.seed ^ 0x05EE_D0F9_A1B5, k) >> 1) as i64);
    let eps = Tensor::randn([count as i64, c, n, n], (Kind::Float, dev));
    let bar = indicatif::ProgressBar::new(count as u64)
        .with_message(format!("pairs ({} NFE each)", Edm::heun_nfe(heun_steps)));
    let t0 = std::time::Instant::now();
    let mut outs = Vec::new();
    for chunk in eps.split(64, 0) {
        outs.push(meta.edm.heun_sample(&net.net, &chunk, heun_steps));
        bar.inc(chunk.size()[0] as u64);
    }
    bar.finish_and_clear();
    eprintln!(
        "pairs: {count} teacher samples in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let x0 = Tensor::cat(&outs, 0);
    if let Some(c) = cache {
        crate::st::write(
            c,
            &[
                ("eps".into(), eps.shallow_clone()),
                ("x0".into(), x0.shallow_clone()),
            ],
            PAIRS_KEY,
            tag,
        )?;
    }
    Ok(Pairs { eps, x0 })
}

/// Where pair set k of a student written to `out` is cached.
pub fn pairs_cache(out: &Path, k: u64) -> PathBuf {
    out.with_file_name(format!("pairs-{k}.safetensors"))
}

pub fn distill(
    preset: &Preset,
    teacher: &Path,
    lambda_train: f64,
    out: &Path,
    resume: bool,
    stop_after: Option<u64>,
) -> Result<Outcome> {
    if !(lambda_train >= 0.0 && lambda_train.is_finite()) {
        bail!("lambda_train must be finite and >= 0, got {lambda_train}");
    }
    let scfg = &preset.student;
    let mut state = train::open_state(out, resume, || {
        let (tnet, tmeta) =
            load_ema(teacher).with_context(|| format!("loading teacher {}", teacher.display()))?;
        if tmeta.role != Role::Teacher {
            bail!("{} is not a teacher checkpoint", teacher.display());
        }
        let mut st = TrainState::new(CheckpointMeta {
            role: Role::Student,
            step: 0,
            train: scfg.train_config(),
            student: Some(StudentInfo {
                lambda_train,
                heun_steps: preset.sampler.steps,
                teacher_train_steps: tmeta.step,
                pairs: scfg.pairs,
                refresh_every: scfg.refresh_every,
            }),
            last_loss: f64::NAN,
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
    let label = format!("student (lambda_train {:e})", info.lambda_train);
    train::run(&mut state, out, &label, stop_after, |net, step| {
        let k = step.checked_div(info.refresh_every).unwrap_or(0);
        if current.as_ref().map(|c| c.0) != Some(k) {
            current = Some((
                k,
                pairs(
                    teacher,
                    k,
                    info.pairs,
                    info.heun_steps,
                    Some(&pairs_cache(out, k)),
                )?,
            ));
            tch::manual_seed((train::step_seed(seed, step) >> 1) as i64);
        }
        let p = &current.as_ref().unwrap().1;
        let idx = batch_indices(seed, step, info.pairs, batch).to_device(p.eps.device());
        let (eps, x0) = (p.eps.index_select(0, &idx), p.x0.index_select(0, &idx));
        let d = one_step(&edm, net, &eps);
        let mut loss = (&d - x0).square().mean(Kind::Float);
        if info.lambda_train > 0.0 {
            loss += op.mse_per_sample(&norm.to_physical(&d)).mean(Kind::Float) * info.lambda_train;
        }
        Ok(loss)
    })
}
