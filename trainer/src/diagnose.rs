//! Where a conditional answer's error comes from, on fresh problems (neither the training nor the
//! evaluation seed):
//! - the **manifold error**: eps fitted to the whole true field (both channels observed, no PDE
//!   term, many steps, restarts, the best restart per problem): the best answer the student can
//!   represent at all;
//! - the solve (Algorithm 3) from a random start with the model's defaults: what users get;
//! - the same solve with a long budget and restarts, the best restart chosen by the solve's own
//!   loss (not by the truth): what a better optimiser of the same objective could reach.
//!
//! If the default solve is far above the long one, the effort belongs to the solve (amortised start,
//! better optimiser); if the long solve sits near the manifold error, better optimisation cannot go
//! lower and the student itself must improve.

use crate::config::{InferConfig, Preset};
use crate::dataset;
use crate::infer::Student;
use crate::train::load_ema;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;
use tch::{Kind, Tensor};

#[derive(Clone, Debug, Serialize, clap::Args)]
pub struct Settings {
    #[arg(long, default_value_t = 32)]
    pub problems: usize,
    /// Seed of the problems: differs from the training (1) and evaluation (2) seeds.
    #[arg(long, default_value_t = 7919)]
    pub seed: u64,
    /// Steps and restarts of the fit to the true field.
    #[arg(long, default_value_t = 500)]
    pub fit_steps: usize,
    #[arg(long, default_value_t = 2)]
    pub fit_restarts: usize,
    /// Steps and restarts of the long solve.
    #[arg(long, default_value_t = 800)]
    pub long_steps: usize,
    #[arg(long, default_value_t = 1)]
    pub long_restarts: usize,
    /// An amortised encoder of the student: measure its fast paths instead (one call, and a few
    /// steps of each optimiser from its answer), with the spread of several answers.
    #[arg(long)]
    pub encoder: Option<std::path::PathBuf>,
    /// Answers per observation for the spread (amortised only).
    #[arg(long, default_value_t = 8)]
    pub answers: usize,
}

/// Median and mean of one metric over the problems.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub median: f64,
    pub mean: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub method: String,
    pub steps: usize,
    pub restarts: usize,
    /// Forward problem (all of a observed): relative L2 error of u.
    pub forward_rel_l2_u: Figure,
    /// Inverse problem (all of u observed): error rate of the thresholded a.
    pub inverse_error_rate_a: Figure,
    /// Inverse problem from 3 % of u (the same points for every row): error rate of a.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse_error_rate_a: Option<Figure>,
    /// Wall time per problem of the row's work (the one fit, or the forward and inverse solves).
    pub seconds_per_problem: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Diagnosis {
    pub command: String,
    pub student: String,
    pub settings: Settings,
    pub defaults: InferConfig,
    pub rows: Vec<Row>,
    /// Coverage of the truth by mean +- 2 std of several one-call answers (amortised only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Spread>,
}

/// How often the truth lies within mean +- 2 std of K answers to one observation, over the unknown
/// entries of every problem: forward (u), inverse (a), sparse inverse (a and the unobserved u).
#[derive(Clone, Debug, Serialize)]
pub struct Spread {
    pub answers: usize,
    pub forward_u: f64,
    pub inverse_a: f64,
    pub sparse: f64,
    /// The same answers' mean as the answer: forward rel. L2 of u, inverse error rate of a, sparse.
    pub mean_forward_rel_l2_u: Figure,
    pub mean_inverse_error_rate_a: Figure,
    pub mean_sparse_error_rate_a: Figure,
}

/// Median and mean of `v`.
pub fn figure(v: &[f64]) -> Figure {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len();
    let median = if m % 2 == 1 {
        s[m / 2]
    } else {
        0.5 * (s[m / 2 - 1] + s[m / 2])
    };
    Figure {
        median,
        mean: s.iter().sum::<f64>() / m as f64,
    }
}

