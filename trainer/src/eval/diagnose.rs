//! Where a conditional answer's error comes from, on fresh problems of any family (neither the
//! training nor the evaluation seed):
//! - the **manifold error**: eps fitted to the whole true field (every channel observed, no PDE
//!   term, many steps, restarts, the best restart per problem): the best answer the student can
//!   represent at all, scored on what each task wants;
//! - the solve (Algorithm 3) from a random start with the model's defaults: what users get;
//! - the same solve with a long budget and restarts, the best restart chosen by the solve's own
//!   loss (not by the truth): what a better optimiser of the same objective could reach.
//!
//! If the default solve is far above the long one, the effort belongs to the solve (amortised start,
//! better optimiser); if the long solve sits near the manifold error, better optimisation cannot go
//! lower and the student itself must improve. With an amortised encoder it measures the fast paths
//! instead (one call, and a few optimiser steps after it) and the spread of several answers.

use super::metrics::{
    ensemble, spread_words, task_table, TableRow, TaskFigures, TaskSpread, Unknown,
};
use super::problems::ProblemTask;
use crate::checkpoint::{load_role, Role};
use crate::config::{InferConfig, Preset};
use crate::data::dataset;
use crate::nets::UNet;
use crate::pde::ops::Tch;
use crate::pde::{Pde, Task, SPARSE_FRACTION};
use crate::stages::encoder::{encode, load_encoder};
use crate::stages::solve::Student;
use crate::util::tensor::to_f32;
use anyhow::Result;
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

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub method: String,
    pub steps: usize,
    pub restarts: usize,
    pub tasks: Vec<TaskFigures>,
    /// Wall time per problem of the row's work (the one fit, or the tasks' solves).
    pub seconds_per_problem: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Diagnosis {
    pub command: String,
    pub student: String,
    pub pde: String,
    pub settings: Settings,
    pub defaults: InferConfig,
    pub rows: Vec<Row>,
    /// The spread of several one-call answers (amortised only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Spread>,
}

