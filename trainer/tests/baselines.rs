//! The baselines: the sampler's hooks against the plain sampler, ECI's hard constraint, PIDM's loss
//! term, and every method end to end on the tiny preset.

use piddm_trainer::checkpoint::Net;
use piddm_trainer::config::Preset;
use piddm_trainer::data::{dataset, Dataset, Normalisation};
use piddm_trainer::diffusion::sampler::{heun_sample, sample, Correction, Gradient, Hook};
use piddm_trainer::diffusion::Edm;
use piddm_trainer::eval::baselines::{self, Settings};
use piddm_trainer::eval::method::Method;
use piddm_trainer::pde::Grid;
use piddm_trainer::physics::ResidualOp;
use piddm_trainer::pipeline;
use piddm_trainer::stages::{pidm, RunPaths};
use tch::{Kind, Tensor};

fn bits(t: &Tensor) -> Vec<u32> {
    Vec::<f32>::try_from(t.reshape([-1]))
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// A random network of the tiny preset on `family`, its residual operator and a normalisation.
fn setup(family: &str) -> (Preset, Net, ResidualOp, Normalisation) {
    let preset = Preset::tiny_of(family).unwrap();
    tch::manual_seed(3);
    let net = Net::new(&preset.model);
    let op = ResidualOp {
        pde: preset.data.pde,
        grid: Grid::new(preset.data.res).unwrap(),
    };
    let c = preset.model.channels as usize;
    let norm = Normalisation {
        mean: [0.1, -0.2][..c].to_vec(),
        scale: [0.5, 0.01][..c].to_vec(),
    };
    (preset, net, op, norm)
}

#[test]
fn zero_weight_guidance_is_the_plain_sampler_bit_for_bit() {
    let (preset, net, op, norm) = setup("poisson");
    let n = preset.data.res as i64;
    let eps = Tensor::randn([3, 2, n, n], (Kind::Float, tch::Device::Cpu));
    let observed = Tensor::randn([3, 2, n, n], (Kind::Float, tch::Device::Cpu)) * 0.1;
    let mask = Tensor::rand([3, 2, n, n], (Kind::Float, tch::Device::Cpu))
        .gt(0.7)
        .to_kind(Kind::Float);
    let edm = Edm::default();
    let guided = |zeta_obs: f64| {
        let hook = Hook::Gradient(Gradient {
            op,
            norm: &norm,
            observed: observed.shallow_clone(),
            mask: mask.shallow_clone(),
            zeta_obs,
            zeta_pde: 0.0,
        });
        sample(&edm, &net.net, &eps, 5, &hook)
    };
    let plain = sample(&edm, &net.net, &eps, 5, &Hook::None);
    assert_eq!(bits(&plain), bits(&guided(0.0)));
    assert_eq!(
        bits(&plain),
        bits(&heun_sample(&edm, &net.net, &eps, 5)),
        "heun_sample is the stepper without a hook"
    );
    // A weight moves the samples towards the observations.
    let misfit = |x: &Tensor| {
        let target = norm.to_normalised(&observed);
        f64::try_from(((x - target) * &mask).square().sum(Kind::Double)).unwrap()
    };
    let g = guided(200.0);
    assert!(
        misfit(&g) < 0.5 * misfit(&plain),
        "guided misfit {} vs plain {}",
        misfit(&g),
        misfit(&plain)
    );
    assert_eq!(Hook::None.nfe(5), 9);
}

#[test]
fn eci_leaves_observed_and_fixed_entries_exactly_at_their_values() {
    let (preset, net, _, norm) = setup("darcy");
    let n = preset.data.res as i64;
    let grid = Grid::new(preset.data.res).unwrap();
    let eps = Tensor::randn([2, 2, n, n], (Kind::Float, tch::Device::Cpu));
    let observed = Tensor::randn([2, 2, n, n], (Kind::Float, tch::Device::Cpu)) + 3.0;
    let mask = Tensor::rand([2, 2, n, n], (Kind::Float, tch::Device::Cpu))
        .gt(0.9)
        .to_kind(Kind::Float);
    let fixed = preset.data.pde.family().fixed_zero(grid);
    assert_eq!(
        fixed.iter().filter(|&&v| v > 0.5).count(),
        4 * (grid.n - 1),
        "Darcy fixes u on the boundary ring"
    );
    let hook = Hook::Correction(Correction::new(&norm, &observed, &mask, &fixed).unwrap());
    let x = sample(&Edm::default(), &net.net, &eps, 6, &hook);
    let target = norm.to_normalised(&observed);
    let zero = norm.to_normalised(&observed.zeros_like());
    let (xv, tv, zv, mv) = (bits(&x), bits(&target), bits(&zero), bits(&mask));
    let plane = grid.len();
    let (mut seen, mut ring) = (0, 0);
    for i in 0..xv.len() {
        if f32::from_bits(mv[i]) > 0.5 {
            assert_eq!(xv[i], tv[i], "observed entry {i}");
            seen += 1;
        } else if fixed[i % (2 * plane)] > 0.5 {
            assert_eq!(xv[i], zv[i], "fixed entry {i}");
            ring += 1;
        }
    }
    assert!(seen > 0 && ring > 0);
    assert_eq!(hook.nfe(6), 6);
}

#[test]
fn pidm_term_vanishes_on_the_truth_and_differentiates() {
    let (preset, net, op, _) = setup("darcy");
    let data = dataset::generate(preset.data.pde, op.grid, 4, 5).unwrap();
    let norm = data.meta.normalisation.clone();
    let x0 = norm.to_normalised(&data.fields);
    let edm = Edm::default();
    let at = |sigma: f64| {
        let d = edm.denoise(
            &net.net,
            &x0,
            &Tensor::full([4], sigma, (Kind::Float, tch::Device::Cpu)),
        );
        f64::try_from(pidm::estimate_residual(&op, &norm, &d).mean(Kind::Double)).unwrap()
    };
    let truth = f64::try_from(op.mse_per_sample(&data.fields).mean(Kind::Double)).unwrap();
    let (small, one) = (at(1e-7), at(1.0));
    assert!(
        small <= 2.0 * truth + 1e-6 && small < 1e-6 * one,
        "R^2 of D at sigma 1e-7: {small:e} (the truth's own in f32: {truth:e}; at sigma 1: {one:e})"
    );
    // The weighted term adds its gradient to the denoising loss's.
    let grads = |weight: f64| {
        tch::manual_seed(9);
        for mut p in net.vs.trainable_variables() {
            p.zero_grad();
        }
        let (l, r) = pidm::loss(&edm, &net.net, &x0, &op, &norm, weight);
        assert!(f64::try_from(&r).unwrap() > 0.0);
        l.backward();
        net.vs
            .trainable_variables()
            .iter()
            .map(|p| f64::try_from(p.grad().square().sum(Kind::Double)).unwrap())
            .sum::<f64>()
    };
    let (g0, g1) = (grads(0.0), grads(1e-2));
    assert!(g0.is_finite() && g1.is_finite() && g0 > 0.0);
    assert!((g1 - g0).abs() > 1e-6 * g0, "{g0} vs {g1}");
}

#[test]
fn every_baseline_on_the_tiny_preset() {
    let mut preset = Preset::tiny_of("darcy").unwrap();
    preset.amortise = None;
    preset.eval.samples = 4;
    let dir = tempfile::tempdir().unwrap();
    pipeline::run(&preset, dir.path(), "test".into()).unwrap();
    let paths = RunPaths::new(dir.path());
    let data = Dataset::load(&paths.train).unwrap();
    let pidm_path = dir.path().join("pidm.ckpt");
    pidm::train_pidm(
        &preset,
        &data,
        &paths.teacher,
        1e-3,
        3,
        &pidm_path,
        false,
        None,
    )
    .unwrap();
    // A PIDM run is not a teacher to start another from, and keeps its weight.
    assert!(pidm::train_pidm(
        &preset,
        &data,
        &pidm_path,
        1e-3,
        3,
        &dir.path().join("x.ckpt"),
        false,
        None
    )
    .is_err());
    assert!(pidm::train_pidm(
        &preset,
        &data,
        &paths.teacher,
        1e-2,
        3,
        &pidm_path,
        true,
        None
    )
    .is_err());
    let mut settings = Settings {
        samples: 4,
        problems: 2,
        dps_steps: 3,
        zeta_obs: 100.0,
        zeta_pde: 1e-4,
        eci_steps: 4,
        ref_steps: 2,
        methods: vec![],
        model: None,
    };
    let inputs = baselines::Inputs {
        run: dir.path().into(),
        pidm: Some(pidm_path.clone()),
        command: "test".into(),
    };
    let r = baselines::compare(&preset, &settings, &inputs).unwrap();
    let heun = preset.sampler.steps;
    let expected_nfe = [2 * heun - 1, 2 * heun - 1, 2 * 3 - 1 + 3, 4, 1, 1, 6];
    for (m, nfe) in Method::ALL.iter().zip(expected_nfe) {
        let g = &r.generation[m.name()];
        assert_eq!(g.nfe, nfe, "{m}");
        for v in [g.residual, g.mmse, g.smse, g.seconds_per_sample] {
            assert!(v.is_finite() && v >= 0.0, "{m}: {g:?}");
        }
    }
    assert!(r.generation["diffusionpde"]
        .seconds_per_sample_at_published_steps
        .is_some());
    assert_eq!(r.pidm.as_ref().unwrap().weight, 1e-3);
    assert_eq!(r.pidm_steps, Some(3));
    for rows in [&r.forward, &r.inverse, &r.sparse] {
        let names: Vec<&str> = rows.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            ["diffusionpde", "eci", "piddm_ref", "student_lambda0"]
        );
        for t in rows.values() {
            assert!(!t.errors.is_empty() && t.errors.iter().all(|e| e.value.is_finite()));
            assert!(t.residual.is_finite() && t.seconds_per_problem > 0.0);
        }
    }
    let out = dir.path().join("results");
    baselines::write(&out, "darcy", &r).unwrap();
    // A sweep of one method replaces its rows only.
    // (and a sampler's sweep runs before the students exist).
    settings.methods = vec![Method::Eci];
    settings.eci_steps = 2;
    let aside = dir.path().join("students");
    std::fs::create_dir(&aside).unwrap();
    for p in [&paths.student, &paths.student_lambda0] {
        std::fs::rename(p, aside.join(p.file_name().unwrap())).unwrap();
    }
    let eci = baselines::compare(&preset, &settings, &inputs).unwrap();
    for p in [&paths.student, &paths.student_lambda0] {
        std::fs::rename(aside.join(p.file_name().unwrap()), p).unwrap();
    }
    assert_eq!(eci.generation.len(), 1);
    baselines::write(&out, "darcy", &eci).unwrap();
    let all = baselines::read_all(&out.join("baselines.json")).unwrap();
    let d = &all["darcy"];
    assert_eq!(d.generation.len(), 7);
    assert_eq!(d.generation["eci"].nfe, 2);
    assert_eq!(d.generation["teacher"].nfe, 2 * heun - 1);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("baselines.json")).unwrap())
            .unwrap();
    for key in ["generation", "forward", "inverse", "sparse"] {
        assert!(json["darcy"][key].is_object(), "{key}");
    }
    // The exported student through the runtime: its samples are the student's (ONNX Runtime
    // against libtorch on the same noise draws), its answers rows of their own.
    let model = dir.path().join("tiny.onnx");
    piddm_trainer::export::export(
        &paths.student,
        &model,
        &preset.infer,
        None,
        serde_json::json!({}),
    )
    .unwrap();
    settings.methods = vec![Method::ShippedOneCall, Method::ShippedCard];
    settings.model = Some(model);
    let shipped = baselines::compare(&preset, &settings, &inputs).unwrap();
    let (g, s1) = (
        &shipped.generation["piddm_one_call"],
        &r.generation["piddm_1"],
    );
    assert!(
        (g.mmse - s1.mmse).abs() <= 1e-4 * s1.mmse,
        "{g:?} against {s1:?}"
    );
    assert!(
        (g.smse - s1.smse).abs() <= 1e-3 * s1.smse,
        "{g:?} against {s1:?}"
    );
    assert_eq!(g.nfe, 1);
    for rows in [&shipped.forward, &shipped.inverse, &shipped.sparse] {
        // a model without an encoder has no one-call answer
        let names: Vec<&str> = rows.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["piddm_card"]);
        assert!(rows["piddm_card"]
            .errors
            .iter()
            .all(|e| e.value.is_finite()));
    }
    let with = dir.path().join("with-shipped");
    baselines::write(&with, "darcy", &r).unwrap();
    baselines::write(&with, "darcy", &shipped).unwrap();
    let md = std::fs::read_to_string(with.join("baselines.md")).unwrap();
    assert!(
        md.contains("Rows piddm_one_call, piddm_card from `test`"),
        "{md}"
    );
    for m in Method::ALL.iter().filter(|m| m.is_shipped()) {
        assert!(md.contains(&format!("| {m} |")), "{m} missing from\n{md}");
    }
    let md = std::fs::read_to_string(out.join("baselines.md")).unwrap();
    for m in Method::ALL.iter().filter(|m| !m.is_shipped()) {
        assert!(md.contains(&format!("| {m} |")), "{m} missing from\n{md}");
    }
    // The goal against the rows themselves: the lowest of the four baselines, the two ratios.
    let goal = baselines::Goal::of(&d.generation).unwrap();
    let low = Method::ALL
        .iter()
        .filter(|m| m.is_baseline())
        .map(|m| d.generation[m.name()].residual)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(d.generation[&goal.lowest_baseline].residual, low);
    let p = &d.generation["piddm_1"];
    assert!((goal.residual_ratio * low - p.residual).abs() <= 1e-12 * p.residual);
    assert!((goal.smse_ratio * d.generation["teacher"].smse - p.smse).abs() <= 1e-12 * p.smse);
    assert!(md.contains("Goal: residual below every baseline's"), "{md}");
    assert!(
        md.contains(&format!("| darcy | {} | ", goal.lowest_baseline)),
        "{md}"
    );
    assert!(out.join("baselines-darcy.png").exists());
    // Families written at the same time all land (one writer at a time).
    let par = dir.path().join("parallel");
    std::thread::scope(|s| {
        for k in 0..6 {
            let (par, r) = (&par, &r);
            s.spawn(move || baselines::write(par, &format!("family{k}"), r).unwrap());
        }
    });
    assert_eq!(
        baselines::read_all(&par.join("baselines.json"))
            .unwrap()
            .len(),
        6
    );
    // The report redraws from the JSON alone.
    std::fs::remove_file(out.join("baselines.md")).unwrap();
    std::fs::remove_file(out.join("baselines-darcy.png")).unwrap();
    baselines::render(&out, &all).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("baselines.md")).unwrap(),
        md
    );
    assert!(out.join("baselines-darcy.png").exists());
    // an unknown method is refused by name where it is parsed (the command line)
    let e = "nonsense".parse::<Method>().unwrap_err();
    assert!(e.to_string().contains("unknown method 'nonsense'"), "{e}");
}
