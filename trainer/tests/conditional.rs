//! The conditional-answers report through the C ABI, on the tiny test artifact: its forward figure
//! against the same answers computed through the Rust API and measured here.

use piddm::card::Start;
use piddm::{Model, Options};
use piddm_trainer::apps::conditional::{self, Settings};
use std::path::PathBuf;

/// `count` fresh Darcy problems of `seed` as the model's fields (a, u), and the plane's size.
fn darcy_truth(card: &piddm::card::ModelCard, count: usize, seed: u64) -> (Vec<f32>, usize) {
    let problems = piddm_trainer::apps::examples::darcy_problems(card, count, seed).unwrap();
    let plane = problems.plane();
    let truth = (0..count)
        .flat_map(|p| problems.data[p * 3 * plane..(p * 3 + 2) * plane].to_vec())
        .collect();
    (truth, plane)
}

#[test]
fn report_matches_the_rust_api() {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tiny.onnx");
    let dir = tempfile::tempdir().unwrap();
    let s = Settings {
        model: model.clone(),
        problems: 3,
        seed: 5,
        sparse: 0.1,
        answers: 3,
        spread_scales: vec![1.0, 0.0],
        more_steps: vec![],
        published: false,
        precision: piddm::card::Precision::Fp32,
    };
    let r = conditional::run(&s, "test".into(), dir.path()).unwrap();
    // one call, the card's defaults, one call at noise_scale 0
    assert_eq!(r.rows.len(), 3);
    assert_eq!(r.spread.len(), 2);
    let sp = &r.spread[0];
    let tasks: Vec<&str> = sp.tasks.iter().map(|t| t.task.as_str()).collect();
    assert_eq!(tasks, ["forward", "inverse", "sparse"]);
    for t in &sp.tasks {
        assert!((0.0..=1.0).contains(&t.coverage), "{}", t.coverage);
    }
    assert!(dir.path().join("conditional.png").exists());
    assert!(conditional::markdown(&r).contains("| one call"));

    // the one-call forward answers again, through piddm::Model, and their median error
    let m = Model::load(&model, &Options::default()).unwrap();
    let (card, _) = piddm_trainer::export::read_card(&model).unwrap();
    let (truth, plane) = darcy_truth(&card, 3, 5);
    let field = 2 * plane;
    let mask: Vec<u8> = (0..3 * field)
        .map(|i| ((i % field) < plane) as u8)
        .collect();
    let p = piddm::SolveParams {
        steps: 0,
        start: Start::Amortised,
        ..m.default_solve_params()
    };
    let mut out = vec![0f32; truth.len()];
    m.solve(&truth, &mask, 3, &p, &mut out).unwrap();
    let mut rel: Vec<f64> = (0..3)
        .map(|k| {
            let u = k * field + plane..(k + 1) * field;
            let num: f64 = u
                .clone()
                .map(|i| ((out[i] - truth[i]) as f64).powi(2))
                .sum();
            let den: f64 = u.map(|i| (truth[i] as f64).powi(2)).sum();
            (num / den).sqrt()
        })
        .collect();
    rel.sort_by(f64::total_cmp);
    let forward = &r.rows[0].tasks[0];
    assert_eq!(
        (forward.task.as_str(), forward.errors.len()),
        ("forward", 1)
    );
    assert_eq!(forward.errors[0].label(), "rel. L2 of u");
    let got = forward.errors[0].figure.median;
    assert!(
        (got - rel[1]).abs() <= 1e-6 * rel[1],
        "report {got}, Rust API {}",
        rel[1]
    );
}

/// The tiny preset of `family` trained into `dir` and exported with its encoder, current card.
fn tiny_model(family: &str, dir: &std::path::Path) -> PathBuf {
    use piddm_trainer::config::Preset;
    use piddm_trainer::stages::RunPaths;
    use piddm_trainer::{export, pipeline};
    let preset = Preset::tiny_of(family).unwrap();
    pipeline::run(&preset, dir, "test".into()).unwrap();
    let paths = RunPaths::new(dir);
    let model = dir.join("tiny.onnx");
    let refine = &preset.amortise.as_ref().unwrap().refine;
    export::export(
        &paths.student,
        &model,
        &preset.infer,
        Some((paths.encoder.as_path(), refine)),
        serde_json::json!({}),
    )
    .unwrap();
    model
}

