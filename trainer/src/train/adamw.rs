//! AdamW with global-norm gradient clipping and the EMA of the weights, on a [`TrainState`]; the Adam
//! update alone serves the optimisation of eps too.

use crate::checkpoint::TrainState;
use crate::config::TrainConfig;
use tch::{Kind, Tensor};

/// AdamW with global-norm gradient clipping, then the EMA update.
pub(crate) fn step(state: &mut TrainState, cfg: &TrainConfig, lr: f64, t: u64) {
    let _g = tch::no_grad_guard();
    let mut params: Vec<Tensor> = state.model.named().into_iter().map(|(_, t)| t).collect();
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| {
            let g = p.grad();
            if g.defined() {
                g
            } else {
                p.zeros_like()
            }
        })
        .collect();
    let norm = grads
        .iter()
        .map(|g| f64::try_from(g.square().sum(Kind::Double)).unwrap())
        .sum::<f64>()
        .sqrt();
    let clip = if cfg.clip > 0.0 && norm > cfg.clip {
        cfg.clip / norm
    } else {
        1.0
    };
    for (i, p) in params.iter_mut().enumerate() {
        if cfg.weight_decay > 0.0 {
            let _ = p.g_mul_scalar_(1.0 - lr * cfg.weight_decay);
        }
        adam_update(
            p,
            &(&grads[i] * clip),
            &mut state.m[i],
            &mut state.v[i],
            lr,
            t,
        );
    }
    let decay = cfg.ema.min((1.0 + t as f64) / (10.0 + t as f64));
    for ((_, mut e), (_, p)) in state.ema.named().into_iter().zip(state.model.named()) {
        let _ = e.g_mul_scalar_(decay).g_add_(&(p * (1.0 - decay)));
    }
}

/// One Adam update of `p` in place (bias-corrected, the constants of `piddm::optim::adam`, which the
/// runtime's solve uses too); `t` counts from 1. Shared by training and the optimisation of eps.
pub fn adam_update(p: &mut Tensor, g: &Tensor, m: &mut Tensor, v: &mut Tensor, lr: f64, t: u64) {
    use piddm::optim::adam;
    let _g = tch::no_grad_guard();
    let (b1, b2, eps) = (adam::BETA1, adam::BETA2, adam::EPS);
    let _ = m.g_mul_scalar_(b1).g_add_(&(g * (1.0 - b1)));
    let _ = v.g_mul_scalar_(b2).g_add_(&(g.square() * (1.0 - b2)));
    let (bc1, bc2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
    let upd = (&*m / bc1) / ((&*v / bc2).sqrt() + eps);
    let _ = p.g_sub_(&(upd * lr));
}
