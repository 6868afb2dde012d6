//! Defect correction of the student's output: u <- u - D R(x), repeated, D the family's
//! approximate inverse of its operator (`pde::Defect::Dirichlet`, the sine-basis inverse of
//! Lap + shift) and the solved field's Dirichlet ring set to its value. For a family whose rows
//! or channels are Crank-Nicolson time levels (`pde::Stepping`: Burgers, Navier-Stokes) the
//! correction is the march itself: each level re-solved from the previous one by `iterations`
//! fixed-point iterations u_k <- (I / dt + L / 2)^-1 (u_{k-1} / dt - F(u_{k-1}) / 2 - N(u_k) / 2),
//! started from the field's own level, so that the later levels follow from level 0 as the data
//! solver's do. Written once
//! over [`NetOps`], so training, evaluation and the exported graphs (forward and reverse pass) run
//! the same operator.
//!
//! Why: a generated u is a few percent away from the solve of its own input, and the error sits
//! in the lowest modes (`trainer/results/consistency.md`): the non-local part of the solution
//! operator that a U-Net of 3 x 3 convolutions represents poorly. D is that non-local part,
//! exactly for Poisson and Helmholtz (one iteration gives u = S(f) to rounding), and for Darcy
//! with the phases' mean permeability (each iteration contracts the error by at most
//! (a_hi - a_lo) / (a_hi + a_lo), 0.6 for a in {3, 12}).

use super::defect::{dirichlet_basis, solved_channel};
use super::objective::emit_x_mix;
use super::ResidualOp;
use crate::data::Normalisation;
use crate::nets::NetOps;
use crate::pde::ops::Tch;
use crate::pde::{Defect, Stepping};
use tch::Tensor;

/// What a correction applies.
enum Kind {
    /// `keep` [1, 1, n, n]: 0 on the solved channel's Dirichlet ring, 1 inside; the orthonormal
    /// sine basis of the interior [1, m, m] (symmetric), and scale / (mu_i + mu_j + shift)
    /// [1, m, m].
    Dirichlet {
        keep: Tensor,
        basis: Tensor,
        inverse: Tensor,
    },
    /// The rows re-marched from row 0.
    March(Stepping),
}

/// `iterations` defect corrections of the solved channel of normalised fields.
pub struct Correction {
    op: ResidualOp,
    norm: Normalisation,
    iterations: usize,
    solved: i64,
    /// The channel R holds pointwise as its source term (`Family::source_channel`), if any.
    source: Option<i64>,
    channels: i64,
    kind: Kind,
}

impl Correction {
    /// None when `iterations` is 0; an error naming the family when it has neither a Dirichlet
    /// inverse nor a march.
    pub fn new(
        op: ResidualOp,
        norm: &Normalisation,
        iterations: usize,
    ) -> anyhow::Result<Option<Self>> {
        if iterations == 0 {
            return Ok(None);
        }
        let kind = match (op.pde.family().defect(op.grid), op.pde.stepping(op.grid)) {
            (Defect::Dirichlet { shift, scale }, _) => {
                let (n, m) = (op.grid.n as i64, op.grid.n as i64 - 2);
                let (v, inv) = dirichlet_basis(op.grid, shift, scale);
                let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
                let keep: Vec<f32> = (0..n * n)
                    .map(|p| {
                        let (i, j) = (p / n, p % n);
                        (i > 0 && j > 0 && i < n - 1 && j < n - 1) as u8 as f32
                    })
                    .collect();
                Kind::Dirichlet {
                    keep: Tensor::from_slice(&keep).reshape([1, 1, n, n]),
                    basis: Tensor::from_slice(&f32s(&v)).reshape([1, m, m]),
                    inverse: Tensor::from_slice(&f32s(&inv)).reshape([1, m, m]),
                }
            }
            (_, Some(step)) => Kind::March(step),
            (d, None) => anyhow::bail!(
                "{} has no defect correction (its operator's inverse is {d:?}, not a Dirichlet \
                 sine-basis inverse, and its rows are not marched); train it with corrections = 0",
                op.pde.name()
            ),
        };
        Ok(Some(Correction {
            op,
            norm: norm.clone(),
            iterations,
            solved: solved_channel(&op.pde, op.grid) as i64,
            source: op.pde.family().source_channel().map(|c| c as i64),
            channels: op.pde.channels().len() as i64,
            kind,
        }))
    }

    pub fn iterations(&self) -> usize {
        self.iterations
    }