/// The report runs on every family's exported model with its encoder (tiny presets): each task
/// scored on what the family's tasks want, finite errors, coverage a share, and the figure.
#[test]
fn report_runs_on_every_family() {
    for family in ["poisson", "helmholtz", "burgers", "navier_stokes"] {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model(family, dir.path());
        let s = Settings {
            model,
            problems: 2,
            seed: 5,
            sparse: 0.1,
            answers: 2,
            spread_scales: vec![1.0],
            more_steps: vec![],
            published: false,
            precision: piddm::card::Precision::Fp32,
        };
        let out = dir.path().join("report");
        let r = conditional::run(&s, "test".into(), &out).unwrap();
        assert_eq!(r.pde, family);
        assert_eq!(r.rows.len(), 3, "{family}");
        for row in &r.rows {
            let tasks: Vec<&str> = row.tasks.iter().map(|t| t.task.as_str()).collect();
            assert_eq!(tasks, ["forward", "inverse", "sparse"], "{family}");
            for e in row.tasks.iter().flat_map(|t| &t.errors) {
                assert!(
                    e.figure.median.is_finite() && e.figure.median > 0.0,
                    "{family}: {}",
                    e.label()
                );
            }
        }
        let sp = &r.spread[0];
        assert!(sp.tasks.iter().all(|t| (0.0..=1.0).contains(&t.coverage)));
        assert!(out.join("conditional.png").exists(), "{family}");
        assert!(conditional::markdown(&r).contains(&format!("fresh {family} problems")));
        // every family calibrates, and its tasks are told apart by their masks
        let cal = piddm_trainer::apps::spread::Settings {
            model: s.model.clone(),
            problems: 2,
            seed: 9,
            answers: 2,
            coverage: 0.9,
            noise_scale: 1.0,
            sparse: 0.1,
        };
        piddm_trainer::apps::spread::run_to(&cal, "test".into(), &dir.path().join("cal")).unwrap();
        let r = conditional::run(&s, "test".into(), &out).unwrap();
        let c = r.calibrated.expect("calibrated");
        let card = piddm_trainer::export::read_card(&s.model).unwrap().0;
        let want: Vec<f64> = card
            .spread
            .unwrap()
            .tasks
            .iter()
            .map(|t| t.std_scale)
            .collect();
        assert_eq!(c.std_scales, want, "{family}");
    }
}

