//! The optimisers of the masked solve, on plain slices, shared by the runtime and the trainer's tch
//! solve: the same rule and constants, so the two give the same answer from the same start.
//!
//! Both see the solve as a batch of independent problems (one per sample) whose loss and gradient
//! come from one batched evaluation. A step is one evaluation: `steps` steps cost `steps + 1`
//! evaluations, the first at the start.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// Adam on eps: robust from a random start, slow to settle.
    #[default]
    Adam,
    /// Per-sample L-BFGS (memory [`lbfgs::MEMORY`]) with backtracking: each sample's trial is
    /// accepted on sufficient decrease, else its step is halved at the next evaluation. The first
    /// trial moves each entry by `learning_rate` in root-mean-square.
    Lbfgs,
}

/// Adam's constants and update.
pub mod adam {
    pub const BETA1: f64 = 0.9;
    pub const BETA2: f64 = 0.999;
    pub const EPS: f64 = 1e-8;

    /// One in-place Adam update of `p` with gradient `g` (`t` counts from 1).
    pub fn update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], lr: f64, t: u64) {
        let (bc1, bc2) = (1.0 - BETA1.powi(t as i32), 1.0 - BETA2.powi(t as i32));
        for i in 0..p.len() {
            let gi = g[i] as f64;
            let mi = BETA1 * m[i] as f64 + (1.0 - BETA1) * gi;
            let vi = BETA2 * v[i] as f64 + (1.0 - BETA2) * gi * gi;
            m[i] = mi as f32;
            v[i] = vi as f32;
            p[i] -= (lr * (mi / bc1) / ((vi / bc2).sqrt() + EPS)) as f32;
        }
    }
}

/// What one batched evaluation returns: per-sample loss, the gradient (batch x n) and what else the
/// caller wants kept with the point it belongs to (batch x any, e.g. the answer's fields).
pub struct Eval {
    pub loss: Vec<f64>,
    pub grad: Vec<f32>,
    pub extra: Vec<f32>,
}

/// The per-sample points the minimisation ends on, the `extra` of their evaluations, and the batch's
/// mean loss at the kept points after each evaluation (steps + 1 entries).
pub struct Minimised {
    pub x: Vec<f32>,
    pub extra: Vec<f32>,
    pub history: Vec<f64>,
}

/// Minimises from `x` (batch samples of `n` values each) with `steps` steps of `opt`; `eval`
/// evaluates every sample at once.
pub fn minimise<E>(
    opt: Optimizer,
    mut x: Vec<f32>,
    n: usize,
    steps: usize,
    lr: f64,
    mut eval: impl FnMut(&[f32]) -> Result<Eval, E>,
) -> Result<Minimised, E> {
    let batch = x.len() / n.max(1);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let mut e = eval(&x)?;
    let mut history = Vec::with_capacity(steps + 1);
    history.push(mean(&e.loss));
    match opt {
        Optimizer::Adam => {
            let (mut m, mut v) = (vec![0f32; x.len()], vec![0f32; x.len()]);
            for t in 0..steps {
                adam::update(&mut x, &e.grad, &mut m, &mut v, lr, t as u64 + 1);
                e = eval(&x)?;
                history.push(mean(&e.loss));
            }
            Ok(Minimised {
                x,
                extra: e.extra,
                history,
            })
        }
        Optimizer::Lbfgs => {
            let k = e.extra.len() / batch.max(1);
            let mut extra = e.extra;
            let mut s: Vec<lbfgs::Sample> = (0..batch)
                .map(|b| lbfgs::Sample::new(e.loss[b], &e.grad[b * n..(b + 1) * n]))
                .collect();
            let mut trial = x.clone();
            for _ in 0..steps {
                for (b, sb) in s.iter_mut().enumerate() {
                    let at = b * n..(b + 1) * n;
                    sb.propose(&x[at.clone()], &mut trial[at], lr);
                }
                let e = eval(&trial)?;
                for (b, sb) in s.iter_mut().enumerate() {
                    let at = b * n..(b + 1) * n;
                    if sb.accept(
                        e.loss[b],
                        &e.grad[at.clone()],
                        &x[at.clone()],
                        &trial[at.clone()],
                    ) {
                        x[at.clone()].copy_from_slice(&trial[at]);
                        extra[b * k..(b + 1) * k].copy_from_slice(&e.extra[b * k..(b + 1) * k]);
                    }
                }
                history.push(mean(&s.iter().map(|sb| sb.f).collect::<Vec<_>>()));
            }
            Ok(Minimised { x, extra, history })
        }
    }
}

