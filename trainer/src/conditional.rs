//! Conditional answers of an exported model on fresh Darcy problems, through the C ABI (the calls a
//! C or Fortran solver makes): forward (all of a given), inverse (all of u given) and inverse from a
//! few points of u, for the one-call answer, the card's defaults and the published solve; and the
//! spread of several one-call answers to one observation.

use crate::diagnose::{ensemble, figure, per_problem, Ensemble, Figure};
use crate::examples::{darcy_problems, FieldFile};
use crate::plot::{save_fields, Column};
use anyhow::{ensure, Context, Result};
use piddm::ffi;
use serde::Serialize;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug, Serialize, clap::Args)]
pub struct Settings {
    #[arg(long, default_value = "examples/models/darcy32.onnx")]
    pub model: PathBuf,
    #[arg(long, default_value_t = 32)]
    pub problems: usize,
    /// Differs from the training (1) and evaluation (2) seeds.
    #[arg(long, default_value_t = 7919)]
    pub seed: u64,
    /// Share of u's points observed in the sparse inverse problem.
    #[arg(long, default_value_t = 0.03)]
    pub sparse: f64,
    /// One-call answers per observation for the spread.
    #[arg(long, default_value_t = 8)]
    pub answers: usize,
    /// Also run the published solve (random start, 200 Adam steps, learning rate 0.05).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub published: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub method: String,
    pub start: i32,
    pub steps: i64,
    pub optimizer: i32,
    /// Relative L2 error of u, all of a given.
    pub forward_rel_l2_u: Figure,
    /// Error rate of the thresholded a, all of u given.
    pub inverse_error_rate_a: Figure,
    /// Error rate of a from the sparse points of u.
    pub sparse_error_rate_a: Figure,
    /// Wall seconds per answer (each task solved for all problems in one call).
    pub seconds_per_answer: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Spread {
    pub answers: usize,
    /// Share of the unknown points where the truth lies within mean +- 2 std of the answers.
    pub coverage_forward_u: f64,
    pub coverage_inverse_a: f64,
    pub coverage_sparse: f64,
    /// The answers' mean as the answer.
    pub mean_forward_rel_l2_u: Figure,
    pub mean_inverse_error_rate_a: Figure,
    pub mean_sparse_error_rate_a: Figure,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub settings: Settings,
    pub card_defaults: piddm::card::SolveDefaults,
    pub rows: Vec<Row>,
    pub spread: Option<Spread>,
    pub figure: String,
}

/// A model loaded through the C ABI.
struct Handle(*mut ffi::piddm_model);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a handle from piddm_model_load, freed once.
        unsafe { ffi::piddm_model_free(&mut self.0) };
    }
}

fn check(s: piddm::Status, what: &str) -> Result<()> {
    if s != piddm::Status::PIDDM_OK {
        // SAFETY: piddm_last_error returns a NUL-terminated thread-local string.
        let msg = unsafe { std::ffi::CStr::from_ptr(ffi::piddm_last_error()) };
        anyhow::bail!("{what}: {s:?}: {}", msg.to_string_lossy());
    }
    Ok(())
}

impl Handle {
    fn load(path: &Path) -> Result<Self> {
        let c = CString::new(path.to_str().context("model path")?)?;
        let mut h = std::ptr::null_mut();
        // SAFETY: valid C string, NULL options (defaults), out-pointer to a local.
        check(
            unsafe { ffi::piddm_model_load(c.as_ptr(), std::ptr::null(), &mut h) },
            "piddm_model_load",
        )?;
        Ok(Handle(h))
    }

    fn defaults(&self) -> Result<ffi::piddm_solve_params> {
        // SAFETY: all-zero is a valid value of this plain C struct; init then fills it.
        let mut p: ffi::piddm_solve_params = unsafe { std::mem::zeroed() };
        // SAFETY: live handle, struct of this library's size.
        check(
            unsafe { ffi::piddm_solve_params_init(self.0, &mut p, std::mem::size_of_val(&p)) },
            "piddm_solve_params_init",
        )?;
        Ok(p)
    }