    /// The corrected normalised fields `d` [B, C, n, n]; the other channels pass unchanged.
    pub fn emit<B: NetOps>(&self, b: &mut B, d: &B::V) -> B::V {
        let s = self.solved as usize;
        let x = self.norm.emit_physical(b, d);
        if self.marches_channels() {
            let m = self.emit_physical(b, &x);
            return self.norm.emit_normalised(b, &m);
        }
        let u = self.corrected(b, &x);
        let u_n = b.affine(
            &u,
            1.0 / self.norm.scale[s],
            -self.norm.mean[s] / self.norm.scale[s],
        );
        self.with_solved(b, d, &u_n)
    }

    /// [`Correction::emit`] on physical fields `x`: the solved channel corrected against the
    /// other channels as they are (an answer's observed input, for one).
    pub fn emit_physical<B: NetOps>(&self, b: &mut B, x: &B::V) -> B::V {
        if let (Kind::March(step), true) = (&self.kind, self.marches_channels()) {
            return self.marched(b, x, step);
        }
        let u = self.corrected(b, x);
        self.with_solved(b, x, &u)
    }

    /// Whether the correction marches the channels (every channel a level), not one channel.
    fn marches_channels(&self) -> bool {
        matches!(&self.kind, Kind::March(step) if step.axis == 1)
    }

    /// An answer `x_mix` (physical: the observations where `mask` is 1) settled against what is
    /// observed through the PDE, the observations kept: its solved channel corrected against its
    /// input (a forward problem's answer is then the correction of the student's u against the
    /// given input: the solve of it for Poisson and Helmholtz), and, where the family has a
    /// pointwise source term, the unobserved source set to R's balance wherever u is observed on
    /// R's whole stencil (an inverse problem's source is then determined where the PDE holds; a
    /// sparse observation seldom observes a whole stencil, and is left as it was).
    pub fn settle<B: NetOps>(&self, b: &mut B, x_mix: &B::V, observed: &B::V, mask: &B::V) -> B::V {
        let x = self.emit_physical(b, x_mix);
        let x = emit_x_mix(b, &x, observed, mask);
        let Some(src) = self.source else {
            return x;
        };
        let m_u = b.channel(mask, self.solved);
        let mut w = b.dup(&m_u);
        for (axis, by) in [(2, 1), (2, -1), (3, 1), (3, -1)] {
            let s = b.shift(&m_u, axis, by, false);
            w = b.mul(&w, &s);
        }
        let m_f = b.channel(mask, src);
        let free = b.affine(&m_f, -1.0, 1.0);
        let w = b.mul(&w, &free);
        let r = self.op.emit(b, &x);
        let f = b.channel(&x, src);
        let wr = b.mul(&w, &r);
        let f = b.add(&f, &wr);
        self.with_channel(b, &x, src, &f)
    }

    /// The corrected solved channel [B, 1, n, n] (physical) of physical fields `x`.
    fn corrected<B: NetOps>(&self, b: &mut B, x: &B::V) -> B::V {
        let (keep, basis, inverse) = match &self.kind {
            Kind::Dirichlet {
                keep,
                basis,
                inverse,
            } => (keep, basis, inverse),
            Kind::March(step) => return self.marched(b, x, step),
        };
        let keep = b.constant(keep);
        let mut u = b.channel(x, self.solved);
        for _ in 0..self.iterations {
            let inner = b.mul(&u, &keep);
            let xi = self.with_solved(b, x, &inner);
            let r = self.op.emit(b, &xi);
            let e = self.inverse(b, basis, inverse, &r);
            u = b.sub(&inner, &e);
        }
        u
    }

    /// The levels re-marched from level 0 ([`Kind::March`]): the solved channel's rows (times
    /// along H, as Burgers), or every channel (the levels as channels, as Navier-Stokes).
    fn marched<B: NetOps>(&self, b: &mut B, x: &B::V, step: &Stepping) -> B::V {
        let (pde, grid) = (self.op.pde, self.op.grid);
        let n = grid.n as i64;
        let (levels, count) = if step.axis == 2 {
            // [B, 1, rows, n] -> [B, rows, 1, n]: a row is then a channel
            let u = b.channel(x, self.solved);
            (b.reshape(&u, &[-1, n, 1, n]), n)
        } else {
            (b.dup(x), self.channels)
        };
        let mut out = vec![b.channels(&levels, 0, 1)];
        for k in 1..count {
            let p = out.last().expect("level 0");
            let np = pde.emit_nonlinear(grid, b, p);
            let lp = pde.emit_linear(grid, b, p);
            let fp = b.add(&np, &lp);
            let pt = b.affine(p, 1.0 / step.dt, 0.0);
            let half = b.affine(&fp, -0.5, 0.0);
            let rhs = b.add(&pt, &half);
            let mut g = b.channels(&levels, k, 1);
            for _ in 0..self.iterations {
                let ng = pde.emit_nonlinear(grid, b, &g);
                let half = b.affine(&ng, -0.5, 0.0);
                let r = b.add(&rhs, &half);
                g = pde.emit_implicit(grid, b, &r);
            }
            out.push(g);
        }
        let parts: Vec<&B::V> = out.iter().collect();
        let cat = b.concat(&parts);
        if step.axis == 2 {
            b.reshape(&cat, &[-1, 1, n, n])
        } else {
            cat
        }
    }