/// Per-sample L-BFGS state.
pub mod lbfgs {
    /// Curvature pairs kept per sample.
    pub const MEMORY: usize = 5;
    /// Armijo constant of sufficient decrease.
    pub const C1: f64 = 1e-4;

    pub struct Sample {
        pub f: f64,
        g: Vec<f32>,
        /// (s, y, 1 / y.s), oldest first.
        pairs: Vec<(Vec<f32>, Vec<f32>, f64)>,
        dir: Vec<f32>,
        /// Step along `dir` of the pending trial.
        alpha: f64,
        /// g . dir at the current point.
        slope: f64,
        /// The trial failed and is retried with half the step along the same direction.
        retry: bool,
    }

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
    }

    impl Sample {
        pub fn new(f: f64, g: &[f32]) -> Self {
            Sample {
                f,
                g: g.to_vec(),
                pairs: Vec::new(),
                dir: vec![0.0; g.len()],
                alpha: 1.0,
                slope: 0.0,
                retry: false,
            }
        }

        /// The two-loop recursion: dir = -H g.
        fn direction(&mut self, lr: f64) {
            let n = self.g.len();
            let mut q: Vec<f64> = self.g.iter().map(|&v| v as f64).collect();
            let mut a = vec![0.0; self.pairs.len()];
            for (i, (s, y, rho)) in self.pairs.iter().enumerate().rev() {
                a[i] = rho
                    * s.iter()
                        .zip(&q)
                        .map(|(&si, qi)| si as f64 * qi)
                        .sum::<f64>();
                q.iter_mut()
                    .zip(y)
                    .for_each(|(qi, &yi)| *qi -= a[i] * yi as f64);
            }
            let gamma = match self.pairs.last() {
                Some((_, y, rho)) => 1.0 / (rho * dot(y, y)),
                // first step: each entry moves by lr in root-mean-square
                None => {
                    let rms = (dot(&self.g, &self.g) / n.max(1) as f64).sqrt();
                    if rms > 0.0 {
                        lr / rms
                    } else {
                        0.0
                    }
                }
            };
            q.iter_mut().for_each(|qi| *qi *= gamma);
            for (i, (s, y, rho)) in self.pairs.iter().enumerate() {
                let b = rho
                    * y.iter()
                        .zip(&q)
                        .map(|(&yi, qi)| yi as f64 * qi)
                        .sum::<f64>();
                q.iter_mut()
                    .zip(s)
                    .for_each(|(qi, &si)| *qi += (a[i] - b) * si as f64);
            }
            self.dir = q.iter().map(|&v| -v as f32).collect();
            self.slope = dot(&self.g, &self.dir);
            if self.slope >= 0.0 && !self.pairs.is_empty() {
                // not a descent direction (curvature information gone bad): start over from the
                // scaled gradient, which is one unless the gradient is zero (then dir is zero too)
                self.pairs.clear();
                self.direction(lr);
            }
        }

        /// Writes the next trial point from the current point `x`.
        pub fn propose(&mut self, x: &[f32], trial: &mut [f32], lr: f64) {
            if self.retry {
                self.alpha *= 0.5;
            } else {
                self.alpha = 1.0;
                self.direction(lr);
            }
            for ((t, &xi), &d) in trial.iter_mut().zip(x).zip(&self.dir) {
                *t = xi + (self.alpha * d as f64) as f32;
            }
        }

        /// Takes the trial's loss and gradient; true when the trial is accepted.
        pub fn accept(&mut self, f: f64, g: &[f32], x: &[f32], trial: &[f32]) -> bool {
            let ok = f.is_finite() && f <= self.f + C1 * self.alpha * self.slope;
            self.retry = !ok;
            if ok {
                let s: Vec<f32> = trial.iter().zip(x).map(|(t, x)| t - x).collect();
                let y: Vec<f32> = g.iter().zip(&self.g).map(|(a, b)| a - b).collect();
                let sy = dot(&s, &y);
                if sy > 1e-12 {
                    if self.pairs.len() == MEMORY {
                        self.pairs.remove(0);
                    }
                    self.pairs.push((s, y, 1.0 / sy));
                }
                self.f = f;
                self.g.copy_from_slice(g);
            }
            ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-sample quadratics 0.5 sum d_i (x_i - c_i)^2 with curvatures 1 to 10: the minimiser is c.
    fn quadratic(x: &[f32], n: usize) -> Eval {
        let (mut loss, mut grad) = (Vec::new(), vec![0f32; x.len()]);
        for (b, xs) in x.chunks(n).enumerate() {
            let mut f = 0.0;
            for (i, &xi) in xs.iter().enumerate() {
                let d = 1.0 + (i % 10) as f64;
                let c = (b as f64 + 1.0) * ((i as f64) * 0.37).sin();
                f += 0.5 * d * (xi as f64 - c).powi(2);
                grad[b * n + i] = (d * (xi as f64 - c)) as f32;
            }
            loss.push(f);
        }
        Eval {
            loss,
            extra: x.to_vec(),
            grad,
        }
    }

    #[test]
    fn lbfgs_finds_the_minimiser_of_a_quadratic_per_sample() {
        let (n, batch) = (40, 3);
        let r = minimise::<()>(Optimizer::Lbfgs, vec![0f32; n * batch], n, 60, 0.5, |x| {
            Ok(quadratic(x, n))
        })
        .unwrap();
        for (b, xs) in r.x.chunks(n).enumerate() {
            for (i, &xi) in xs.iter().enumerate() {
                let c = (b as f64 + 1.0) * ((i as f64) * 0.37).sin();
                assert!(
                    (xi as f64 - c).abs() < 1e-3,
                    "sample {b} entry {i}: {xi} vs {c}"
                );
            }
        }
        // the kept loss never rises, and the extra is the kept point's
        assert!(
            r.history.windows(2).all(|w| w[1] <= w[0]),
            "{:?}",
            r.history
        );
        assert_eq!(r.extra, r.x);
        // a sample's path does not depend on the others in its batch
        let alone = minimise::<()>(Optimizer::Lbfgs, vec![0f32; n], n, 60, 0.5, |x| {
            Ok(quadratic(x, n))
        })
        .unwrap();
        assert_eq!(alone.x[..], r.x[..n]);
    }

    /// A sample whose gradient is exactly zero (at a minimiser, or where the loss is flat) stays
    /// where it is: its direction is zero, and no descent direction is searched for without end.
    #[test]
    fn lbfgs_at_a_zero_gradient_stays_put() {
        let n = 8;
        let x0: Vec<f32> = (0..2 * n).map(|i| i as f32).collect();
        let r = minimise::<()>(Optimizer::Lbfgs, x0.clone(), n, 3, 0.5, |x| {
            Ok(Eval {
                loss: vec![1.0; 2],
                grad: vec![0.0; x.len()],
                extra: x.to_vec(),
            })
        })
        .unwrap();
        assert_eq!(r.x, x0);
        assert_eq!(r.history, vec![1.0; 4]);
    }

    #[test]
    fn lbfgs_beats_adam_on_an_ill_conditioned_quadratic_with_few_steps() {
        let (n, steps) = (40, 6);
        let run = |opt| {
            minimise::<()>(opt, vec![0f32; n], n, steps, 0.1, |x| Ok(quadratic(x, n)))
                .unwrap()
                .history
        };
        let (a, l) = (run(Optimizer::Adam), run(Optimizer::Lbfgs));
        assert_eq!((a.len(), l.len()), (steps + 1, steps + 1));
        assert_eq!(a[0], l[0]);
        assert!(l[steps] < 0.1 * a[steps], "lbfgs {l:?} adam {a:?}");
    }

    #[test]
    fn adam_first_step_moves_each_entry_by_the_learning_rate() {
        let (mut p, g) = (vec![1.0f32, -2.0, 0.5], vec![3.0f32, -0.01, 1e3]);
        let (mut m, mut v) = (vec![0f32; 3], vec![0f32; 3]);
        adam::update(&mut p, &g, &mut m, &mut v, 0.1, 1);
        for (after, (before, gi)) in p.iter().zip([(1.0f32, 3.0f32), (-2.0, -0.01), (0.5, 1e3)]) {
            let want = before - 0.1 * gi.signum();
            assert!((after - want).abs() < 1e-5, "{after} vs {want}");
        }
    }
}
