//! Side-by-side evaluation on a held-out test set: the teacher (N-step Heun), the student distilled
//! without physics (lambda_train = 0) and the PIDDM student; then forward and inverse problems solved
//! with the PIDDM student. Writes JSON, a markdown table and PNG figures.
//!
//! Metrics: residual = per-sample mean of R^2 over the interior (physical units), mean and std over
//! samples; MMSE / SMSE = mean over channels and points of the squared difference between the
//! generated and test-set pointwise mean / std, in normalised units (so a and u weigh the same).

use super::method::Method;
use super::metrics::{batched, gen_metrics, test_reference, ChannelError, GenMetrics};
use super::problems::draws;
use crate::checkpoint::{load_for, Role};
use crate::config::Preset;
use crate::data::Dataset;
use crate::diffusion::{sampler::heun_sample, Edm};
use crate::stages::solve::Student;
use crate::util::plot::{save_panels, Panel};
use crate::util::tensor::to_f32;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use tch::Tensor;

#[derive(Clone, Debug, Serialize)]
pub struct ProblemMetrics {
    pub problems: usize,
    pub steps: usize,
    pub lambda_infer: f64,
    /// What was given, in words ("all of a", "3 % of u").
    pub observed: String,
    pub observed_fraction: f64,
    /// Every channel not observed everywhere, with its family's metric.
    pub errors: Vec<ChannelError>,
    pub seconds_per_problem: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub preset: String,
    pub test_samples: usize,
    pub ground_truth_residual_mse: f64,
    /// One row per model, named as in the baselines' report: `teacher`, `student_lambda0` and
    /// `piddm_1` (the PIDDM student, one step).
    pub generation: BTreeMap<String, GenMetrics>,
    pub lambda_train: f64,
    pub forward: ProblemMetrics,
    pub inverse: ProblemMetrics,
    pub inverse_sparse: ProblemMetrics,
}

fn field(x: &Tensor, i: i64, c: i64) -> Vec<f32> {
    to_f32(&x.get(i).get(c))
}

/// Panels of titled fields (title, values, diverging).
fn panels(data: &[Vec<(String, Vec<f32>, bool)>]) -> Vec<Vec<Panel<'_>>> {
    data.iter()
        .map(|row| {
            row.iter()
                .map(|(title, field, diverging)| Panel {
                    title: title.clone(),
                    field,
                    diverging: *diverging,
                })
                .collect()
        })
        .collect()
}

pub struct EvalInputs<'a> {
    /// The teacher and the plain student, whose rows stand beside the PIDDM student's when given
    /// (a student evaluated alone, such as one given corrections afterwards, has neither).
    pub teacher: Option<&'a Path>,
    pub student_lambda0: Option<&'a Path>,
    pub student: &'a Path,
    pub test: &'a Path,
    pub out: &'a Path,
    pub command: String,
}

