//! Conditional answers of an exported model on fresh problems of its family, through the C ABI (the
//! calls a C or Fortran solver makes): the family's forward and inverse tasks and the inverse from a
//! few points, for the one-call answer, the card's defaults and the published solve; and the spread
//! of several one-call answers to one observation.

use super::capi::Handle;
use super::examples::{card_pde, problems};
use crate::eval::metrics::{
    band_scaled, ensemble, spread_words, task_table, TableRow, TaskFigures, TaskSpread, Unknown,
};
use crate::eval::problems::ProblemTask;
use crate::pde::{sparse_points, Grid, Pde, Task, SPARSE_FRACTION};
use crate::util::plot::{save_fields, Column};
use crate::util::tensor::to_f32;
use anyhow::{ensure, Result};
use piddm::ffi;
use rand::SeedableRng;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Tensor;

#[derive(Clone, Debug, Serialize, clap::Args)]
pub struct Settings {
    #[arg(long, default_value = "examples/models/darcy32.onnx")]
    pub model: PathBuf,
    #[arg(long, default_value_t = 32)]
    pub problems: usize,
    /// Differs from the training (1) and evaluation (2) seeds.
    #[arg(long, default_value_t = 7919)]
    pub seed: u64,
    /// Share of the points of what the inverse problem observes, observed in the sparse one.
    #[arg(long, default_value_t = SPARSE_FRACTION)]
    pub sparse: f64,
    /// One-call answers per observation for the spread.
    #[arg(long, default_value_t = 8)]
    pub answers: usize,
    /// Scales of z (`noise_scale`) at which the spread is measured, one table row each: its
    /// calibration (1 is z as the encoder was trained).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub spread_scales: Vec<f64>,
    /// Rows of the card's defaults with these step counts instead of the card's (how far more
    /// optimisation from the amortised start takes the answer).
    #[arg(long, value_delimiter = ',')]
    pub more_steps: Vec<i64>,
    /// Also run the published solve (random start, 200 Adam steps, learning rate 0.05).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub published: bool,
    /// The networks' arithmetic the model is loaded with (int8 needs graphs exported with
    /// `--precision int8`).
    #[arg(long, default_value = "fp32", value_parser = piddm::card::Precision::parse)]
    pub precision: piddm::card::Precision,
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub method: String,
    pub start: i32,
    pub steps: i64,
    pub optimizer: i32,
    pub tasks: Vec<TaskFigures>,
    /// Wall seconds per answer (each task solved for all problems in one call).
    pub seconds_per_answer: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Spread {
    pub answers: usize,
    pub noise_scale: f64,
    pub tasks: Vec<TaskSpread>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub pde: String,
    pub settings: Settings,
    pub card_defaults: piddm::card::SolveDefaults,
    pub rows: Vec<Row>,
    /// One per scale of `Settings::spread_scales` (none with fewer than 2 answers).
    pub spread: Vec<Spread>,
    /// `piddm_solve_spread` with the card's calibration, where the card has one.
    pub calibrated: Option<Calibrated>,
    pub figure: String,
}

/// The calibrated spread through `piddm_solve_spread` (K answers, the std scale of each sample's
/// task).
#[derive(Clone, Debug, Serialize)]
pub struct Calibrated {
    pub answers: usize,
    pub tasks: Vec<TaskSpread>,
    /// The std scale the runtime chose per task (its first problem's).
    pub std_scales: Vec<f64>,
    /// Wall seconds per observation (K answers).
    pub seconds_per_observation: f64,
}

/// The family's forward and inverse tasks over `count` problems and the sparse inverse (what the
/// inverse observes at a `sparse` share of the points, drawn from `seed ^ 0x5A5E`), each with its
/// mask as the C ABI takes it ([P][C][plane], 1 where observed).
pub(crate) fn tasks(
    pde: &Pde,
    grid: Grid,
    count: usize,
    sparse: f64,
    seed: u64,
) -> Vec<(ProblemTask, Vec<u8>)> {
    let (p, n, cpu) = (count as i64, grid.n as i64, tch::Device::Cpu);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5A5E);
    let points = sparse_points(&mut rng, count * grid.len(), sparse);
    let points = Tensor::from_slice(&points).reshape([p, 1, n, n]);
    [
        ProblemTask::of(pde, Task::Forward, p, grid, cpu),
        ProblemTask::of(pde, Task::Inverse, p, grid, cpu),
        ProblemTask::sparse(pde, &points, grid, sparse),
    ]
    .into_iter()
    .map(|t| {
        let mask = to_f32(&t.mask).iter().map(|&v| (v > 0.5) as u8).collect();
        (t, mask)
    })
    .collect()
}

