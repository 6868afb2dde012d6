//! The fit of an answer's determined scales ([`Determined`]): per sample, the coefficients c of
//! the card's modes added to the answer's input that minimise
//! |y(c) - observed|^2 / noise^2 over the observed points + sum_j (a_j / std_j)^2, y(c) the
//! resolve graph's fields and a_j the input's own coefficient of mode j after the fit (the
//! data's zero-mean prior on it: where the observation does not determine a mode, the fit takes
//! it towards zero, the least-error guess, not towards the network's draw). Levenberg-Marquardt
//! with a forward-difference Jacobian: each iteration evaluates y at the trial c and at
//! c + h_j e_j in one batched call, accepts the trial where the objective fell, and takes the next
//! step from the best point so far: the result is never worse by the objective than the resolve
//! of the answer's own input, the fit's first evaluation.

use crate::card::Determined;
use crate::error::{err, Result};
use crate::limits::zeros;

/// Values of one batched resolve call (samples x (modes + 1) x field) the fit groups samples up to;
/// one sample's (p + 1) fields where they are more (the card bounds those by `MAX_VALUES`).
const GROUP_VALUES: usize = 1 << 22;
/// The finite-difference step of a coefficient, in its prior std.
const STEP: f64 = 0.1;

/// Whether a sample's `mask` asks for the fit: a point of the support unobserved, and something
/// observed.
pub(crate) fn wanted(d: &Determined, mask: &[f32], ny: usize, nx: usize) -> bool {
    let open = mask[d.support(ny, nx)].contains(&0.0);
    open && mask.iter().any(|&m| m != 0.0)
}

/// A sample's best c so far, its objective, observed misfit r, Jacobian [seen][modes] and the
/// resolved fields.
struct Best {
    c: Vec<f64>,
    objective: f64,
    r: Vec<f64>,
    jac: Vec<f64>,
    fields: Vec<f32>,
}

/// One sample's fit.
struct Sample {
    at: usize,
    /// The answer's own coefficients: the input's are these plus c.
    own: Vec<f64>,
    seen: Vec<usize>,
    lambda: f64,
    best: Option<Best>,
    trial: Vec<f64>,
    done: bool,
}