/// The spread calibration from fitting to the runtime: `calibrate` writes one std scale per task
/// into every file's card (re-sealed: the model still loads verified); `piddm_solve_spread` gives
/// each task's observation the std of K one-call answers (computed here from K `piddm_solve`
/// calls) times that task's scale; on the calibration problems the calibrated band covers at
/// least the asked share (split conformal), and `conditional` reports the calibrated spread.
#[test]
fn calibration_reaches_the_runtime() {
    use piddm_trainer::apps::capi::Handle;
    use piddm_trainer::apps::spread;
    use piddm_trainer::eval::metrics::{band, ensemble, Unknown};
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model("darcy", dir.path());
    let s = spread::Settings {
        model: model.clone(),
        problems: 3,
        seed: 11,
        answers: 3,
        coverage: 0.9,
        noise_scale: 1.0,
        sparse: 0.1,
    };
    let md = spread::run_to(&s, "test".into(), &dir.path().join("cal")).unwrap();
    assert!(md.contains("| inverse |"), "{md}");
    let (card, _) = piddm_trainer::export::read_card(&model).unwrap();
    let cal = card
        .spread
        .clone()
        .expect("the card carries the calibration");
    assert_eq!(card.format, piddm::card::CARD_FORMAT);
    let names: Vec<&str> = cal.tasks.iter().map(|t| t.task.as_str()).collect();
    assert_eq!(names, ["forward", "inverse", "sparse"]);
    // Darcy: forward observes all of a, inverse all of u, sparse a tenth of u
    assert_eq!(cal.tasks[0].observed, vec![1.0, 0.0]);
    assert_eq!(cal.tasks[1].observed, vec![0.0, 1.0]);
    assert!(cal.tasks[2].observed[0] == 0.0 && (cal.tasks[2].observed[1] - 0.1).abs() < 0.05);
    for f in [
        "tiny.refine.onnx",
        "tiny.residual.onnx",
        "tiny.amortised.onnx",
    ] {
        let (c, _) = piddm_trainer::export::read_card(&dir.path().join(f)).unwrap();
        assert_eq!(c.spread, card.spread, "{f}");
    }

    // the runtime: the inverse task's observation, K answers
    let h = Handle::load(&model).unwrap();
    let (truth, plane) = darcy_truth(&card, 3, 11);
    let field = 2 * plane;
    let mask: Vec<u8> = (0..3 * field)
        .map(|i| ((i % field) >= plane) as u8)
        .collect();
    let one = piddm::ffi::piddm_solve_params {
        steps: 0,
        seed: 100,
        noise_scale: 0.0, // the spread draws at the calibration's scale, not this
        ..h.defaults().unwrap()
    };
    let (mean, std, scales) = h.solve_spread(&truth, &mask, 3, 3, &one).unwrap();
    let scale = cal.tasks[1].std_scale;
    assert!(
        scales.iter().all(|&v| v == scale),
        "{scales:?} against {scale}"
    );
    let draws: Vec<Vec<f32>> = (0..3u64)
        .map(|k| {
            let p = piddm::ffi::piddm_solve_params {
                seed: 100 + k,
                noise_scale: cal.noise_scale,
                ..one
            };
            h.solve(&truth, &mask, 3, &p).unwrap()
        })
        .collect();
    let (c, ny, nx) = h.shape().unwrap();
    let unknown = Unknown::of_mask(&mask, c, ny * nx);
    let e = ensemble(&draws, &truth, &unknown);
    let worst = |a: &[f32], b: &[f32], tol: f32| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / (tol * (1.0 + y.abs())))
            .fold(0f32, f32::max)
    };
    assert!(worst(&mean, &e.mean, 1e-6) <= 1.0, "mean");
    let wide: Vec<f32> = e.std.iter().map(|v| v * scale as f32).collect();
    assert!(worst(&std, &wide, 1e-5) <= 1.0, "std");
    assert!(e.std.iter().any(|&v| v > 0.0));

    // on the calibration problems the calibrated band covers what was asked
    let r = spread::fit(&s, "test".into()).unwrap();
    for t in &r.tasks {
        if t.determined < 1.0 {
            assert!(
                t.coverage_calibrated >= 0.9,
                "{}: {}",
                t.task,
                t.coverage_calibrated
            );
        }
    }
    // the conditional report on fresh problems shows the calibrated spread
    let c = Settings {
        model,
        problems: 2,
        seed: 5,
        sparse: 0.1,
        answers: 3,
        spread_scales: vec![1.0],
        more_steps: vec![],
        published: false,
        precision: piddm::card::Precision::Fp32,
    };
    let rep = conditional::run(&c, "test".into(), &dir.path().join("cond")).unwrap();
    let calibrated = rep.calibrated.as_ref().expect("a calibrated row");
    assert_eq!(calibrated.std_scales[1], scale);
    let (cov, _) = band(&mean, &std, &truth, &unknown);
    assert!((0.0..=1.0).contains(&cov));
    assert!(conditional::markdown(&rep).contains("Calibrated spread"));
    // the demo shows the inverse answer's calibrated band
    let demo = piddm_trainer::apps::demo::run(
        &c.model,
        2,
        1,
        &dir.path().join("demo"),
        piddm::card::Precision::Fp32,
    )
    .unwrap();
    assert!(
        demo.contains(&format!("std scale {scale:.2} from the card")),
        "{demo}"
    );
}