/// Per problem of fields laid out [problem][a, u][plane] (`field` = 2 `plane` values each): the
/// relative L2 error of u and the error rate of a thresholded at `thr`.
pub fn per_problem(
    x: &[f32],
    truth: &[f32],
    field: usize,
    plane: usize,
    thr: f32,
) -> (Vec<f64>, Vec<f64>) {
    let (mut rel, mut err) = (Vec::new(), Vec::new());
    for (xs, ts) in x.chunks(field).zip(truth.chunks(field)) {
        let (num, den) = xs[plane..]
            .iter()
            .zip(&ts[plane..])
            .fold((0.0, 0.0), |(n, d), (a, b)| {
                (n + ((a - b) as f64).powi(2), d + (*b as f64).powi(2))
            });
        rel.push((num / den).sqrt());
        let wrong = xs[..plane]
            .iter()
            .zip(&ts[..plane])
            .filter(|(a, b)| (**a >= thr) != (**b >= thr))
            .count();
        err.push(wrong as f64 / plane as f64);
    }
    (rel, err)
}

/// K answers to the same observations: their mean, pointwise std (K - 1 in the denominator), and
/// the share of the `unknown` entries where the truth lies within mean +- 2 std.
pub struct Ensemble {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub coverage: f64,
}

pub fn ensemble(draws: &[Vec<f32>], truth: &[f32], unknown: &[bool]) -> Ensemble {
    let k = draws.len() as f64;
    let mean: Vec<f32> = (0..truth.len())
        .map(|i| (draws.iter().map(|d| d[i] as f64).sum::<f64>() / k) as f32)
        .collect();
    let std: Vec<f32> = (0..truth.len())
        .map(|i| {
            let v = draws
                .iter()
                .map(|d| (d[i] as f64 - mean[i] as f64).powi(2))
                .sum::<f64>();
            (v / (k - 1.0)).sqrt() as f32
        })
        .collect();
    let (mut inside, mut total) = (0usize, 0usize);
    for i in 0..truth.len() {
        if unknown[i] {
            total += 1;
            inside += ((mean[i] - truth[i]).abs() <= 2.0 * std[i]) as usize;
        }
    }
    Ensemble {
        mean,
        std,
        coverage: inside as f64 / total.max(1) as f64,
    }
}

fn flat(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().reshape([-1])).expect("f32")
}

/// [`per_problem`] on [N, 2, n, n] tensors.
fn metrics(x: &Tensor, truth: &Tensor, threshold: f64) -> (Vec<f64>, Vec<f64>) {
    let [_, c, h, w] = x.size()[..] else {
        panic!("problems are [N, C, n, n]")
    };
    let plane = (h * w) as usize;
    per_problem(
        &flat(x),
        &flat(truth),
        c as usize * plane,
        plane,
        threshold as f32,
    )
}

/// The best of several solves, per problem.
pub struct Best {
    /// x_mix (physical): observations where observed, the student elsewhere.
    pub x: Tensor,
    /// The student's own fields d(eps) (physical).
    pub d: Tensor,
    /// The solve's own final loss [B], by which the restart was chosen.
    pub loss: Tensor,
    pub seconds: f64,
}

/// Runs the solve `restarts` times from fresh eps (restart r draws eps after
/// `tch::manual_seed(seed * 1000 + r)`) and keeps, per problem, the answer whose own final loss is
/// lowest.
pub fn best_of(
    st: &Student,
    truth: &Tensor,
    mask: &Tensor,
    cfg: &InferConfig,
    restarts: usize,
    seed: i64,
) -> Result<Best> {
    let t = Instant::now();
    let mut best: Option<(Tensor, Tensor, Tensor)> = None;
    for r in 0..restarts {
        tch::manual_seed(seed * 1000 + r as i64);
        let eps = Tensor::randn(truth.size(), (Kind::Float, truth.device()));
        let s = st.solve(&eps, truth, mask, cfg)?;
        let (loss, _) = tch::no_grad(|| st.loss(&s.eps, truth, mask, cfg.lambda));
        let d = st.generate(&s.eps);
        best = Some(match best {
            None => (loss, s.x, d),
            Some((bl, bx, bd)) => {
                let better = loss.lt_tensor(&bl).reshape([-1, 1, 1, 1]);
                (
                    loss.minimum(&bl),
                    s.x.where_self(&better, &bx),
                    d.where_self(&better, &bd),
                )
            }
        });
    }
    let (loss, x, d) = best.expect("at least one restart");
    Ok(Best {
        x,
        d,
        loss,
        seconds: t.elapsed().as_secs_f64(),
    })
}