    /// [`Correction::emit`] on tch tensors.
    pub fn apply(&self, d: &Tensor) -> Tensor {
        self.emit(&mut Tch, d)
    }

    /// `x` with its solved channel replaced by `u` [B, 1, n, n].
    fn with_solved<B: NetOps>(&self, b: &mut B, x: &B::V, u: &B::V) -> B::V {
        self.with_channel(b, x, self.solved, u)
    }

    /// `x` with channel `s` replaced by `u` [B, 1, n, n].
    fn with_channel<B: NetOps>(&self, b: &mut B, x: &B::V, s: i64, u: &B::V) -> B::V {
        let c = self.channels;
        let before = (s > 0).then(|| b.channels(x, 0, s));
        let after = (s + 1 < c).then(|| b.channels(x, s + 1, c - s - 1));
        let parts: Vec<&B::V> = before.iter().chain([u]).chain(after.iter()).collect();
        b.concat(&parts)
    }

    /// D r of residuals r [B, 1, n, n]: V ((V r V) * inverse) V on the interior, 0 on the ring.
    fn inverse<B: NetOps>(&self, b: &mut B, basis: &Tensor, inverse: &Tensor, r: &B::V) -> B::V {
        let m = self.op.grid.n as i64 - 2;
        let v = b.constant(basis);
        let inv = b.constant(inverse);
        let ri = b.crop1(r);
        let r3 = b.reshape(&ri, &[-1, m, m]);
        let t = b.matmul(&v, &r3);
        let t = b.matmul(&t, &v);
        let t = b.mul(&t, &inv);
        let t = b.matmul(&v, &t);
        let t = b.matmul(&t, &v);
        let t4 = b.reshape(&t, &[-1, 1, m, m]);
        b.pad1(&t4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pde::{Grid, Pde};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A perturbed sample of `pde` (u off by a rough field, its ring too) in normalised units, and
    /// the solve of its own input (S, the family's sparse solver: a second implementation).
    fn perturbed(pde: Pde, grid: Grid, norm: &Normalisation) -> (Tensor, Vec<f64>) {
        let fam = pde.family();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut x = fam.sampler(grid).unwrap().sample(&mut rng).unwrap().fields;
        let solved = fam.resolver(grid).unwrap().resolve(&x).unwrap();
        let scale = x[grid.len()..].iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for p in 0..grid.len() {
            x[grid.len() + p] += 0.2 * scale * (rng.random::<f64>() - 0.5);
        }
        let n = grid.n as i64;
        let t = Tensor::from_slice(&x)
            .reshape([1, 2, n, n])
            .to_kind(tch::Kind::Float);
        (norm.to_normalised(&t), solved)
    }

    fn rel_error(corr: &Correction, d: &Tensor, norm: &Normalisation, want: &[f64]) -> f64 {
        let x = norm.to_physical(&corr.apply(d));
        let got = Vec::<f64>::try_from(x.to_kind(tch::Kind::Double).reshape([-1])).unwrap();
        let len = want.len() / 2;
        let (mut num, mut den) = (0.0, 0.0);
        for p in len..2 * len {
            num += (got[p] - want[p]).powi(2);
            den += want[p].powi(2);
        }
        (num / den).sqrt()
    }

    /// Poisson and Helmholtz: one iteration gives the solve of the field's own f (float32
    /// rounding), whatever u was; f passes bit for bit.
    #[test]
    fn one_iteration_solves_the_linear_families() {
        let grid = Grid::new(24).unwrap();
        let norm = Normalisation {
            mean: vec![0.1, -0.2],
            scale: vec![2.0, 0.05],
        };
        for name in ["poisson", "helmholtz"] {
            let pde = Pde::parse(name).unwrap();
            let (d, want) = perturbed(pde, grid, &norm);
            let op = ResidualOp { pde, grid };
            let corr = Correction::new(op, &norm, 1).unwrap().unwrap();
            let err = rel_error(&corr, &d, &norm, &want);
            assert!(err < 1e-5, "{name}: {err}");
            let out = corr.apply(&d);
            assert!(
                out.narrow(1, 0, 1).equal(&d.narrow(1, 0, 1)),
                "{name}: f changed"
            );
        }
    }

    /// Darcy: the error to the solve of the sample's own a falls by at least the predicted
    /// contraction (a_hi - a_lo) / (a_hi + a_lo) per iteration (up to a constant of the norms).
    #[test]
    fn darcy_iterations_contract() {
        let grid = Grid::new(24).unwrap();
        let norm = Normalisation {
            mean: vec![7.5, 0.02],
            scale: vec![9.0, 0.02],
        };
        let pde = Pde::parse("darcy").unwrap();
        let (d, want) = perturbed(pde, grid, &norm);
        let op = ResidualOp { pde, grid };
        let errs: Vec<f64> = (1..=8)
            .map(|k| {
                let c = Correction::new(op, &norm, k).unwrap().unwrap();
                rel_error(&c, &d, &norm, &want)
            })
            .collect();
        assert!(errs.windows(2).all(|w| w[1] < w[0]), "{errs:?}");
        assert!(errs[7] < 3.0 * errs[0] * 0.6f64.powi(7), "{errs:?}");
        assert!(errs[7] < 1e-2, "{errs:?}");
    }

    /// Relative L2 errors against the data solver's solve of a sample of `pde` whose later levels
    /// (after its first `level0` values) were perturbed by `noise`, corrected with each of
    /// `iterations`; level 0 must pass unchanged.
    fn march_errors(
        pde: Pde,
        grid: Grid,
        seed: u64,
        noise: f64,
        level0: usize,
        iterations: &[usize],
    ) -> Vec<f64> {
        let fam = pde.family();
        let c = pde.channels().len();
        let norm = Normalisation {
            mean: vec![0.01; c],
            scale: vec![0.3; c],
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = fam.sampler(grid).unwrap().sample(&mut rng).unwrap().fields;
        let want = fam.resolver(grid).unwrap().resolve(&x).unwrap();
        for v in x.iter_mut().skip(level0) {
            *v += noise * (rng.random::<f64>() - 0.5);
        }
        let n = grid.n as i64;
        let d = norm.to_normalised(&Tensor::from_slice(&x).reshape([1, c as i64, n, n]));
        let op = ResidualOp { pde, grid };
        iterations
            .iter()
            .map(|&k| {
                let corr = Correction::new(op, &norm, k).unwrap().unwrap();
                let got =
                    Vec::<f64>::try_from(norm.to_physical(&corr.apply(&d)).reshape([-1])).unwrap();
                for (g, w) in got.iter().zip(&x).take(level0) {
                    assert!((g - w).abs() < 1e-12, "level 0 changed");
                }
                let num: f64 = got.iter().zip(&want).map(|(g, w)| (g - w).powi(2)).sum();
                let den: f64 = want.iter().map(|w| w * w).sum();
                (num / den).sqrt()
            })
            .collect()
    }

    /// Burgers: the march reproduces the data solver's rows from the sample's own row 0 (Newton
    /// to tolerance: a second implementation), whatever the later rows were, and its error falls
    /// with the iterations; zero iterations is none.
    #[test]
    fn burgers_march_is_the_solve_and_zero_iterations() {
        let grid = Grid::new(16).unwrap();
        let pde = Pde::parse("burgers").unwrap();
        let errs = march_errors(pde, grid, 3, 0.3, grid.n, &[1, 3, 12]);
        assert!(errs.windows(2).all(|w| w[1] < w[0]), "{errs:?}");
        assert!(errs[2] < 1e-9, "{errs:?}");
        let norm = Normalisation {
            mean: vec![0.1],
            scale: vec![0.7],
        };
        let op = ResidualOp { pde, grid };
        assert!(Correction::new(op, &norm, 0).unwrap().is_none());
    }

    /// Navier-Stokes: the levels (its channels) re-marched from level 0 are the data solver's
    /// (fixed-point iterations to 1e-12 with rustfft: a second implementation), whatever the later
    /// levels were; level 0 passes unchanged.
    #[test]
    fn navier_stokes_march_is_the_solve() {
        let grid = Grid::new(16).unwrap();
        let pde = Pde::parse("navier_stokes").unwrap();
        let errs = march_errors(pde, grid, 5, 0.1, grid.len(), &[1, 4, 12]);
        assert!(errs.windows(2).all(|w| w[1] < w[0]), "{errs:?}");
        assert!(errs[2] < 1e-9, "{errs:?}");
    }
}
