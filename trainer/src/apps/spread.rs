//! The calibration of an exported model's spread: K one-call answers to each observation of
//! held-out problems (none of them training, evaluation or `conditional`'s), per task the factor on
//! their std that makes mean +- 2 std cover the truth at the asked share of the unknown points
//! (split conformal prediction, `metrics::conformal_scale`), written into the model's card, where
//! `piddm_solve_spread` reads it. Runs through the C ABI, as the model is used.

use super::capi::Handle;
use super::conditional::{observe, tasks};
use super::examples::{card_pde, problems};
use crate::eval::metrics::{band_scaled, conformal_scale, ensemble, Unknown};
use crate::pde::{Grid, SPARSE_FRACTION};
use anyhow::{ensure, Result};
use piddm::card::{SpreadCalibration, SpreadTask};
use piddm::ffi;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Calibration problems' seed: differs from training (1), evaluation (2), `conditional`'s fresh
/// problems (7919) and the examples'.
pub const CALIBRATION_SEED: u64 = 104_729;

#[derive(Clone, Debug, Serialize, clap::Args)]
pub struct Settings {
    /// The model whose card receives the calibration (every file of the artifact is re-sealed).
    #[arg(long)]
    pub model: PathBuf,
    /// Held-out problems (their points are correlated within a problem: the quantile settles
    /// with the number of problems, not of points).
    #[arg(long, default_value_t = 64)]
    pub problems: usize,
    #[arg(long, default_value_t = CALIBRATION_SEED)]
    pub seed: u64,
    /// Answers per observation (K).
    #[arg(long, default_value_t = 8)]
    pub answers: usize,
    /// Share of the unknown points the band is to cover.
    #[arg(long, default_value_t = 0.95)]
    pub coverage: f64,
    /// Scale of z the answers are drawn at (1: as the encoder was trained).
    #[arg(long, default_value_t = 1.0)]
    pub noise_scale: f64,
    /// Share of the points the sparse task observes.
    #[arg(long, default_value_t = SPARSE_FRACTION)]
    pub sparse: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TaskRow {
    pub task: String,
    pub given: String,
    pub observed: Vec<f64>,
    /// Coverage of mean +- 2 std before and after the scale, on these problems.
    pub coverage_raw: f64,
    pub coverage_calibrated: f64,
    pub determined: f64,
    pub std_scale: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub pde: String,
    pub settings: Settings,
    pub tasks: Vec<TaskRow>,
    pub calibration: SpreadCalibration,
}

/// Fits the calibration on `s.problems` problems; the card is not touched.
pub fn fit(s: &Settings, command: String) -> Result<Report> {
    ensure!(s.problems >= 1, "at least one problem");
    ensure!(s.answers >= 2, "at least two answers per observation");
    ensure!(
        s.coverage > 0.0 && s.coverage < 1.0,
        "coverage must lie between 0 and 1, got {}",
        s.coverage
    );
    ensure!(
        s.noise_scale.is_finite() && s.noise_scale > 0.0,
        "noise_scale must be finite and > 0, got {}",
        s.noise_scale
    );
    let h = Handle::load(&s.model)?;
    ensure!(
        h.has_amortised()?,
        "{} has no amortised part: its answers have no spread over seeds to calibrate",
        s.model.display()
    );
    let card = crate::export::read_card(&s.model)?.0;
    let pde = card_pde(&card)?;
    let truth = problems(&card, s.problems, s.seed)?.data;
    let (c, ny, nx) = h.shape()?;
    let plane = ny * nx;
    let grid = Grid::new(nx)?;
    let one_call = ffi::piddm_solve_params {
        steps: 0,
        start: ffi::piddm_start::PIDDM_START_AMORTISED as i32,
        noise_scale: s.noise_scale,
        ..h.defaults()?
    };
    let mut rows = Vec::new();
    for (t, mask) in &tasks(&pde, grid, s.problems, s.sparse, s.seed) {
        eprintln!("calibrate: {} answers to the {} task", s.answers, t.name);
        let observed = observe(&truth, mask);
        let draws: Vec<Vec<f32>> = (0..s.answers as u64)
            .map(|seed| {
                h.solve(&observed, mask, s.problems, &{
                    ffi::piddm_solve_params { seed, ..one_call }
                })
            })
            .collect::<Result<_>>()?;
        let unknown = Unknown::of_mask(mask, c, plane);
        let e = ensemble(&draws, &truth, &unknown);
        let scale = conformal_scale(&e.mean, &e.std, &truth, &unknown, s.coverage).unwrap_or(1.0);
        let wide: Vec<f32> = e.std.iter().map(|v| v * scale as f32).collect();
        let observed_share = piddm::card::observed_shares(mask, c, plane);
        rows.push(TaskRow {
            task: t.name.to_string(),
            given: t.observed.clone(),
            observed: observed_share,
            coverage_raw: e.coverage,
            coverage_calibrated: band_scaled(&e.mean, &wide, &[scale], &truth, &unknown).0,
            determined: e.determined,
            std_scale: scale,
        });
    }
    let calibration = SpreadCalibration {
        noise_scale: s.noise_scale,
        answers: s.answers,
        coverage: s.coverage,
        problems: s.problems,
        seed: s.seed,
        tasks: rows
            .iter()
            .map(|r| SpreadTask {
                task: r.task.clone(),
                given: r.given.clone(),
                observed: r.observed.clone(),
                std_scale: r.std_scale,
            })
            .collect(),
    };
    Ok(Report {
        command,
        pde: pde.name().to_string(),
        settings: s.clone(),
        tasks: rows,
        calibration,
    })
}

pub fn markdown(r: &Report) -> String {
    let s = &r.settings;
    let mut t = format!(
        "Spread calibration of `{}` ({}): {} one-call answers (noise_scale {}) to each observation \
         of {} held-out problems (seed {}), the std scale that makes mean +- 2 std cover {:.0} % \
         of the unknown points (split conformal), `{}`.\n\n\
         | task | observed | determined (left out) | coverage of mean +- 2 std | std scale | coverage after |\n\
         |---|---|---|---|---|---|\n",
        s.model.display(),
        r.pde,
        s.answers,
        s.noise_scale,
        s.problems,
        s.seed,
        100.0 * s.coverage,
        r.command
    );
    for row in &r.tasks {
        // every unknown point determined: no band to calibrate (the scale stays 1)
        let pct = |v: f64| {
            if row.determined < 1.0 {
                format!("{:.1} %", 100.0 * v)
            } else {
                "-".to_string()
            }
        };
        t += &format!(
            "| {} | {} | {:.1} % | {} | {:.3} | {} |\n",
            row.task,
            row.given,
            100.0 * row.determined,
            pct(row.coverage_raw),
            row.std_scale,
            pct(row.coverage_calibrated)
        );
    }
    t
}

/// `piddm-train calibrate`: fits the calibration, writes it into every file of the model's card
/// (re-sealed) and the report to `out` (spread.json, spread.md); returns the markdown.
pub fn run_to(s: &Settings, command: String, out: &Path) -> Result<String> {
    let r = fit(s, command)?;
    let cal = r.calibration.clone();
    crate::export::reseal_with(&s.model, |card| card.spread = Some(cal))?;
    let md = markdown(&r);
    crate::util::fs::write_report(out, "spread", &r, &md)?;
    Ok(md)
}