pub fn diagnose(
    student: &Path,
    preset: &Preset,
    s: &Settings,
    command: String,
) -> Result<Diagnosis> {
    anyhow::ensure!(
        s.problems >= 1 && s.fit_restarts >= 1 && s.long_restarts >= 1,
        "problems and restarts must be at least 1"
    );
    let (net, meta) = load_ema(student)?;
    let st = Student::of(&net, &meta);
    let d = &meta.data;
    let threshold = d.pde.family().threshold().with_context(|| {
        format!(
            "diagnose scores a binary coefficient's error rate; {} has none",
            d.pde.name()
        )
    })?;
    let problems = dataset::generate(
        d.pde,
        d.grid,
        s.problems.max(2),
        s.seed,
        meta.edm.sigma_data,
    )?;
    let dev = net.net.device();
    let truth = problems
        .fields
        .narrow(0, 0, s.problems as i64)
        .to_device(dev);
    let [p, _, n, _] = truth.size()[..] else {
        anyhow::bail!("problems must be [N, C, n, n]")
    };
    let ones = Tensor::ones([p, 1, n, n], (Kind::Float, dev));
    let zeros = ones.zeros_like();
    let all = Tensor::cat(&[&ones, &ones], 1);
    let forward = Tensor::cat(&[&ones, &zeros], 1);
    let inverse = Tensor::cat(&[&zeros, &ones], 1);
    let defaults = preset.infer.clone();
    if let Some(enc) = &s.encoder {
        let tasks = Tasks {
            truth: &truth,
            forward: &forward,
            inverse: &inverse,
            sparse: &sparse_mask(&truth, 0.03, s.seed),
            threshold,
        };
        let enc = crate::export::load_encoder(enc, &net)?;
        let (rows, spread) = fast_paths(&st, &enc.net, &tasks, preset, s)?;
        return Ok(Diagnosis {
            command,
            student: student.display().to_string(),
            settings: s.clone(),
            defaults,
            rows,
            spread: Some(spread),
        });
    }
    let mut rows = Vec::new();

    // the manifold: fit eps to the whole true field, no PDE term
    let fit = InferConfig {
        steps: s.fit_steps,
        lambda: 0.0,
        ..defaults.clone()
    };
    eprintln!(
        "diagnose: fit to the truth, {p} problems x {} steps x {} restarts",
        fit.steps, s.fit_restarts
    );
    let b = best_of(&st, &truth, &all, &fit, s.fit_restarts, 1)?;
    let (rel, err) = metrics(&b.d, &truth, threshold);
    rows.push(Row {
        method: "manifold: d(eps) fitted to the true (a, u)".into(),
        steps: fit.steps,
        restarts: s.fit_restarts,
        forward_rel_l2_u: figure(&rel),
        inverse_error_rate_a: figure(&err),
        sparse_error_rate_a: None,
        seconds_per_problem: b.seconds / p as f64,
    });

    for (name, cfg, restarts, seed) in [
        (
            "solve, the model's defaults, one random start",
            defaults.clone(),
            1,
            2,
        ),
        (
            "solve, long, best restart by its own loss",
            InferConfig {
                steps: s.long_steps,
                ..defaults.clone()
            },
            s.long_restarts,
            3,
        ),
    ] {
        eprintln!(
            "diagnose: {name}, {p} problems x {} steps x {restarts} restarts, forward and inverse",
            cfg.steps
        );
        let f = best_of(&st, &truth, &forward, &cfg, restarts, seed)?;
        let i = best_of(&st, &truth, &inverse, &cfg, restarts, seed)?;
        let (rel, _) = metrics(&f.x, &truth, threshold);
        let (_, err) = metrics(&i.x, &truth, threshold);
        rows.push(Row {
            method: name.into(),
            steps: cfg.steps,
            restarts,
            forward_rel_l2_u: figure(&rel),
            inverse_error_rate_a: figure(&err),
            sparse_error_rate_a: None,
            seconds_per_problem: (f.seconds + i.seconds) / p as f64,
        });
    }
    Ok(Diagnosis {
        command,
        student: student.display().to_string(),
        settings: s.clone(),
        defaults,
        rows,
        spread: None,
    })
}

