//! The conditional-answers report through the C ABI, on the tiny test artifact: its forward figure
//! against the same answers computed through the Rust API and measured here.

use piddm::card::Start;
use piddm::{Model, Options};
use piddm_trainer::apps::conditional::{self, Settings};
use std::path::PathBuf;

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
    let problems = piddm_trainer::apps::examples::darcy_problems(&card, 3, 5).unwrap();
    let plane = problems.plane();
    let field = 2 * plane;
    let truth: Vec<f32> = (0..3)
        .flat_map(|p| problems.data[p * 3 * plane..(p * 3 + 2) * plane].to_vec())
        .collect();
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

/// The report runs on every family's exported model with its encoder (tiny presets): each task
/// scored on what the family's tasks want, finite errors, coverage a share, and the figure.
#[test]
fn report_runs_on_every_family() {
    use piddm_trainer::config::Preset;
    use piddm_trainer::stages::RunPaths;
    use piddm_trainer::{export, pipeline};
    for family in ["poisson", "helmholtz", "burgers", "navier_stokes"] {
        let dir = tempfile::tempdir().unwrap();
        let preset = Preset::tiny_of(family).unwrap();
        pipeline::run(&preset, dir.path(), "test".into()).unwrap();
        let paths = RunPaths::new(dir.path());
        let model = dir.path().join("tiny.onnx");
        let refine = &preset.amortise.as_ref().unwrap().refine;
        export::export(
            &paths.student,
            &model,
            &preset.infer,
            Some((paths.encoder.as_path(), refine)),
            serde_json::json!({}),
        )
        .unwrap();
        let s = Settings {
            model,
            problems: 2,
            seed: 5,
            sparse: 0.1,
            answers: 2,
            spread_scales: vec![1.0],
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
    }
}