/// How often the truth lies within mean +- 2 std of K answers to one observation, over the unknown
/// entries of every problem, per task; and the answers' mean as the answer.
#[derive(Clone, Debug, Serialize)]
pub struct Spread {
    pub answers: usize,
    pub tasks: Vec<TaskSpread>,
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
        // the output the fit scored, not a sample (which the fit never saw)
        let d = st.one_step_physical(&s.eps);
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

/// The diagnosis's problems and tasks: `count` fresh samples of the student's family from `seed`,
/// its forward and inverse tasks, and the sparse task (a share of what the inverse observes, drawn
/// from tch's generator seeded `seed ^ 0x5A5E`).
fn problems(
    st: &Student,
    pde: &Pde,
    count: usize,
    seed: u64,
) -> Result<(Tensor, Vec<ProblemTask>)> {
    let grid = st.op.grid;
    let data = dataset::generate(*pde, grid, count.max(2), seed)?;
    let dev = st.net.device();
    let truth = data.fields.narrow(0, 0, count as i64).to_device(dev);
    let p = truth.size()[0];
    tch::manual_seed(seed as i64 ^ 0x5A5E);
    let n = grid.n as i64;
    let points = Tensor::rand([p, 1, n, n], (Kind::Float, dev))
        .lt(SPARSE_FRACTION)
        .to_kind(Kind::Float);
    let tasks = vec![
        ProblemTask::of(pde, Task::Forward, p, grid, dev),
        ProblemTask::of(pde, Task::Inverse, p, grid, dev),
        ProblemTask::sparse(pde, &points, grid, SPARSE_FRACTION),
    ];
    Ok((truth, tasks))
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
    let (net, meta) = load_role(student, Role::Student)?;
    let st = Student::of(&net, &meta);
    let pde = meta.data.pde;
    let (truth, tasks) = problems(&st, &pde, s.problems, s.seed)?;
    let p = truth.size()[0];
    let defaults = preset.infer.clone();
    let (rows, spread) = match &s.encoder {
        Some(enc) => {
            let enc = load_encoder(enc, &net)?;
            let (rows, spread) = fast_paths(&st, &enc.net, &pde, &truth, &tasks, preset, s)?;
            (rows, Some(spread))
        }
        None => (solves(&st, &pde, &truth, &tasks[..2], &defaults, s)?, None),
    };
    eprintln!("diagnose: {} rows on {p} problems", rows.len());
    Ok(Diagnosis {
        command,
        student: student.display().to_string(),
        pde: pde.name().to_string(),
        settings: s.clone(),
        defaults,
        rows,
        spread,
    })
}

/// The manifold row and the two solves' rows, over the forward and inverse `tasks`.
fn solves(
    st: &Student,
    pde: &Pde,
    truth: &Tensor,
    tasks: &[ProblemTask],
    defaults: &InferConfig,
    s: &Settings,
) -> Result<Vec<Row>> {
    let p = truth.size()[0];
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
    let all = truth.ones_like();
    let b = best_of(st, truth, &all, &fit, s.fit_restarts, 1)?;
    let names: Vec<&str> = pde.channels().iter().map(|c| c.0).collect();
    rows.push(Row {
        method: format!("manifold: d(eps) fitted to the true ({})", names.join(", ")),
        steps: fit.steps,
        restarts: s.fit_restarts,
        tasks: tasks
            .iter()
            .map(|t| TaskFigures::of(t.name, &t.observed, &t.part_scores(pde, &b.d, truth)))
            .collect(),
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
            "diagnose: {name}, {p} problems x {} steps x {restarts} restarts, {} tasks",
            cfg.steps,
            tasks.len()
        );
        let mut seconds = 0.0;
        let mut figures = Vec::new();
        for t in tasks {
            let r = best_of(st, truth, &t.mask, &cfg, restarts, seed)?;
            seconds += r.seconds;
            figures.push(TaskFigures::of(
                t.name,
                &t.observed,
                &t.part_scores(pde, &r.x, truth),
            ));
        }
        rows.push(Row {
            method: name.into(),
            steps: cfg.steps,
            restarts,
            tasks: figures,
            seconds_per_problem: seconds / p as f64,
        });
    }
    Ok(rows)
}

/// The amortised encoder's answers with `cfg.steps` steps of `cfg.optimizer` after it, z drawn
/// after `tch::manual_seed(seed)`; x_mix (physical).
fn amortised(
    st: &Student,
    enc: &UNet,
    truth: &Tensor,
    mask: &Tensor,
    cfg: &InferConfig,
    seed: i64,
) -> Result<Tensor> {
    tch::manual_seed(seed);
    let z = truth.randn_like();
    let observed = truth * mask;
    let eps = tch::no_grad(|| encode(&mut Tch, enc, st.norm, &observed, mask, &z));
    Ok(st.solve(&eps, truth, mask, cfg)?.x)
}

fn fast_paths(
    st: &Student,
    enc: &UNet,
    pde: &Pde,
    truth: &Tensor,
    tasks: &[ProblemTask],
    preset: &Preset,
    s: &Settings,
) -> Result<(Vec<Row>, Spread)> {
    use piddm::optim::Optimizer;
    let p = truth.size()[0] as f64;
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
        let mut figures = Vec::new();
        for (t, seed) in tasks.iter().zip(21..) {
            let x = amortised(st, enc, truth, &t.mask, &cfg, seed)?;
            figures.push(TaskFigures::of(
                t.name,
                &t.observed,
                &t.part_scores(pde, &x, truth),
            ));
        }
        rows.push(Row {
            method: name,
            steps: cfg.steps,
            restarts: 1,
            tasks: figures,
            seconds_per_problem: t0.elapsed().as_secs_f64() / (tasks.len() as f64 * p),
        });
    }
    // the spread of K one-call answers
    let k = s.answers.max(2);
    let truth_v = to_f32(truth);
    let mut spread = Vec::new();
    for (t, seed) in tasks.iter().zip((100..).step_by(100)) {
        let draws: Vec<Vec<f32>> = (0..k)
            .map(|r| {
                Ok(to_f32(&amortised(
                    st,
                    enc,
                    truth,
                    &t.mask,
                    &base,
                    seed + r as i64,
                )?))
            })
            .collect::<Result<_>>()?;
        let size = truth.size();
        let unknown = Unknown {
            mask: to_f32(&t.mask).iter().map(|&m| m < 0.5).collect(),
            channels: size[1] as usize,
            plane: (size[2] * size[3]) as usize,
        };
        let e = ensemble(&draws, &truth_v, &unknown);
        let mean = Tensor::from_slice(&e.mean).reshape(truth.size());
        spread.push(TaskSpread {
            task: t.name.to_string(),
            coverage: e.coverage,
            determined: e.determined,
            mean_answer: TaskFigures::of(t.name, &t.observed, &t.part_scores(pde, &mean, truth)),
        });
    }
    Ok((
        rows,
        Spread {
            answers: k,
            tasks: spread,
        },
    ))
}

pub fn markdown(d: &Diagnosis) -> String {
    let rows: Vec<TableRow> = d
        .rows
        .iter()
        .map(|r| TableRow {
            lead: vec![r.method.clone(), format!("{} x {}", r.steps, r.restarts)],
            tasks: &r.tasks,
            last: format!("{:.2}", r.seconds_per_problem),
        })
        .collect();
    let mut s = format!(
        "Where the conditional answers' error comes from: {} fresh {} problems (seed {}), `{}`.\n\
         Defaults: {} {:?} steps on eps, learning rate {}, lambda_infer {:e}.\n\n{}",
        d.settings.problems,
        d.pde,
        d.settings.seed,
        d.command,
        d.defaults.steps,
        d.defaults.optimizer,
        d.defaults.lr,
        d.defaults.lambda,
        task_table(&["method", "steps x restarts"], "s per problem", &rows)
    );
    if let Some(sp) = &d.spread {
        let (cover, means) = spread_words(&sp.tasks);
        s += &format!(
            "\nSpread of {} one-call answers (different z) per observation: the truth lies within \
             mean +- 2 std at {cover} of the unknown points. Their mean as the answer, median \
             (mean): {means}.\n",
            sp.answers
        );
    }
    s
}

/// `piddm-train diagnose`: the diagnosis written to `out` (diagnosis.json, diagnosis.md); returns
/// the markdown.
pub fn run(
    student: &Path,
    preset: &Preset,
    s: &Settings,
    command: String,
    out: &Path,
) -> Result<String> {
    let d = diagnose(student, preset, s, command)?;
    let md = markdown(&d);
    crate::util::fs::write_report(out, "diagnosis", &d, &md)?;
    Ok(md)
}