/// A mask observing `frac` of channel 1 (u) at points drawn from `seed`, the same for every row.
pub fn sparse_mask(truth: &Tensor, frac: f64, seed: u64) -> Tensor {
    let [p, _, n, _] = truth.size()[..] else {
        panic!("problems are [N, C, n, n]")
    };
    tch::manual_seed(seed as i64 ^ 0x5A5E);
    let pts = Tensor::rand([p, 1, n, n], (Kind::Float, truth.device()))
        .lt(frac)
        .to_kind(Kind::Float);
    Tensor::cat(&[&pts.zeros_like(), &pts], 1)
}

/// The three problems of every fast-path row.
pub struct Tasks<'a> {
    pub truth: &'a Tensor,
    pub forward: &'a Tensor,
    pub inverse: &'a Tensor,
    pub sparse: &'a Tensor,
    pub threshold: f64,
}

/// The amortised encoder's answers with `cfg.steps` steps of `cfg.optimizer` after it, z drawn
/// after `tch::manual_seed(seed)`; x_mix (physical).
fn amortised(
    st: &Student,
    enc: &crate::unet::UNet,
    truth: &Tensor,
    mask: &Tensor,
    cfg: &InferConfig,
    seed: i64,
) -> Result<Tensor> {
    tch::manual_seed(seed);
    let z = truth.randn_like();
    let observed = truth * mask;
    let eps = tch::no_grad(|| {
        crate::amortise::encode(
            &mut crate::netops::TchOps,
            enc,
            st.norm,
            &observed,
            mask,
            &z,
        )
    });
    Ok(st.solve(&eps, truth, mask, cfg)?.x)
}

fn fast_paths(
    st: &Student,
    enc: &crate::unet::UNet,
    t: &Tasks,
    preset: &Preset,
    s: &Settings,
) -> Result<(Vec<Row>, Spread)> {
    use piddm::optim::Optimizer;
    let p = t.truth.size()[0] as f64;
    let base = InferConfig {
        steps: 0,
        ..preset.infer.clone()
    };
    let mut variants = vec![("amortised, one call".to_string(), base.clone())];
    for (optimizer, lr) in [(Optimizer::Adam, 0.01), (Optimizer::Lbfgs, 0.02)] {
        for steps in [1, 2, 4] {
            variants.push((
                format!("amortised + {steps} {optimizer:?} steps, lr {lr}").to_lowercase(),
                InferConfig {
                    steps,
                    lr,
                    optimizer,
                    ..base.clone()
                },
            ));
        }
    }
    let mut rows = Vec::new();
    for (name, cfg) in variants {
        eprintln!("diagnose: {name}");
        let t0 = Instant::now();
        let f = amortised(st, enc, t.truth, t.forward, &cfg, 21)?;
        let i = amortised(st, enc, t.truth, t.inverse, &cfg, 22)?;
        let sp = amortised(st, enc, t.truth, t.sparse, &cfg, 23)?;
        let secs = t0.elapsed().as_secs_f64();
        rows.push(Row {
            method: name,
            steps: cfg.steps,
            restarts: 1,
            forward_rel_l2_u: figure(&metrics(&f, t.truth, t.threshold).0),
            inverse_error_rate_a: figure(&metrics(&i, t.truth, t.threshold).1),
            sparse_error_rate_a: Some(figure(&metrics(&sp, t.truth, t.threshold).1)),
            seconds_per_problem: secs / (3.0 * p),
        });
    }
    // the spread of K one-call answers
    let k = s.answers.max(2);
    let [_, c, h, w] = t.truth.size()[..] else {
        anyhow::bail!("problems are [N, C, n, n]")
    };
    let (plane, truth) = ((h * w) as usize, flat(t.truth));
    let field = c as usize * plane;
    let thr = t.threshold as f32;
    let mut spread = Vec::new();
    for (mask, seed) in [(t.forward, 100), (t.inverse, 200), (t.sparse, 300)] {
        let draws: Vec<Vec<f32>> = (0..k)
            .map(|r| {
                Ok(flat(&amortised(
                    st,
                    enc,
                    t.truth,
                    mask,
                    &base,
                    seed + r as i64,
                )?))
            })
            .collect::<Result<_>>()?;
        let unknown: Vec<bool> = flat(mask).iter().map(|&m| m < 0.5).collect();
        spread.push(ensemble(&draws, &truth, &unknown));
    }
    let metric = |e: &Ensemble| per_problem(&e.mean, &truth, field, plane, thr);
    let spread = Spread {
        answers: k,
        forward_u: spread[0].coverage,
        inverse_a: spread[1].coverage,
        sparse: spread[2].coverage,
        mean_forward_rel_l2_u: figure(&metric(&spread[0]).0),
        mean_inverse_error_rate_a: figure(&metric(&spread[1]).1),
        mean_sparse_error_rate_a: figure(&metric(&spread[2]).1),
    };
    Ok((rows, spread))
}

