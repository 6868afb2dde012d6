//! The end-to-end demo on a shipped model, through the runtime (`piddm::Model` on ONNX Runtime, the
//! same path a C or Fortran solver takes): fresh Darcy problems from the numerical solver, then
//! one-step generation, forward (a -> u) and inverse (u -> a) solves, with figures.

use crate::plot::save_fields;
use anyhow::Result;
use piddm::{Model, Options};
use std::path::Path;

pub fn run(model_path: &Path, problems: usize, seed: u64, out: &Path) -> Result<String> {
    let t0 = std::time::Instant::now();
    let model = Model::load(model_path, &Options::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let card = model.card();
    let (_, ny, nx) = model.shape();
    let problems_file = crate::examples::darcy_problems(model.card(), problems, seed)?;
    let (field, plane) = (model.field_len(), nx * ny);
    // the first two channels (a, u) are the model's fields
    let truth: Vec<f32> = (0..problems)
        .flat_map(|p| {
            problems_file.data[p * 3 * plane..(p * 3 + 2) * plane]
                .iter()
                .copied()
        })
        .collect();
    let e = |e: piddm::Error| anyhow::anyhow!("{e}");
    // one-step generation and its residual, against the solver's own
    let mut gen = vec![0f32; problems * field];
    model.generate(seed, problems, &mut gen).map_err(e)?;
    let mut r = vec![0f32; problems * plane];
    let res_gen = model.residual(&gen, problems, &mut r).map_err(e)?;
    let res_truth = model
        .residual(&truth, problems, &mut vec![0f32; problems * plane])
        .map_err(e)?;
    // forward: all of a observed; inverse: all of u observed
    let params_solve = model.default_solve_params();
    let mask_for = |ch: usize| -> Vec<u8> {
        (0..problems * field)
            .map(|i| ((i % field) / plane == ch) as u8)
            .collect()
    };
    let (mut fwd, mut inv) = (vec![0f32; problems * field], vec![0f32; problems * field]);
    let t = std::time::Instant::now();
    model
        .solve(&truth, &mask_for(0), problems, &params_solve, &mut fwd)
        .map_err(e)?;
    model
        .solve(&truth, &mask_for(1), problems, &params_solve, &mut inv)
        .map_err(e)?;
    let solve_s = t.elapsed().as_secs_f64() / (2 * problems) as f64;
    let thr = card.pde.threshold.unwrap_or(7.5) as f32;
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let rel = mean(crate::diagnose::per_problem(&fwd, &truth, field, plane, thr).0);
    let err = mean(crate::diagnose::per_problem(&inv, &truth, field, plane, thr).1);
    let pick = |v: &[f32], p: usize, ch: usize| {
        v[p * field + ch * plane..p * field + (ch + 1) * plane].to_vec()
    };
    let figs: Vec<Vec<Vec<f32>>> = (0..problems.min(4))
        .map(|p| {
            vec![
                pick(&truth, p, 0),
                pick(&truth, p, 1),
                pick(&fwd, p, 1),
                pick(&inv, p, 0),
                pick(&gen, p, 0),
                pick(&gen, p, 1),
                r[p * plane..(p + 1) * plane].to_vec(),
            ]
        })
        .collect();
    std::fs::create_dir_all(out)?;
    save_fields(&out.join("demo.png"), &figs, nx, |k| k == 6, 4)?;
    let report = format!(
        "piddm demo: {} ({}x{} Darcy, lambda_train {:e}), {problems} fresh problems from the solver (seed {seed})\n\
         | quantity | value |\n|---|---|\n\
         | residual of one-step samples (mean R^2, interior) | {res_gen:.3e} |\n\
         | residual of the solver's solutions | {res_truth:.3e} |\n\
         | forward (all of a given): relative L2 of u | {:.2} % |\n\
         | inverse (all of u given): error rate of a (threshold {thr}) | {:.2} % |\n\
         | seconds per answer (the card's defaults: {} start, {} {:?} steps, lambda_infer {:e}) | {solve_s:.4} |\n\
         | total time | {:.1} s |\n\
         figure: {} (rows: problems; columns: a, u, forward u, inverse a, generated a, generated u, its residual)\n",
        model_path.display(), nx, ny, card.lambda_train, 100.0 * rel, 100.0 * err,
        if model.has_amortised() { "amortised" } else { "random" },
        params_solve.steps, params_solve.optimizer, params_solve.lambda_infer,
        t0.elapsed().as_secs_f64(), out.join("demo.png").display()
    );
    Ok(report)
}