    fn solve(
        &self,
        observed: &[f32],
        mask: &[u8],
        batch: usize,
        p: &ffi::piddm_solve_params,
    ) -> Result<Vec<f32>> {
        let mut out = vec![0f32; observed.len()];
        // SAFETY: live handle; observed, mask and out hold batch x field values (checked by the
        // library against the model's shape); NULL report.
        check(
            unsafe {
                ffi::piddm_solve(
                    self.0,
                    observed.as_ptr(),
                    mask.as_ptr(),
                    batch,
                    p,
                    out.as_mut_ptr(),
                    out.len(),
                    std::ptr::null_mut(),
                )
            },
            "piddm_solve",
        )?;
        Ok(out)
    }
}

/// The three tasks' masks over the problems: forward, inverse, sparse inverse.
fn masks(f: &FieldFile, field: usize, sparse: f64, seed: u64) -> [Vec<u8>; 3] {
    use rand::{Rng, SeedableRng};
    let plane = f.plane();
    let n = f.count * field;
    let channel =
        |ch: usize| -> Vec<u8> { (0..n).map(|i| ((i % field) / plane == ch) as u8).collect() };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5A5E);
    let pts: Vec<u8> = (0..n)
        .map(|i| ((i % field) / plane == 1 && rng.random::<f64>() < sparse) as u8)
        .collect();
    [channel(0), channel(1), pts]
}

