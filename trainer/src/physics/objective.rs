//! The objective of every conditional answer (the solve, the refine graph, DiffusionPDE's guidance,
//! the amortised encoder's training), once over [`FieldOps`]:
//!   x_mix = x' * M + x * (1 - M)
//!   L = mean over C, H, W of (M * (d - x'_n))^2   (normalised units)
//!     + lambda_infer * mean where the PDE holds of R(x_mix)^2   (physical units)
//! per sample, for a clean normalised estimate d, observations x' (physical) and mask M. A student
//! with defect corrections answers with x_mix whose solved channel is corrected against the
//! observed input (`stages::solve::Student::emit_answer`); the terms take that answer as given.

use super::residual::ResidualOp;
use crate::data::Normalisation;
use crate::pde::ops::FieldOps;

/// The answer that keeps the observations: `observed` (physical) where `mask` is 1, `x` (physical)
/// elsewhere.
pub fn emit_x_mix<O: FieldOps>(o: &mut O, x: &O::V, observed: &O::V, mask: &O::V) -> O::V {
    let keep = o.affine(mask, -1.0, 1.0);
    let seen = o.mul(observed, mask);
    let free = o.mul(x, &keep);
    o.add(&seen, &free)
}

/// The two terms of the loss, each per sample [B], and x_mix (physical): what the solve weighs
/// with (1, lambda_infer) and DiffusionPDE's guidance with (zeta_obs, zeta_pde).
pub struct Terms<V> {
    /// Mean over C, H, W of (M * (d - x'))^2, normalised units.
    pub misfit: V,
    /// Mean of R(x_mix)^2 where the PDE holds, physical units.
    pub residual: V,
    pub x_mix: V,
}

/// [`Terms`] of a normalised clean estimate `d` against observations (physical) under `mask`.
pub fn emit_terms<O: FieldOps>(
    o: &mut O,
    op: &ResidualOp,
    norm: &Normalisation,
    d: &O::V,
    observed: &O::V,
    mask: &O::V,
) -> Terms<O::V> {
    let phys = norm.emit_physical(o, d);
    let x_mix = emit_x_mix(o, &phys, observed, mask);
    emit_terms_of(o, op, norm, d, observed, mask, x_mix)
}

/// [`Terms`] with the answer `x_mix` (physical) made by the caller from `d`: a corrected
/// student's settles its solved channel against the observed input
/// (`stages::solve::Student::emit_answer`).
pub fn emit_terms_of<O: FieldOps>(
    o: &mut O,
    op: &ResidualOp,
    norm: &Normalisation,
    d: &O::V,
    observed: &O::V,
    mask: &O::V,
    x_mix: O::V,
) -> Terms<O::V> {
    let obs_n = norm.emit_normalised(o, observed);
    let diff = o.sub(d, &obs_n);
    let md = o.mul(mask, &diff);
    let md2 = o.mul(&md, &md);
    let misfit = o.mean_chw(&md2);
    let residual = op.emit_mse(o, &x_mix);
    Terms {
        misfit,
        residual,
        x_mix,
    }
}

/// The loss L [B] = misfit + lambda_infer * residual and x_mix, from the terms of the student's
/// normalised output: what the solve minimises and the exported refine graph differentiates.
pub fn emit_loss<O: FieldOps>(o: &mut O, t: Terms<O::V>, lambda: &O::V) -> (O::V, O::V) {
    let weighted = o.mul(lambda, &t.residual);
    (o.add(&t.misfit, &weighted), t.x_mix)
}