pub fn markdown(d: &Diagnosis) -> String {
    let mut s = format!(
        "Where the conditional answers' error comes from: {} fresh Darcy problems (seed {}), `{}`.\n\
         Defaults: {} Adam steps on eps, learning rate {}, lambda_infer {:e}.\n\n\
         | method | steps x restarts | forward: rel. L2 of u, median (mean) | inverse: error rate of a, median (mean) | s per problem (fit, or forward + inverse) |\n|---|---|---|---|---|\n",
        d.settings.problems, d.settings.seed, d.command, d.defaults.steps, d.defaults.lr, d.defaults.lambda
    );
    if d.spread.is_some() {
        s = s.replace(
            "| s per problem",
            "| inverse from 3 % of u: error rate of a, median (mean) | s per problem",
        );
        s = s.replace("|---|---|---|---|---|", "|---|---|---|---|---|---|");
    }
    for r in &d.rows {
        let sparse = r.sparse_error_rate_a.as_ref().map_or(String::new(), |f| {
            format!("{:.2} % ({:.2} %) | ", 100.0 * f.median, 100.0 * f.mean)
        });
        s += &format!(
            "| {} | {} x {} | {:.2} % ({:.2} %) | {:.2} % ({:.2} %) | {sparse}{:.2} |\n",
            r.method,
            r.steps,
            r.restarts,
            100.0 * r.forward_rel_l2_u.median,
            100.0 * r.forward_rel_l2_u.mean,
            100.0 * r.inverse_error_rate_a.median,
            100.0 * r.inverse_error_rate_a.mean,
            r.seconds_per_problem
        );
    }
    if let Some(sp) = &d.spread {
        s += &format!(
            "\nSpread of {} one-call answers (different z) per observation: the truth lies within \
             mean +- 2 std at {:.1} % of the unknown points (forward: u), {:.1} % (inverse: a), \
             {:.1} % (3 % of u: a and the unobserved u). Their mean as the answer: forward {:.2} %, \
             inverse {:.2} %, 3 % of u {:.2} % (medians).\n",
            sp.answers,
            100.0 * sp.forward_u,
            100.0 * sp.inverse_a,
            100.0 * sp.sparse,
            100.0 * sp.mean_forward_rel_l2_u.median,
            100.0 * sp.mean_inverse_error_rate_a.median,
            100.0 * sp.mean_sparse_error_rate_a.median
        );
    }
    s
}
