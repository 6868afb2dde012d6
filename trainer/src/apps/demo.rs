//! The end-to-end demo on a shipped model, through the runtime (`piddm::Model` on ONNX Runtime, the
//! same path a C or Fortran solver takes): fresh problems of the model's PDE from its numerical
//! solver, then one-step generation, forward and inverse solves, with figures.

use crate::pde::Task;
use crate::util::plot::{save_fields, Column};
use anyhow::Result;
use piddm::{Model, Options};
use std::path::Path;

pub fn run(
    model_path: &Path,
    problems: usize,
    seed: u64,
    out: &Path,
    precision: piddm::card::Precision,
) -> Result<String> {
    let t0 = std::time::Instant::now();
    let options = Options {
        precision,
        ..Options::default()
    };
    let model = Model::load(model_path, &options).map_err(|e| anyhow::anyhow!("{e}"))?;
    let card = model.card();
    let pde = super::examples::card_pde(card)?;
    let family = pde.family();
    let names: Vec<&str> = pde.channels().iter().map(|c| c.0).collect();
    let (_, ny, nx) = model.shape();
    let truth = super::examples::problems(card, problems, seed)?.data;
    let (field, plane) = (model.field_len(), nx * ny);
    let e = |e: piddm::Error| anyhow::anyhow!("{e}");
    // one-step generation and its residual, against the solver's own
    let mut gen = vec![0f32; problems * field];
    model.generate(seed, problems, &mut gen).map_err(e)?;
    let rc = model.residual_channels();
    let mut r = vec![0f32; problems * rc * plane];
    let res_gen = model.residual(&gen, problems, &mut r).map_err(e)?;
    let res_truth = model
        .residual(&truth, problems, &mut vec![0f32; problems * rc * plane])
        .map_err(e)?;
    let grid = crate::pde::Grid::new(nx)?;
    let gen64: Vec<f64> = gen.iter().map(|&v| v as f64).collect();
    let (rel_gen, cons_gen) = crate::eval::metrics::physical(&pde, grid, &gen64)?;
    let params_solve = model.default_solve_params();
    let pick = |v: &[f32], p: usize, ch: usize| {
        v[p * field + ch * plane..p * field + (ch + 1) * plane].to_vec()
    };
    let mut rows = String::new();
    let mut answers = Vec::new();
    let t = std::time::Instant::now();
    for (task, name) in [(Task::Forward, "forward"), (Task::Inverse, "inverse")] {
        let one = family.task_mask(task, grid);
        let mask: Vec<u8> = (0..problems * field)
            .map(|i| (one[i % field] > 0.0) as u8)
            .collect();
        let mut x = vec![0f32; problems * field];
        model
            .solve(&truth, &mask, problems, &params_solve, &mut x)
            .map_err(e)?;
        let scored = family.scored(task, grid);
        for s in &scored {
            let metric = family.metric(s.channel);
            let v = (0..problems)
                .map(|p| {
                    let at = |v: &[f32]| s.pick_scored(&v[p * field..(p + 1) * field], plane);
                    metric.of(&at(&x), &at(&truth))
                })
                .sum::<f64>()
                / problems as f64;
            rows += &format!(
                "| {name} ({} given): {} of {} | {:.2} % |\n",
                family.given(task),
                metric.label(),
                s.label,
                100.0 * v
            );
        }
        let mut wanted: Vec<usize> = scored.iter().flat_map(|s| s.channels()).collect();
        wanted.dedup();
        answers.push((x, wanted));
    }
    let solve_s = t.elapsed().as_secs_f64() / (2 * problems) as f64;
    // the inverse answer's uncertainty: 8 answers' mean and calibrated std (piddm_solve_spread)
    if model.has_amortised() {
        let one = family.task_mask(Task::Inverse, grid);
        let mask: Vec<u8> = (0..problems * field)
            .map(|i| (one[i % field] > 0.0) as u8)
            .collect();
        let (mut mean, mut std) = (vec![0f32; problems * field], vec![0f32; problems * field]);
        let t = std::time::Instant::now();
        let scales = model
            .solve_spread(
                &truth,
                &mask,
                problems,
                8,
                &params_solve,
                &mut mean,
                &mut std,
            )
            .map_err(e)?;
        let (c, ny, nx) = model.shape();
        let unknown = crate::eval::metrics::Unknown::of_mask(&mask, c, ny * nx);
        let (cover, _) = crate::eval::metrics::band_scaled(&mean, &std, &scales, &truth, &unknown);
        rows += &format!(
            "| inverse, 8 answers (piddm_solve_spread, {}): truth within mean +- 2 std | {:.1} % ({:.3} s per observation) |\n",
            if model.card().spread.is_some() {
                format!("std scale {:.2} from the card", scales[0])
            } else {
                "uncalibrated".into()
            },
            100.0 * cover,
            t.elapsed().as_secs_f64() / problems as f64
        );
    }
    // the channels the family shows (all, or a few of many levels), each answer's wanted ones
    let shown = family.figure_channels();
    let column = |title: String, k: usize| Column::of(title, family.signed(k));
    let mut titles: Vec<Column> = shown.iter().map(|&k| column(names[k].into(), k)).collect();
    let answers: Vec<(Vec<f32>, Vec<usize>)> = answers
        .into_iter()
        .map(|(x, w)| (x, w.into_iter().filter(|k| shown.contains(k)).collect()))
        .collect();
    for ((_, wanted), task) in answers.iter().zip(["forward", "inverse"]) {
        titles.extend(
            wanted
                .iter()
                .map(|&k| column(format!("{task} {}", names[k]), k)),
        );
    }
    titles.extend(
        shown
            .iter()
            .map(|&k| column(format!("generated {}", names[k]), k)),
    );
    // the residual of the last level that carries one (the only one but for level families)
    let rk = rc - 1;
    let label = if rc > 1 {
        format!("residual of the sample, {}", names[rk])
    } else {
        "residual of the sample".into()
    };
    titles.push(Column::error(label));
    let columns: Vec<&str> = titles.iter().map(|t| t.title.as_str()).collect();
    let figs: Vec<Vec<Vec<f32>>> = (0..problems.min(4))
        .map(|p| {
            let mut row: Vec<Vec<f32>> = shown.iter().map(|&k| pick(&truth, p, k)).collect();
            for (x, wanted) in &answers {
                row.extend(wanted.iter().map(|&k| pick(x, p, k)));
            }
            row.extend(shown.iter().map(|&k| pick(&gen, p, k)));
            let at = (p * rc + rk) * plane;
            row.push(r[at..at + plane].to_vec());
            row
        })
        .collect();
    std::fs::create_dir_all(out)?;
    save_fields(&out.join("demo.png"), &figs, nx, &titles, 4)?;
    let report = format!(
        "piddm demo: {} ({}x{} {}, lambda_train {:e}, networks in {}), {problems} fresh problems from the solver (seed {seed})\n\
         | quantity | value |\n|---|---|\n\
         | residual of one-step samples (mean R^2, interior) | {res_gen:.3e} |\n\
         | residual of the solver's solutions | {res_truth:.3e} |\n\
         | relative residual of one-step samples, ||R|| / ||source term||, median (mean) | {} |\n\
         | consistency of one-step samples, ||u - S(input)|| / ||S(input)||, S the solver, median (mean) | {} |\n\
         {rows}\
         | seconds per answer (the card's defaults: {} start, {} {:?} steps, lambda_infer {:e}) | {solve_s:.4} |\n\
         | total time | {:.1} s |\n\
         figure: {} (rows: problems; columns: {})\n",
        model_path.display(), nx, ny, pde.name(), card.lambda_train, precision.name(),
        rel_gen.percent(), cons_gen.percent(),
        if model.has_amortised() { "amortised" } else { "random" },
        params_solve.steps, params_solve.optimizer, params_solve.lambda_infer,
        t0.elapsed().as_secs_f64(), out.join("demo.png").display(), columns.join(", ")
    );
    Ok(report)
}
