//! The training loop every stage runs (teacher, PIDM, students, encoder): warm-up, AdamW with
//! clipping and EMA, atomic checkpoints, exact resume, and stopping cleanly on NaN or Ctrl-C.
//!
//! Exact resume: every source of randomness in step k is seeded from (run seed, k), so a run resumed
//! from the checkpoint of step k repeats steps k+1... bit for bit. The checkpoint holds the weights,
//! the EMA weights, both Adam moments and the step.

use super::adamw;
use crate::checkpoint::TrainState;
use crate::nets::UNet;
use crate::util::{progress, seed::seed_tch};
use anyhow::{bail, Result};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use tch::Tensor;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Called from the Ctrl-C handler: the running loop checkpoints and returns at the end of its step.
pub fn request_stop() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Finished,
    /// Stopped by request (Ctrl-C or `stop_after`) with a checkpoint written.
    Stopped,
}

/// Opens the state to train into `path`: a fresh one, or (with `resume`) the checkpoint there.
/// An existing checkpoint is never overwritten without `resume`.
pub fn open_state(
    path: &Path,
    resume: bool,
    fresh: impl FnOnce() -> Result<TrainState>,
) -> Result<TrainState> {
    match (path.exists(), resume) {
        (true, true) => TrainState::load_resumable(path),
        (true, false) => bail!(
            "{} exists: pass --resume to continue it, or remove it to start over",
            path.display()
        ),
        (false, _) => fresh(),
    }
}

/// Runs optimisation steps until the configured total. `loss_fn(net, step)` returns the scalar loss
/// of one step; all its randomness must come from tch's generator (seeded here per step) or from
/// `util::seed`.
pub fn run(
    state: &mut TrainState,
    path: &Path,
    label: &str,
    stop_after: Option<u64>,
    mut loss_fn: impl FnMut(&UNet, u64) -> Result<Tensor>,
) -> Result<Outcome> {
    let cfg = state.meta.train.clone();
    let total = cfg.steps;
    let bar = progress::bar(total);
    bar.set_position(state.meta.step);
    let log_every = (total / 20).max(1);
    let t0 = std::time::Instant::now();
    let first = state.meta.step;
    let mut last_saved = path.exists().then_some(state.meta.step);
    while state.meta.step < total {
        let step = state.meta.step;
        seed_tch(state.meta.seed, step);
        let lr = cfg.lr * ((step + 1) as f64 / cfg.warmup.max(1) as f64).min(1.0);
        state
            .model
            .vs
            .trainable_variables()
            .iter_mut()
            .for_each(|t| t.zero_grad());
        let loss = loss_fn(&state.model.net, step)?;
        let lv = f64::try_from(&loss)?;
        if !lv.is_finite() {
            let kept = match last_saved {
                Some(s) => format!(
                    "the last good checkpoint (step {s}) is kept at {}",
                    path.display()
                ),
                None => "no checkpoint had been written yet".to_string(),
            };
            bail!("{label}: loss is {lv} at step {step}; stopping without saving ({kept}). Lower the learning rate or check the data.");
        }
        loss.backward();
        adamw::step(state, &cfg, lr, step + 1);
        state.meta.step = step + 1;
        state.meta.last_loss = lv;
        bar.set_position(step + 1);
        bar.set_message(format!("{label} loss {lv:.4e}"));
        if bar.is_hidden() && (step + 1).is_multiple_of(log_every) {
            let per_step = t0.elapsed().as_secs_f64() / (step + 1 - first) as f64;
            eprintln!(
                "{label}: step {}/{total} loss {lv:.4e} ({per_step:.3} s/step)",
                step + 1
            );
        }
        let stop = INTERRUPTED.load(Ordering::SeqCst) || stop_after == Some(step + 1);
        if (step + 1).is_multiple_of(cfg.checkpoint_every.max(1)) || step + 1 == total || stop {
            state.save(path)?;
            last_saved = Some(step + 1);
        }
        if stop {
            bar.abandon();
            eprintln!(
                "{label}: stopped at step {}; checkpoint {} (continue with --resume)",
                step + 1,
                path.display()
            );
            return Ok(Outcome::Stopped);
        }
    }
    bar.finish_and_clear();
    eprintln!(
        "{label}: {total} steps, final loss {:.4e}, {:.1} s this run",
        state.meta.last_loss,
        t0.elapsed().as_secs_f64()
    );
    Ok(Outcome::Finished)
}
