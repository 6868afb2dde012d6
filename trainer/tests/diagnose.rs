//! The error diagnosis on a tiny student: the table's rows, and the two properties it rests on.

use piddm_trainer::config::{InferConfig, Preset};
use piddm_trainer::eval::diagnose::{self, Settings};
use piddm_trainer::stages::solve::Student;
use piddm_trainer::stages::RunPaths;
use piddm_trainer::{checkpoint, pipeline};
use tch::{Kind, Tensor};

#[test]
fn diagnosis_rows_and_its_properties() {
    let dir = tempfile::tempdir().unwrap();
    let preset = Preset::load("tiny").unwrap();
    pipeline::run(&preset, dir.path(), "test".into()).unwrap();
    let student = RunPaths::new(dir.path()).student;
    let s = Settings {
        problems: 3,
        seed: 5,
        fit_steps: 15,
        fit_restarts: 2,
        long_steps: 20,
        long_restarts: 2,
        encoder: None,
        answers: 2,
    };
    let d = diagnose::diagnose(&student, &preset, &s, "test".into()).unwrap();
    assert_eq!(d.rows.len(), 3);
    for r in &d.rows {
        // Darcy's forward task is scored on u by relative L2, its inverse on a by error rate
        let labels: Vec<(&str, String)> = r
            .tasks
            .iter()
            .flat_map(|t| t.errors.iter().map(move |e| (t.task.as_str(), e.label())))
            .collect();
        assert_eq!(
            labels,
            [
                ("forward", "rel. L2 of u".to_string()),
                ("inverse", "error rate of a".to_string())
            ],
            "{r:?}"
        );
        let (f, i) = (&r.tasks[0].errors[0].figure, &r.tasks[1].errors[0].figure);
        assert!(f.median.is_finite() && f.median >= 0.0, "{r:?}");
        assert!((0.0..=1.0).contains(&i.median), "{r:?}");
    }
    let md = diagnose::markdown(&d);
    assert!(
        md.contains("| manifold") && md.contains("forward (all of a): rel. L2 of u"),
        "{md}"
    );

    let (net, meta) = checkpoint::load_ema(&student).unwrap();
    let st = Student::of(&net, &meta);
    let n = meta.data.grid.n as i64;
    // a target the student can represent exactly: fitting eps to it must close most of the gap
    tch::manual_seed(9);
    let target = st.one_step_physical(&Tensor::randn([3, 2, n, n], tch::kind::FLOAT_CPU));
    let all = Tensor::ones([3, 2, n, n], tch::kind::FLOAT_CPU);
    let fit = InferConfig {
        steps: 200,
        lambda: 0.0,
        lr: 0.05,
        optimizer: Default::default(),
        noise_scale: 1.0,
        determined: None,
    };
    let err = |x: &Tensor| f64::try_from((x - &target).square().mean(Kind::Double)).unwrap();
    tch::manual_seed(7000);
    let start = st.one_step_physical(&Tensor::randn([3, 2, n, n], tch::kind::FLOAT_CPU));
    let fitted = diagnose::best_of(&st, &target, &all, &fit, 1, 7).unwrap().d;
    assert!(
        err(&fitted) < 0.3 * err(&start),
        "fit {} vs random start {}",
        err(&fitted),
        err(&start)
    );
    // best of restarts: per problem, no single restart's own loss is lower than the chosen one's
    let cfg = InferConfig {
        steps: 5,
        ..preset.infer.clone()
    };
    let mask = Tensor::cat(
        &[
            Tensor::ones([3, 1, n, n], tch::kind::FLOAT_CPU),
            Tensor::zeros([3, 1, n, n], tch::kind::FLOAT_CPU),
        ],
        1,
    );
    let best = diagnose::best_of(&st, &target, &mask, &cfg, 3, 11).unwrap();
    let mut wins = [false; 3];
    for r in 0..3 {
        tch::manual_seed(11 * 1000 + r);
        let eps = Tensor::randn([3, 2, n, n], tch::kind::FLOAT_CPU);
        let one = st.solve(&eps, &target, &mask, &cfg).unwrap();
        let (l, _) = tch::no_grad(|| st.loss(&one.eps, &target, &mask, cfg.lambda));
        let (l, b) = (
            Vec::<f32>::try_from(&l).unwrap(),
            Vec::<f32>::try_from(&best.loss).unwrap(),
        );
        for p in 0..3 {
            assert!(
                l[p] >= b[p],
                "restart {r}, problem {p}: {} < chosen {}",
                l[p],
                b[p]
            );
            wins[p] |= l[p] == b[p];
        }
    }
    assert!(wins.iter().all(|&w| w), "the chosen loss is one restart's");
}

