//! Every stage in order, into one run directory; an interrupted pipeline continues where it stopped.

use crate::config::Preset;
use crate::data::{dataset, Dataset};
use crate::eval::evaluate::{self, EvalInputs, Report};
use crate::pde::Grid;
use crate::stages::{encoder, student, teacher, RunPaths};
use crate::train::Outcome;
use anyhow::{bail, Result};
use std::path::Path;

/// Loads the data set at `path` if it is the one asked for, else generates and writes it.
pub fn ensure_data(preset: &Preset, path: &Path, count: usize, seed: u64) -> Result<Dataset> {
    if path.exists() {
        let d = Dataset::load(path)?;
        if d.meta.count == count
            && d.meta.seed == seed
            && d.meta.grid.n == preset.data.res
            && d.meta.pde == preset.data.pde
        {
            return Ok(d);
        }
        bail!("{} holds another data set ({} samples, seed {}); remove it or use another run directory", path.display(), d.meta.count, d.meta.seed);
    }
    let d = dataset::generate(preset.data.pde, Grid::new(preset.data.res)?, count, seed)?;
    d.save(path)?;
    Ok(d)
}

/// Runs every stage of `preset` into `dir` (default `runs/<preset>`).
pub fn run(preset: &Preset, dir: &Path, command: String) -> Result<Option<Report>> {
    let p = RunPaths::new(dir);
    std::fs::create_dir_all(dir)?;
    let t0 = std::time::Instant::now();
    let stage = |name: &str| eprintln!("== {name} ({:.0} s)", t0.elapsed().as_secs_f64());
    stage("data");
    let train = ensure_data(preset, &p.train, preset.data.train, preset.data.seed)?;
    ensure_data(preset, &p.test, preset.data.test, preset.data.test_seed)?;
    stage("teacher");
    if teacher::train_teacher(preset, &train, &p.teacher, true, None)? == Outcome::Stopped {
        return Ok(None);
    }
    stage("student, lambda_train = 0");
    if student::distill(
        preset,
        &p.teacher,
        student::Physics::NONE,
        &p.student_lambda0,
        true,
        None,
    )? == Outcome::Stopped
    {
        return Ok(None);
    }
    stage("student, physics-informed");
    if student::distill(
        preset,
        &p.teacher,
        student::Physics::of(preset),
        &p.student,
        true,
        None,
    )? == Outcome::Stopped
    {
        return Ok(None);
    }
    if preset.amortise.is_some() {
        stage("amortised encoder");
        if encoder::train_encoder(preset, &p.student, &train, &p.encoder, true, None, None)?
            == Outcome::Stopped
        {
            return Ok(None);
        }
    }
    drop(train);
    stage("evaluation");
    let inputs = EvalInputs {
        teacher: Some(&p.teacher),
        student_lambda0: Some(&p.student_lambda0),
        student: &p.student,
        test: &p.test,
        out: &p.eval,
        command,
    };
    let report = evaluate::evaluate(preset, &inputs)?;
    stage("done");
    print!("{}", evaluate::markdown(&report));
    Ok(Some(report))
}