/// What a task's `mask` gives of `truth`: its values where observed, NaN elsewhere (the C ABI
/// ignores unobserved entries, so NaN there proves it).
pub(crate) fn observe(truth: &[f32], mask: &[u8]) -> Vec<f32> {
    truth
        .iter()
        .zip(mask)
        .map(|(&t, &k)| if k != 0 { t } else { f32::NAN })
        .collect()
}

pub fn run(s: &Settings, command: String, out: &Path) -> Result<Report> {
    ensure!(s.problems >= 1, "at least one problem");
    let h = Handle::load_precision(&s.model, s.precision)?;
    let card = crate::export::read_card(&s.model)?.0;
    let pde = card_pde(&card)?;
    let truth = problems(&card, s.problems, s.seed)?.data;
    let (c, ny, nx) = h.shape()?;
    let plane = ny * nx;
    let field = c * plane;
    let grid = Grid::new(nx)?;
    let tasks = tasks(&pde, grid, s.problems, s.sparse, s.seed);
    let as_tensor = |v: &[f32]| {
        Tensor::from_slice(v).reshape([s.problems as i64, c as i64, ny as i64, nx as i64])
    };
    let truth_t = as_tensor(&truth);
    let figures = |t: &ProblemTask, x: &[f32]| {
        TaskFigures::of(
            t.name,
            &t.observed,
            &t.part_scores(&pde, &as_tensor(x), &truth_t),
        )
    };
    let observe = |m: &[u8]| observe(&truth, m);
    ensure!(
        h.has_amortised()?,
        "{} has no amortised part: its conditional answers are the published solve's (piddm-train eval)",
        s.model.display()
    );
    let defaults = h.defaults()?;
    let one_call = ffi::piddm_solve_params {
        steps: 0,
        start: ffi::piddm_start::PIDDM_START_AMORTISED as i32,
        ..defaults
    };
    let mut methods = vec![
        (
            format!(
                "one call (amortised start, no steps, noise_scale {})",
                defaults.noise_scale
            ),
            one_call,
        ),
        (
            format!(
                "the card's defaults ({} {} steps from the amortised start)",
                defaults.steps,
                if defaults.optimizer == ffi::piddm_optimizer::PIDDM_OPTIMIZER_LBFGS as i32 {
                    "L-BFGS"
                } else {
                    "Adam"
                }
            ),
            defaults,
        ),
    ];
    if defaults.noise_scale != 0.0 {
        // the encoder's central answer beside the card's draw
        methods.push((
            "one call, noise_scale 0 (the encoder's central answer)".to_string(),
            ffi::piddm_solve_params {
                noise_scale: 0.0,
                ..one_call
            },
        ));
    }
    for &steps in &s.more_steps {
        methods.push((
            format!("the card's defaults with {steps} steps"),
            ffi::piddm_solve_params { steps, ..defaults },
        ));
    }
    if s.published {
        methods.push((
            "published solve (random start, 200 Adam steps, lr 0.05)".to_string(),
            ffi::piddm_solve_params {
                steps: 200,
                learning_rate: 0.05,
                start: ffi::piddm_start::PIDDM_START_RANDOM as i32,
                optimizer: ffi::piddm_optimizer::PIDDM_OPTIMIZER_ADAM as i32,
                ..defaults
            },
        ));
    }
    let mut rows = Vec::new();
    let mut answers_shown = Vec::new();
    for (k, (name, p)) in methods.iter().enumerate() {
        eprintln!("conditional: {name}");
        let t = Instant::now();
        let answers: Vec<Vec<f32>> = tasks
            .iter()
            .map(|(_, m)| h.solve(&observe(m), m, s.problems, p))
            .collect::<Result<_>>()?;
        let secs = t.elapsed().as_secs_f64() / (tasks.len() * s.problems) as f64;
        rows.push(Row {
            method: name.clone(),
            start: p.start,
            steps: p.steps,
            optimizer: p.optimizer,
            tasks: tasks
                .iter()
                .zip(&answers)
                .map(|((t, _), x)| figures(t, x))
                .collect(),
            seconds_per_answer: secs,
        });
        if k == 1 {
            answers_shown = answers; // the card's defaults are what the figure shows
        }
    }
    // the figure shows the std of the first scale's answers
    let mut stds = Vec::new();
    let mut spread = Vec::new();
    for &scale in s.spread_scales.iter().filter(|_| s.answers >= 2) {
        eprintln!(
            "conditional: spread of {} one-call answers, noise_scale {scale}",
            s.answers
        );
        let mut tasks_spread = Vec::new();
        for (t, mask) in &tasks {
            let draws: Vec<Vec<f32>> = (0..s.answers as u64)
                .map(|seed| {
                    let p = ffi::piddm_solve_params {
                        seed,
                        noise_scale: scale,
                        ..one_call
                    };
                    h.solve(&observe(mask), mask, s.problems, &p)
                })
                .collect::<Result<_>>()?;
            let unknown = Unknown::of_mask(mask, c, plane);
            let e = ensemble(&draws, &truth, &unknown);
            tasks_spread.push(TaskSpread {
                task: t.name.to_string(),
                coverage: e.coverage,
                determined: e.determined,
                mean_answer: figures(t, &e.mean),
            });
            if spread.is_empty() {
                stds.push(e.std);
            }
        }
        spread.push(Spread {
            answers: s.answers,
            noise_scale: scale,
            tasks: tasks_spread,
        });
    }
    let calibrated = match (&card.spread, s.answers >= 2) {
        (Some(_), true) => {
            eprintln!(
                "conditional: piddm_solve_spread, {} answers, the card's calibration",
                s.answers
            );
            let t0 = Instant::now();
            let mut tasks_spread = Vec::new();
            let mut std_scales = Vec::new();
            for (t, mask) in &tasks {
                let (mean, std, scales) =
                    h.solve_spread(&observe(mask), mask, s.problems, s.answers, &one_call)?;
                let unknown = Unknown::of_mask(mask, c, plane);
                let (coverage, determined) = band_scaled(&mean, &std, &scales, &truth, &unknown);
                tasks_spread.push(TaskSpread {
                    task: t.name.to_string(),
                    coverage,
                    determined,
                    mean_answer: figures(t, &mean),
                });
                std_scales.push(scales[0]);
            }
            Some(Calibrated {
                answers: s.answers,
                tasks: tasks_spread,
                std_scales,
                seconds_per_observation: t0.elapsed().as_secs_f64()
                    / (tasks.len() * s.problems) as f64,
            })
        }
        _ => None,
    };
    // figure, per problem: the truth's channels; each task's answer (the card's defaults) on the
    // channels it is scored on; the forward answer's error; the spread of the sparse answers
    std::fs::create_dir_all(out)?;
    let fig = out.join("conditional.png");
    let names: Vec<&str> = pde.channels().iter().map(|c| c.0).collect();
    let pick = |v: &[f32], p: usize, ch: usize| {
        v[p * field + ch * plane..p * field + (ch + 1) * plane].to_vec()
    };
    // the channels the family shows (all, or a few of many levels)
    let family = pde.family();
    let shown = family.figure_channels();
    let column = |title: String, k: usize| Column::of(title, family.signed(k));
    // each task's scored channels among those shown
    let wanted = |(t, mask): &(ProblemTask, Vec<u8>)| -> Vec<usize> {
        let first: Vec<f32> = mask[..field].iter().map(|&v| v as f32).collect();
        let mut ch: Vec<usize> = match &t.scored {
            Some(parts) => parts.iter().flat_map(|p| p.channels()).collect(),
            None => family
                .unobserved_parts(&first, plane)
                .iter()
                .flat_map(|p| p.channels())
                .collect(),
        };
        ch.dedup();
        ch.retain(|k| shown.contains(k));
        ch
    };
    let mut columns_fig: Vec<Column> = shown.iter().map(|&k| column(names[k].into(), k)).collect();
    for t in &tasks {
        columns_fig.extend(
            wanted(t)
                .iter()
                .map(|&k| column(format!("{} {}", t.0.name, names[k]), k)),
        );
    }
    let fwd = wanted(&tasks[0]);
    columns_fig.extend(
        fwd.iter()
            .map(|&k| Column::error(format!("error of forward {}", names[k]))),
    );
    let sparse_ch = wanted(&tasks[2]);
    if !stds.is_empty() {
        columns_fig.extend(
            sparse_ch
                .iter()
                .map(|&k| Column::field(format!("std of sparse {}", names[k]))),
        );
    }
    let rows_fig: Vec<Vec<Vec<f32>>> = (0..s.problems.min(4))
        .map(|p| {
            let mut r: Vec<Vec<f32>> = shown.iter().map(|&k| pick(&truth, p, k)).collect();
            for (t, x) in tasks.iter().zip(&answers_shown) {
                r.extend(wanted(t).iter().map(|&k| pick(x, p, k)));
            }
            r.extend(fwd.iter().map(|&k| {
                pick(&answers_shown[0], p, k)
                    .iter()
                    .zip(pick(&truth, p, k))
                    .map(|(a, b)| a - b)
                    .collect()
            }));
            if let Some(sd) = stds.get(2) {
                r.extend(sparse_ch.iter().map(|&k| pick(sd, p, k)));
            }
            r
        })
        .collect();
    save_fields(&fig, &rows_fig, nx, &columns_fig, 4)?;
    Ok(Report {
        command,
        pde: pde.name().to_string(),
        settings: s.clone(),
        card_defaults: card.defaults.clone(),
        rows,
        spread,
        calibrated,
        figure: fig.display().to_string(),
    })
}