pub fn run(s: &Settings, command: String, out: &Path) -> Result<Report> {
    ensure!(s.problems >= 1, "at least one problem");
    let h = Handle::load(&s.model)?;
    let card = crate::export::read_card(&s.model)?.0;
    let problems = darcy_problems(&card, s.problems, s.seed)?;
    let (ny, nx) = (problems.ny, problems.nx);
    let plane = ny * nx;
    let field = 2 * plane;
    let truth: Vec<f32> = (0..s.problems)
        .flat_map(|p| {
            problems.data[p * 3 * plane..(p * 3 + 2) * plane]
                .iter()
                .copied()
        })
        .collect();
    let thr = card
        .pde
        .threshold
        .context("the card names no threshold of a")? as f32;
    let tasks = masks(&problems, field, s.sparse, s.seed);
    let observe = |m: &[u8]| -> Vec<f32> {
        truth
            .iter()
            .zip(m)
            .map(|(&t, &k)| if k != 0 { t } else { f32::NAN })
            .collect()
    };
    let mut has = 0i32;
    // SAFETY: live handle, out-pointer to a local.
    check(
        unsafe { ffi::piddm_model_has_amortised(h.0, &mut has) },
        "has_amortised",
    )?;
    ensure!(
        has == 1,
        "{} has no amortised part: its conditional answers are the published solve's (piddm-train eval)",
        s.model.display()
    );
    let defaults = h.defaults()?;
    let mut methods = vec![
        (
            "one call (amortised start, no steps)".to_string(),
            ffi::piddm_solve_params {
                steps: 0,
                start: ffi::piddm_start::PIDDM_START_AMORTISED as i32,
                ..defaults
            },
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
    let mut shown = Vec::new();
    for (k, (name, p)) in methods.iter().enumerate() {
        eprintln!("conditional: {name}");
        let t = Instant::now();
        let answers: Vec<Vec<f32>> = tasks
            .iter()
            .map(|m| h.solve(&observe(m), m, s.problems, p))
            .collect::<Result<_>>()?;
        let secs = t.elapsed().as_secs_f64() / (3 * s.problems) as f64;
        let f = per_problem(&answers[0], &truth, field, plane, thr).0;
        let i = per_problem(&answers[1], &truth, field, plane, thr).1;
        let sp = per_problem(&answers[2], &truth, field, plane, thr).1;
        rows.push(Row {
            method: name.clone(),
            start: p.start,
            steps: p.steps,
            optimizer: p.optimizer,
            forward_rel_l2_u: figure(&f),
            inverse_error_rate_a: figure(&i),
            sparse_error_rate_a: figure(&sp),
            seconds_per_answer: secs,
        });
        if k == 1 {
            shown = answers; // the card's defaults are what the figure shows
        }
    }
    let spread = if s.answers >= 2 {
        eprintln!("conditional: spread of {} one-call answers", s.answers);
        let mut e = Vec::new();
        for m in &tasks {
            let draws: Vec<Vec<f32>> = (0..s.answers as u64)
                .map(|seed| {
                    let p = ffi::piddm_solve_params {
                        seed,
                        ..methods[0].1
                    };
                    h.solve(&observe(m), m, s.problems, &p)
                })
                .collect::<Result<_>>()?;
            let unknown: Vec<bool> = m.iter().map(|&k| k == 0).collect();
            e.push(ensemble(&draws, &truth, &unknown));
        }
        let metric = |e: &Ensemble| per_problem(&e.mean, &truth, field, plane, thr);
        let sp = Spread {
            answers: s.answers,
            coverage_forward_u: e[0].coverage,
            coverage_inverse_a: e[1].coverage,
            coverage_sparse: e[2].coverage,
            mean_forward_rel_l2_u: figure(&metric(&e[0]).0),
            mean_inverse_error_rate_a: figure(&metric(&e[1]).1),
            mean_sparse_error_rate_a: figure(&metric(&e[2]).1),
        };
        shown.push(e.swap_remove(2).std);
        Some(sp)
    } else {
        None
    };
    // figure: per problem a, u, forward u and its error, inverse a, sparse-inverse a (and its std)
    std::fs::create_dir_all(out)?;
    let fig = out.join("conditional.png");
    let pick = |v: &[f32], p: usize, ch: usize| {
        v[p * field + ch * plane..p * field + (ch + 1) * plane].to_vec()
    };
    let rows_fig: Vec<Vec<Vec<f32>>> = (0..s.problems.min(4))
        .map(|p| {
            let err: Vec<f32> = pick(&shown[0], p, 1)
                .iter()
                .zip(pick(&truth, p, 1))
                .map(|(a, b)| a - b)
                .collect();
            let mut r = vec![
                pick(&truth, p, 0),
                pick(&truth, p, 1),
                pick(&shown[0], p, 1),
                err,
                pick(&shown[1], p, 0),
                pick(&shown[2], p, 0),
            ];
            if let Some(sd) = shown.get(3) {
                r.push(pick(sd, p, 0));
            }
            r
        })
        .collect();
    let columns = [
        Column::field("a"),
        Column::field("u"),
        Column::field("forward u (one call)"),
        Column::error("its error"),
        Column::field("inverse a (one call)"),
        Column::field("a from 3 % of u"),
        Column::field("std of a from 3 % of u"),
    ];
    save_fields(&fig, &rows_fig, nx, &columns, 4)?;
    Ok(Report {
        command,
        settings: s.clone(),
        card_defaults: card.defaults.clone(),
        rows,
        spread,
        figure: fig.display().to_string(),
    })
}

pub fn markdown(r: &Report) -> String {
    let s = &r.settings;
    let mut t = format!(
        "Conditional answers of `{}` through the C ABI on {} fresh Darcy problems (seed {}), `{}`.\n\n\
         | method | forward (all of a): rel. L2 of u, median (mean) | inverse (all of u): error rate of a | inverse ({:.0} % of u): error rate of a | s per answer |\n|---|---|---|---|---|\n",
        s.model.display(), s.problems, s.seed, r.command, 100.0 * s.sparse
    );
    let pct = |f: &Figure| format!("{:.2} % ({:.2} %)", 100.0 * f.median, 100.0 * f.mean);
    for row in &r.rows {
        t += &format!(
            "| {} | {} | {} | {} | {:.4} |\n",
            row.method,
            pct(&row.forward_rel_l2_u),
            pct(&row.inverse_error_rate_a),
            pct(&row.sparse_error_rate_a),
            row.seconds_per_answer
        );
    }
    if let Some(sp) = &r.spread {
        t += &format!(
            "\nSpread of {} one-call answers per observation (seeds 0 to {}): the truth lies within mean +- 2 std \
             at {:.1} % of the unknown points of the forward problem (u), {:.1} % of the inverse (a), \
             {:.1} % of the sparse inverse (a and the unobserved u). The answers' mean as the answer: \
             forward {}, inverse {}, sparse inverse {}.\n",
            sp.answers,
            sp.answers - 1,
            100.0 * sp.coverage_forward_u,
            100.0 * sp.coverage_inverse_a,
            100.0 * sp.coverage_sparse,
            pct(&sp.mean_forward_rel_l2_u),
            pct(&sp.mean_inverse_error_rate_a),
            pct(&sp.mean_sparse_error_rate_a)
        );
    }
    t += &format!(
        "\nFigure `{}`: rows are problems; columns: true a, true u, forward u (card's defaults), its error, inverse a, \
         sparse-inverse a, and the std of a over the one-call answers to the sparse observation.\n",
        r.figure
    );
    t
}