/// Fits the samples of `answers` (batch x field, physical) that [`wanted`] picks, in place; the
/// observations are kept where `mask` is 1. `resolve(fields, n)` runs the resolve graph on `n`
/// samples. Returns how many samples were fitted.
pub(crate) fn fit(
    d: &Determined,
    shape: [usize; 3],
    answers: &mut [f32],
    observed: &[f32],
    mask: &[f32],
    mut resolve: impl FnMut(&[f32], usize) -> Result<Vec<f32>>,
) -> Result<usize> {
    let [c, ny, nx] = shape;
    let field = c * ny * nx;
    let p = d.modes.len();
    // the modes where they are not zero: on the support, a run of each sample's entries
    let on = d.support(ny, nx);
    let mut basis = Vec::with_capacity(p);
    for j in 0..p {
        let mut b = zeros::<f64>(on.len(), "a determined mode")?;
        b.copy_from_slice(&d.mode_on_support(j, nx));
        basis.push(b);
    }
    let todo: Vec<usize> = (0..answers.len() / field)
        .filter(|&b| wanted(d, &mask[b * field..(b + 1) * field], ny, nx))
        .collect();
    let group = (GROUP_VALUES / ((p + 1) * field)).max(1);
    for samples in todo.chunks(group) {
        let mut s: Vec<Sample> = samples
            .iter()
            .map(|&b| Sample {
                at: b * field,
                seen: (0..field).filter(|&i| mask[b * field + i] != 0.0).collect(),
                own: coefficients(&basis, &answers[b * field + on.start..b * field + on.end]),
                lambda: 1e-3,
                best: None,
                trial: vec![0.0; p],
                done: false,
            })
            .collect();
        for it in 0..=d.iterations {
            let live: Vec<usize> = (0..s.len()).filter(|&i| !s[i].done).collect();
            if live.is_empty() {
                break;
            }
            let mut fields = zeros::<f32>(live.len() * (p + 1) * field, "the fit's fields")?;
            for (n, &i) in live.iter().enumerate() {
                let x = &answers[s[i].at..s[i].at + field];
                // the trial's support in f64, each field of the sample its copy with one change
                let mut u: Vec<f64> = x[on.clone()].iter().map(|&v| f64::from(v)).collect();
                for (b, c) in basis.iter().zip(&s[i].trial) {
                    u.iter_mut().zip(b).for_each(|(v, b)| *v += c * b);
                }
                for k in 0..=p {
                    let f = &mut fields[(n * (p + 1) + k) * field..(n * (p + 1) + k + 1) * field];
                    f.copy_from_slice(x);
                    // field 0 the trial itself, field k its step along mode k - 1
                    let step = |q: usize| match k {
                        0 => 0.0,
                        _ => STEP * d.modes[k - 1].std * basis[k - 1][q],
                    };
                    for (q, v) in u.iter().enumerate() {
                        f[on.start + q] = (v + step(q)) as f32;
                    }
                }
            }
            let y = resolve(&fields, live.len() * (p + 1))?;
            for (n, &i) in live.iter().enumerate() {
                let sm = &mut s[i];
                let ys = &y[n * (p + 1) * field..(n + 1) * (p + 1) * field];
                let y0 = &ys[..field];
                let r: Vec<f64> = sm
                    .seen
                    .iter()
                    .map(|&q| f64::from(y0[q]) - f64::from(observed[sm.at + q]))
                    .collect();
                let prior: f64 = (0..p)
                    .map(|j| ((sm.trial[j] + sm.own[j]) / d.modes[j].std).powi(2))
                    .sum();
                // a field not finite anywhere, observed or not, is no answer
                let obj = if y0.iter().all(|v| v.is_finite()) {
                    r.iter().map(|v| v * v).sum::<f64>() / (d.noise * d.noise) + prior
                } else {
                    f64::NAN
                };
                if it == 0 && !obj.is_finite() {
                    return Err(err!(
                        PIDDM_ERR_NONFINITE,
                        "the fit of the determined modes: the resolve graph's fields of an \
                         answer (or its prior term) are not finite"
                    ));
                }
                // NaN never improves
                let better = sm.best.as_ref().is_none_or(|b| obj < b.objective);
                if !better {
                    sm.lambda *= 10.0;
                } else {
                    if it > 0 {
                        sm.lambda /= 3.0;
                    }
                    let mut jac = zeros::<f64>(sm.seen.len() * p, "the fit's Jacobian")?;
                    for j in 0..p {
                        let yj = &ys[(j + 1) * field..(j + 2) * field];
                        let h = STEP * d.modes[j].std;
                        for (k, &q) in sm.seen.iter().enumerate() {
                            jac[k * p + j] = (f64::from(yj[q]) - f64::from(y0[q])) / h;
                        }
                    }
                    sm.best = Some(Best {
                        c: sm.trial.clone(),
                        objective: obj,
                        r,
                        jac,
                        fields: y0.to_vec(),
                    });
                }
                let best = sm.best.as_ref().expect("the first evaluation is kept");
                let a: Vec<f64> = best.c.iter().zip(&sm.own).map(|(c, o)| c + o).collect();
                match step(d, &a, &best.r, &best.jac, sm.lambda) {
                    Some(dc) => sm.trial = best.c.iter().zip(&dc).map(|(c, d)| c + d).collect(),
                    None => sm.done = true,
                }
            }
        }
        for sm in s {
            let y = sm.best.expect("every fitted sample was evaluated").fields;
            let out = &mut answers[sm.at..sm.at + field];
            for (q, (o, v)) in out.iter_mut().zip(y).enumerate() {
                *o = if mask[sm.at + q] == 0.0 {
                    v
                } else {
                    observed[sm.at + q]
                };
            }
        }
    }
    Ok(todo.len())
}

/// The answer's own coefficients on the (orthogonal) modes.
fn coefficients(basis: &[Vec<f64>], x: &[f32]) -> Vec<f64> {
    basis
        .iter()
        .map(|b| {
            let (num, den) = b.iter().zip(x).fold((0.0, 0.0), |(n, d), (&bj, &v)| {
                (n + bj * f64::from(v), d + bj * bj)
            });
            num / den
        })
        .collect()
}