pub fn markdown(r: &Report) -> String {
    let s = &r.settings;
    let rows: Vec<TableRow> = r
        .rows
        .iter()
        .map(|row| TableRow {
            lead: vec![row.method.clone()],
            tasks: &row.tasks,
            last: format!("{:.4}", row.seconds_per_answer),
        })
        .collect();
    let mut t = format!(
        "Conditional answers of `{}` through the C ABI on {} fresh {} problems (seed {}), `{}`.\n\n{}",
        s.model.display(),
        s.problems,
        r.pde,
        s.seed,
        r.command,
        task_table(&["method"], "s per answer", &rows)
    );
    for sp in &r.spread {
        let (cover, means) = spread_words(&sp.tasks);
        t += &format!(
            "\nSpread of {} one-call answers per observation (seeds 0 to {}, noise_scale {}): the \
             truth lies within mean +- 2 std at {cover} of the unknown points. The answers' mean as \
             the answer, median (mean): {means}.\n",
            sp.answers,
            sp.answers - 1,
            sp.noise_scale,
        );
    }
    if let Some(c) = &r.calibrated {
        let (cover, means) = spread_words(&c.tasks);
        let scales: Vec<String> = c
            .tasks
            .iter()
            .zip(&c.std_scales)
            .map(|(t, v)| format!("{} {v:.2}", t.task))
            .collect();
        t += &format!(
            "\nCalibrated spread (`piddm_solve_spread`, {} answers, the card's std scales: {}; \
             {:.3} s per observation): the truth lies within mean +- 2 std at {cover} of the \
             unknown points. The mean as the answer: {means}.\n",
            c.answers,
            scales.join(", "),
            c.seconds_per_observation
        );
    }
    t += &format!(
        "\nFigure `{}`: rows are problems; columns: the true fields, each task's answer (the card's \
         defaults) on what it is scored on, the forward answer's error, and the std over the \
         one-call answers to the sparse observation.\n",
        r.figure
    );
    t
}

/// `piddm-train conditional`: the report written to `out` (conditional.json, .md, .png); returns
/// the markdown.
pub fn run_to(s: &Settings, command: String, out: &Path) -> Result<String> {
    let r = run(s, command, out)?;
    let md = markdown(&r);
    crate::util::fs::write_report(out, "conditional", &r, &md)?;
    Ok(md)
}