/// The diagnosis runs on any family (tiny models of the others with their amortised
/// encoders): the fast paths score every task on what the family's tasks want, with the spread
/// per task.
#[test]
fn diagnosis_of_every_other_family_with_its_encoder() {
    // what each task scores: (forward, inverse, sparse) labels
    let wanted: [(&str, [&[&str]; 3]); 4] = [
        (
            "poisson",
            [
                &["rel. L2 of u"],
                &["rel. L2 of f", "rel. L2 of f where the PDE holds"],
                &["rel. L2 of f", "rel. L2 of u"],
            ],
        ),
        (
            "helmholtz",
            [
                &["rel. L2 of u"],
                &["rel. L2 of f", "rel. L2 of f where the PDE holds"],
                &["rel. L2 of f", "rel. L2 of u"],
            ],
        ),
        (
            "burgers",
            [
                &["rel. L2 of u for t > 0"],
                &[
                    "rel. L2 of u at t = 0",
                    "rel. L2 of u at t = 0, modes |k| <= 2 (those u(t >= 1/2) determines)",
                    "rel. L2 of u at t = 0, modes |k| <= 1",
                    "rel. L2 of u at t = 0, modes |k| <= 3",
                ],
                &["rel. L2 of u"],
            ],
        ),
        (
            "navier_stokes",
            [
                &["rel. L2 of w for t > 0"],
                &["rel. L2 of w at t = 0"],
                &["rel. L2 of w"],
            ],
        ),
    ];
    for (family, labels) in wanted {
        let dir = tempfile::tempdir().unwrap();
        let preset = Preset::tiny_of(family).unwrap();
        pipeline::run(&preset, dir.path(), "test".into()).unwrap();
        let paths = RunPaths::new(dir.path());
        let s = Settings {
            problems: 3,
            seed: 5,
            fit_steps: 5,
            fit_restarts: 1,
            long_steps: 5,
            long_restarts: 1,
            encoder: Some(paths.encoder),
            answers: 2,
        };
        let d = diagnose::diagnose(&paths.student, &preset, &s, "test".into()).unwrap();
        assert_eq!(d.pde, family);
        assert_eq!(
            d.rows.len(),
            7,
            "one call and three step counts of two optimisers"
        );
        for r in &d.rows {
            let tasks: Vec<&str> = r.tasks.iter().map(|t| t.task.as_str()).collect();
            assert_eq!(tasks, ["forward", "inverse", "sparse"]);
            for (t, want) in r.tasks.iter().zip(labels) {
                let got: Vec<String> = t.errors.iter().map(|e| e.label()).collect();
                assert_eq!(got, want, "{family}, {}", t.task);
            }
            for e in r.tasks.iter().flat_map(|t| &t.errors) {
                assert!(
                    e.figure.median.is_finite() && e.figure.median > 0.0,
                    "{r:?}"
                );
            }
        }
        let spread = d.spread.as_ref().unwrap();
        assert_eq!(spread.tasks.len(), 3);
        assert!(spread
            .tasks
            .iter()
            .all(|t| (0.0..=1.0).contains(&t.coverage)));
        let md = diagnose::markdown(&d);
        assert!(md.contains(&format!("fresh {family} problems")), "{md}");
    }
}