/// The Levenberg-Marquardt step from the input's coefficients `a`: (A + lambda diag(A)) dc = -g,
/// A = J'J / noise^2 + diag(1 / std^2), g = J'r / noise^2 + a / std^2. None where it is not
/// finite.
fn step(d: &Determined, a: &[f64], r: &[f64], jac: &[f64], lambda: f64) -> Option<Vec<f64>> {
    let p = a.len();
    let w = 1.0 / (d.noise * d.noise);
    let mut m = vec![0.0; p * p];
    let mut g = vec![0.0; p];
    for (k, rk) in r.iter().enumerate() {
        let row = &jac[k * p..(k + 1) * p];
        for i in 0..p {
            g[i] += w * row[i] * rk;
            for j in 0..=i {
                m[i * p + j] += w * row[i] * row[j];
            }
        }
    }
    for i in 0..p {
        let prior = 1.0 / (d.modes[i].std * d.modes[i].std);
        m[i * p + i] = (m[i * p + i] + prior) * (1.0 + lambda);
        g[i] = -(g[i] + a[i] * prior);
    }
    cholesky_solve(&mut m, &mut g, p).then_some(g)
}

/// Solves a x = b in place for a symmetric positive definite `a` (n x n, its lower triangle
/// read); false where it is not (numerically) positive definite.
fn cholesky_solve(a: &mut [f64], b: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let mut s = a[j * n + j];
        for k in 0..j {
            s -= a[j * n + k] * a[j * n + k];
        }
        if !(s > 0.0 && s.is_finite()) {
            return false;
        }
        let l = s.sqrt();
        a[j * n + j] = l;
        for i in j + 1..n {
            let mut t = a[i * n + j];
            for k in 0..j {
                t -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = t / l;
        }
    }
    for i in 0..n {
        let mut t = b[i];
        for k in 0..i {
            t -= a[i * n + k] * b[k];
        }
        b[i] = t / a[i * n + i];
    }
    for i in (0..n).rev() {
        let mut t = b[i];
        for k in i + 1..n {
            t -= a[k * n + i] * b[k];
        }
        b[i] = t / a[i * n + i];
    }
    b.iter().all(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::{Mode, Phase};

    fn card(modes: usize) -> Determined {
        Determined {
            channel: 0,
            rows: [0, 1],
            modes: (1..=modes as i32)
                .flat_map(|k| {
                    [Phase::Cos, Phase::Sin].map(|phase| Mode {
                        ky: 0,
                        kx: k,
                        phase,
                        std: 1.0,
                    })
                })
                .collect(),
            noise: 1e-3,
            iterations: 20,
        }
    }

    /// Against a hand-made nonlinear "solve" (row 1 = row 0 + 0.3 row 0^2 shifted by one point,
    /// row 2 = row 1 damped): the fit recovers row 0's modes from rows 1 and 2 to the accuracy the
    /// noise allows, and keeps the observations.
    #[test]
    fn fit_recovers_the_modes_a_nonlinear_map_sees() {
        let (ny, nx) = (3, 16);
        let d = card(3);
        let field = ny * nx;
        let resolve = |f: &[f32], n: usize| -> Result<Vec<f32>> {
            let mut y = f.to_vec();
            for s in 0..n {
                let v = &mut y[s * field..(s + 1) * field];
                for i in 0..nx {
                    let u = v[(i + 1) % nx];
                    v[nx + i] = u + 0.3 * u * u;
                }
                for i in 0..nx {
                    v[2 * nx + i] = 0.5 * v[nx + i];
                }
            }
            Ok(y)
        };
        let want: Vec<f64> = vec![0.8, -0.3, 0.25, 0.4, -0.15, 0.1];
        let mut truth = vec![0f32; field];
        for (j, &w) in want.iter().enumerate() {
            for (t, b) in truth.iter_mut().zip(d.basis(j, 1, ny, nx)) {
                *t += (w * b) as f32;
            }
        }
        let truth = resolve(&truth, 1).unwrap();
        let mask: Vec<f32> = (0..field).map(|p| (p >= nx) as u8 as f32).collect();
        let observed: Vec<f32> = truth.iter().zip(&mask).map(|(t, m)| t * m).collect();
        // the answer's row 0 zero, rows 1 and 2 whatever
        let mut answer = vec![0.1f32; field];
        answer[..nx].fill(0.0);
        let fitted = fit(&d, [1, ny, nx], &mut answer, &observed, &mask, resolve).unwrap();
        assert_eq!(fitted, 1);
        let err = (0..nx)
            .map(|i| f64::from(answer[i] - truth[i]).powi(2))
            .sum::<f64>()
            .sqrt()
            / (0..nx)
                .map(|i| f64::from(truth[i]).powi(2))
                .sum::<f64>()
                .sqrt();
        assert!(err < 1e-3, "row 0 off by {err}");
        assert_eq!(&answer[nx..], &observed[nx..]);
    }

    /// A mask that observes the whole support, or nothing, asks for no fit; the answer is kept.
    #[test]
    fn no_fit_where_the_support_is_observed_or_nothing_is() {
        let d = card(1);
        let (ny, nx) = (2, 8);
        let forward: Vec<f32> = (0..ny * nx).map(|p| (p < nx) as u8 as f32).collect();
        assert!(!wanted(&d, &forward, ny, nx));
        assert!(!wanted(&d, &vec![0.0; ny * nx], ny, nx));
        assert!(wanted(
            &d,
            &forward.iter().map(|m| 1.0 - m).collect::<Vec<_>>(),
            ny,
            nx
        ));
        let mut answer = vec![0.5f32; ny * nx];
        let n = fit(&d, [1, ny, nx], &mut answer, &forward, &forward, |_, _| {
            panic!("no call expected")
        })
        .unwrap();
        assert_eq!((n, answer[3]), (0, 0.5));
    }

    /// A field not finite at a point no observation sees is no answer: at the start an error, on
    /// a trial a rejection (the answer stays the resolve of its own input).
    #[test]
    fn fields_not_finite_anywhere_are_refused() {
        let d = card(1);
        let (ny, nx) = (2, 8);
        let field = ny * nx;
        let mask: Vec<f32> = (0..field).map(|p| (p >= nx + 4) as u8 as f32).collect();
        let observed = vec![0.25f32; field];
        let start = vec![0.5f32; field];
        // NaN at an unobserved point of row 1 whenever row 0 is not the start's
        let picky = |f: &[f32], n: usize| -> Result<Vec<f32>> {
            let mut y = f.to_vec();
            for s in 0..n {
                let v = &mut y[s * field..(s + 1) * field];
                if v[..nx].iter().any(|&u| u != 0.5) {
                    v[nx] = f32::NAN;
                }
            }
            Ok(y)
        };
        let mut answer = start.clone();
        assert_eq!(
            fit(&d, [1, ny, nx], &mut answer, &observed, &mask, picky).unwrap(),
            1
        );
        assert!(answer.iter().all(|v| v.is_finite()));
        assert_eq!(&answer[..nx + 4], &start[..nx + 4]);
        let always = |f: &[f32], _: usize| -> Result<Vec<f32>> {
            let mut y = f.to_vec();
            y[nx] = f32::NAN;
            Ok(y)
        };
        let mut answer = start.clone();
        let e = fit(&d, [1, ny, nx], &mut answer, &observed, &mask, always).unwrap_err();
        assert!(e.to_string().contains("not finite"), "{e}");
    }

    #[test]
    fn cholesky_solves_and_refuses_indefinite() {
        let mut a = vec![4.0, 0.0, 2.0, 3.0];
        let mut b = vec![2.0, 5.0];
        assert!(cholesky_solve(&mut a, &mut b, 2));
        // [[4, 2], [2, 3]] x = [2, 5]: x = [-0.5, 2]
        assert!((b[0] + 0.5).abs() < 1e-12 && (b[1] - 2.0).abs() < 1e-12);
        let mut a = vec![1.0, 0.0, 2.0, 1.0];
        assert!(!cholesky_solve(&mut a, &mut [1.0, 1.0], 2));
    }
}