pub fn evaluate(preset: &Preset, inp: &EvalInputs) -> Result<Report> {
    let test = Dataset::load(inp.test)?;
    let teacher = inp
        .teacher
        .map(|p| load_for(p, Role::Teacher, &test.meta))
        .transpose()?;
    let s0 = inp
        .student_lambda0
        .map(|p| load_for(p, Role::Student, &test.meta))
        .transpose()?;
    let (s1, s1meta) = load_for(inp.student, Role::Student, &test.meta)?;
    let norm = &s1meta.data.normalisation;
    let op = s1meta.data.residual_op();
    let dev = s1.vs.device();
    let edm = s1meta.edm;
    let n = test.meta.grid.n as i64;
    let c = test.meta.channels.len() as i64;
    let count = preset
        .eval
        .samples
        .min(test.meta.count.max(preset.eval.samples)) as i64;
    let (truth, reference, gt_res) = test_reference(&test, norm, &op, dev)?;

    let (eps, problems) = draws(preset, &test, count, dev)?;
    let steps = s1meta.heun_steps(preset.sampler.steps);
    // (row, figure label, samples, metrics) of each model evaluated
    let mut models = Vec::new();
    if let Some((teacher, _)) = &teacher {
        eprintln!(
            "eval: teacher, {count} samples x {} NFE",
            Edm::heun_nfe(steps)
        );
        let (xt, tt) = batched(&eps, |e| {
            norm.to_physical(&heun_sample(&edm, &teacher.net, e, steps))
        });
        let m = gen_metrics(&xt, &reference, norm, &op, Edm::heun_nfe(steps), tt)?;
        models.push((Method::Teacher, "teacher", xt, m));
    }
    if let Some((s0, s0meta)) = &s0 {
        let st0 = Student::of(s0, s0meta);
        let (x0, t0) = batched(&eps, |e| st0.generate(e));
        let m = gen_metrics(&x0, &reference, norm, &op, 1, t0)?;
        models.push((Method::StudentLambda0, "student, lambda 0", x0, m));
    }
    let st1 = Student::of(&s1, &s1meta);
    let (x1, t1) = batched(&eps, |e| st1.generate(e));
    let m = gen_metrics(&x1, &reference, norm, &op, 1, t1)?;
    models.push((Method::Piddm1, "PIDDM student", x1, m));

    // Forward, inverse and sparse problems on the first test samples.
    let cfg = &preset.infer;
    let p = problems.truth.size()[0];
    let mut answers = Vec::new();
    let mut metrics = Vec::new();
    for task in &problems.tasks {
        eprintln!(
            "eval: {}, {p} problems x {} steps",
            task.observed, cfg.steps
        );
        let t = Instant::now();
        let r = st1.solve(&problems.eps, &problems.truth, &task.mask, cfg)?;
        let secs = t.elapsed().as_secs_f64() / p as f64;
        let errors = problems.score(&s1meta.data.pde, &r.x, task)?;
        metrics.push(ProblemMetrics {
            problems: p as usize,
            steps: cfg.steps,
            lambda_infer: cfg.lambda,
            observed: task.observed.clone(),
            observed_fraction: task.observed_fraction()?,
            errors,
            seconds_per_problem: secs,
        });
        answers.push(r.x);
    }
    let truth_p = &problems.truth;
    let names = &test.meta.channels;
    let [forward, inverse, inverse_sparse]: [ProblemMetrics; 3] = metrics
        .try_into()
        .map_err(|_| anyhow::anyhow!("three tasks expected"))?;
    let [xf, xi, xs]: [Tensor; 3] = answers
        .try_into()
        .map_err(|_| anyhow::anyhow!("three tasks expected"))?;

    let report = Report {
        command: inp.command.clone(),
        preset: preset.name.clone(),
        test_samples: count as usize,
        ground_truth_residual_mse: gt_res,
        generation: models
            .iter()
            .map(|(k, _, _, v)| (k.name().to_string(), v.clone()))
            .collect(),
        lambda_train: s1meta.student.as_ref().map_or(f64::NAN, |s| s.lambda_train),
        forward,
        inverse,
        inverse_sparse,
    };
    std::fs::create_dir_all(inp.out)?;
    std::fs::write(
        inp.out.join("eval.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    std::fs::write(inp.out.join("eval.md"), markdown(&report))?;

    // Figures: rows are models (two samples each), panels their channels and residual.
    let nn = n as usize;
    let with_res = |x: &Tensor| (x.shallow_clone(), op.apply(x));
    let gens: Vec<(&str, (Tensor, Tensor))> = std::iter::once(("test set", with_res(&truth)))
        .chain(models.iter().map(|(_, name, x, _)| (*name, with_res(x))))
        .collect();
    let data: Vec<Vec<(String, Vec<f32>, bool)>> = gens
        .iter()
        .map(|(name, (x, r))| {
            (0..2)
                .flat_map(|i| {
                    (0..c)
                        .map(move |k| {
                            (
                                format!("{name}: {}", names[k as usize]),
                                field(x, i, k),
                                false,
                            )
                        })
                        .chain([(format!("{name}: residual"), field(r, i, 0), true)])
                })
                .collect()
        })
        .collect();
    save_panels(&inp.out.join("samples.png"), &panels(&data), nn, 4)?;
    let problem_fig = |x: &Tensor, file: &str| -> Result<()> {
        let data: Vec<Vec<(String, Vec<f32>, bool)>> = (0..4.min(p))
            .map(|i| {
                let err = (x.get(i) - truth_p.get(i)).unsqueeze(0);
                (0..c)
                    .flat_map(|k| {
                        let ch = &names[k as usize];
                        [
                            (format!("true {ch}"), field(truth_p, i, k), false),
                            (format!("answer {ch}"), field(x, i, k), false),
                            (format!("error of {ch}"), field(&err, 0, k), true),
                        ]
                    })
                    .collect()
            })
            .collect();
        save_panels(&inp.out.join(file), &panels(&data), nn, 4)
    };
    problem_fig(&xf, "forward.png")?;
    problem_fig(&xi, "inverse.png")?;
    problem_fig(&xs, "inverse_sparse.png")?;
    Ok(report)
}

pub fn markdown(r: &Report) -> String {
    let mut s = format!(
        "# Evaluation: preset `{}`\n\nProduced by `{}`.\n\n{} generated samples against the test set; residual = per-sample mean of R^2 over the interior \
         in physical units (mean ± std over samples; the test set's own: {:.2e}); MMSE / SMSE in normalised units; \
         relative residual = ||R|| / ||source term|| and consistency = ||u - S(input)|| / ||S(input)||, S the family's \
         own solver of each sample's own input, per sample, median (mean) over the samples.\n\n\
         | model | NFE | residual | MMSE | SMSE | relative residual | consistency | s / sample |\n|---|---|---|---|---|---|---|---|\n",
        r.preset, r.command, r.test_samples, r.ground_truth_residual_mse
    );
    let piddm = format!("PIDDM student, lambda_train = {:e}", r.lambda_train);
    let rows = [
        (Method::Teacher, "teacher (EDM, Heun)"),
        (Method::StudentLambda0, "student, lambda_train = 0"),
        (Method::Piddm1, piddm.as_str()),
    ];
    for (name, m) in rows
        .iter()
        .filter_map(|(k, name)| r.generation.get(k.name()).map(|m| (name, m)))
    {
        s += &format!(
            "| {name} | {} | {:.3e} ± {:.2e} | {:.3e} | {:.3e} | {} | {} | {:.4} |\n",
            m.nfe,
            m.residual_mse,
            m.residual_std,
            m.mmse,
            m.smse,
            m.relative_residual.percent(),
            m.consistency.percent(),
            m.seconds_per_sample
        );
    }
    s += "\n| problem (PIDDM student) | observed | metric | value | s / problem |\n|---|---|---|---|---|\n";
    for (name, m) in [
        ("forward", &r.forward),
        ("inverse", &r.inverse),
        ("inverse, sparse", &r.inverse_sparse),
    ] {
        for e in &m.errors {
            s += &format!(
                "| {name} | {} | {} of {} | {:.2} % | {:.2} |\n",
                m.observed,
                e.metric.label(),
                e.channel,
                100.0 * e.value,
                m.seconds_per_problem
            );
        }
    }
    s += &format!(
        "\nProblems: {} steps of Adam on eps, lambda_infer = {:e}.\n",
        r.forward.steps, r.forward.lambda_infer
    );
    s
}

/// One row per evaluation (`*.json` with a report's fields) in `dir`, in file-name order:
/// residuals of the three models, the PIDDM student's residual and MMSE / SMSE against the
/// teacher's, and the problems' errors.
pub fn families_table(dir: &Path) -> Result<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut s = String::from(
        "| evaluation | residual: teacher / lambda 0 / PIDDM | PIDDM / teacher | MMSE, SMSE / teacher's | forward | inverse |\n|---|---|---|---|---|---|\n",
    );
    let mut rows = 0;
    for f in files {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&f)?)?;
        let num = |m: Method, k: &str| v["generation"][m.name()][k].as_f64();
        let Some(p) = num(Method::Piddm1, "residual_mse") else {
            continue;
        };
        let (t, z) = (
            num(Method::Teacher, "residual_mse"),
            num(Method::StudentLambda0, "residual_mse"),
        );
        let e3 = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3e}"));
        let ratio = |k: &str| match (num(Method::Piddm1, k), num(Method::Teacher, k)) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        let errors = |task: &str| {
            v[task]["errors"]
                .as_array()
                .map(|es| {
                    es.iter()
                        .map(|e| {
                            format!(
                                "{} {:.2} %",
                                e["channel"].as_str().unwrap_or("?"),
                                100.0 * e["value"].as_f64().unwrap_or(f64::NAN)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_else(|| "-".into())
        };
        s += &format!(
            "| {} | {} / {} / {p:.3e} | {} | {}, {} | {} | {} |\n",
            f.file_stem().unwrap_or_default().to_string_lossy(),
            e3(t),
            e3(z),
            t.map_or("-".into(), |t| format!("{:.3}", p / t)),
            ratio("mmse"),
            ratio("smse"),
            errors("forward"),
            errors("inverse")
        );
        rows += 1;
    }
    anyhow::ensure!(rows > 0, "no evaluation reports in {}", dir.display());
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_table_reads_reports_and_skips_others() {
        let dir = tempfile::tempdir().unwrap();
        let gm =
            |r: f64, m: f64| serde_json::json!({"residual_mse": r, "mmse": m, "smse": 2.0 * m});
        let report = serde_json::json!({
            "generation": {"teacher": gm(2.0, 1e-3), "student_lambda0": gm(10.0, 1e-3), "piddm_1": gm(0.2, 1.5e-3)},
            "forward": {"errors": [{"channel": "u", "metric": "rel_l2", "value": 0.05}]},
            "inverse": {"errors": [{"channel": "f", "metric": "rel_l2", "value": 0.25}]},
        });
        std::fs::write(dir.path().join("poisson32.json"), report.to_string()).unwrap();
        std::fs::write(dir.path().join("other.json"), "{\"rows\": []}").unwrap();
        let t = families_table(dir.path()).unwrap();
        let rows: Vec<&str> = t.lines().skip(2).collect();
        assert_eq!(rows.len(), 1, "{t}");
        assert!(rows[0].starts_with("| poisson32 | 2.000e0 / 1.000e1 / 2.000e-1 | 0.100 | 1.50, 1.50 | u 5.00 % | f 25.00 % |"), "{t}");
        std::fs::remove_file(dir.path().join("poisson32.json")).unwrap();
        assert!(families_table(dir.path()).is_err());
    }
}
