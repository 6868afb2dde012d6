//! The tiny preset end to end, exact resume after a kill, and the trainer's answers to bad input.

use piddm_trainer::checkpoint::{self, load_ema, TrainState};
use piddm_trainer::config::Preset;
use piddm_trainer::data::{dataset, Dataset};
use piddm_trainer::pde::{Grid, Pde, Task};
use piddm_trainer::pipeline;
use piddm_trainer::stages::{teacher, RunPaths};
use piddm_trainer::train::{self, Outcome};
use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_piddm-train"))
}

fn run_err(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn tiny_pipeline_every_stage(family: &str) {
    let dir = tempfile::tempdir().unwrap();
    let preset = Preset::tiny_of(family).unwrap();
    let report = pipeline::run(&preset, dir.path(), "test".into())
        .unwrap()
        .expect("finished");
    let p = RunPaths::new(dir.path());
    let n = preset.data.res as i64;
    let c = preset.data.pde.channels().len() as i64;
    let train = Dataset::load(&p.train).unwrap();
    assert_eq!(train.fields.size(), vec![preset.data.train as i64, c, n, n]);
    for ckpt in [&p.teacher, &p.student_lambda0, &p.student] {
        let (net, meta) = load_ema(ckpt).unwrap();
        assert_eq!(meta.data.grid.n as i64, n);
        let x = net.net.forward(
            &tch::Tensor::randn([2, c, n, n], tch::kind::FLOAT_CPU),
            &tch::Tensor::zeros([2], tch::kind::FLOAT_CPU),
        );
        assert_eq!(x.size(), vec![2, c, n, n]);
        assert!(bool::try_from(x.isfinite().all()).unwrap());
    }
    let g = &report.generation;
    let (teacher, lambda0, piddm) = (&g["teacher"], &g["student_lambda0"], &g["piddm_1"]);
    for m in [teacher, lambda0, piddm] {
        for v in [
            m.residual_mse,
            m.residual_std,
            m.mmse,
            m.smse,
            m.relative_residual.median,
            m.consistency.median,
            m.seconds_per_sample,
        ] {
            assert!(v.is_finite() && v >= 0.0, "{m:?}");
        }
    }
    assert_eq!(teacher.nfe, 2 * preset.sampler.steps - 1);
    assert_eq!((piddm.nfe, lambda0.nfe), (1, 1));
    assert!(
        report.ground_truth_residual_mse < 1e-6,
        "data residual {}",
        report.ground_truth_residual_mse
    );
    // The physics term does its job: same teacher, same pairs, lower residual.
    assert!(
        piddm.residual_mse < 0.8 * lambda0.residual_mse,
        "lambda > 0: {} vs lambda = 0: {}",
        piddm.residual_mse,
        lambda0.residual_mse
    );
    // Each problem scores what its family says, with the family's metric.
    let family = preset.data.pde.family();
    let grid = Grid::new(preset.data.res).unwrap();
    let labels = |t| -> Vec<String> {
        family
            .scored(t, grid)
            .into_iter()
            .map(|s| s.label)
            .collect()
    };
    // the sparse problem: every channel, or the levels as one field where the family groups them
    let sparse: Vec<String> = {
        let mut mask = family.sparse_source(grid);
        for (p, v) in mask.iter_mut().enumerate() {
            *v *= (p % grid.len() == 0) as u8 as f32;
        }
        family
            .unobserved_parts(&mask, grid.len())
            .into_iter()
            .map(|s| s.label)
            .collect()
    };
    let names: Vec<String> = preset
        .data
        .pde
        .channels()
        .iter()
        .map(|c| c.0.to_string())
        .collect();
    if preset.data.pde.name() == "navier_stokes" {
        assert_eq!(sparse, ["w"]);
    } else {
        assert_eq!(sparse, names);
    }
    for (m, scored) in [
        (&report.forward, labels(Task::Forward)),
        (&report.inverse, labels(Task::Inverse)),
        (&report.inverse_sparse, sparse),
    ] {
        let got: Vec<String> = m.errors.iter().map(|e| e.channel.clone()).collect();
        assert_eq!(got, scored);
        for e in &m.errors {
            assert!(
                e.value.is_finite() && (0.0..=10.0).contains(&e.value),
                "{e:?}"
            );
        }
    }
    for f in [
        "eval.json",
        "eval.md",
        "samples.png",
        "forward.png",
        "inverse.png",
        "inverse_sparse.png",
    ] {
        assert!(p.eval.join(f).metadata().unwrap().len() > 100, "{f}");
    }
    // The PIDDM student evaluated alone: its row and problems as beside the others (same draws).
    let alone = dir.path().join("alone");
    let inputs = piddm_trainer::eval::evaluate::EvalInputs {
        teacher: None,
        student_lambda0: None,
        student: &p.student,
        test: &p.test,
        out: &alone,
        command: "test".into(),
    };
    let r = piddm_trainer::eval::evaluate::evaluate(&preset, &inputs).unwrap();
    let keys: Vec<&String> = r.generation.keys().collect();
    assert_eq!(keys, ["piddm_1"]);
    let a = &r.generation["piddm_1"];
    assert_eq!(
        (a.residual_mse, a.mmse, a.smse),
        (piddm.residual_mse, piddm.mmse, piddm.smse)
    );
    assert_eq!(r.forward.errors[0].value, report.forward.errors[0].value);
    assert!(alone.join("samples.png").exists());

    if preset.data.pde.name() == "darcy" {
        warm_started_encoder(&preset, &p, &train, dir.path());
    }
}

/// An encoder started from another's weights (`--init`): after one step its output layer is still
/// near the initial encoder's (a fresh one's starts at zero); a checkpoint of another role is
/// refused by name.
fn warm_started_encoder(preset: &Preset, p: &RunPaths, train: &Dataset, dir: &Path) {
    use piddm_trainer::stages::encoder::train_encoder;
    // one step of `preset`'s encoder into `out`, its weights from `init`
    let one_step = |preset: &Preset, out: &Path, init: &Path| {
        train_encoder(preset, &p.student, train, out, false, Some(1), Some(init))
    };
    let warm = dir.join("warm.ckpt");
    let out = one_step(preset, &warm, &p.encoder);
    assert_eq!(out.unwrap(), Outcome::Stopped);
    let conv_out = |path: &Path| {
        let (net, _) = load_ema(path).unwrap();
        let parts: Vec<tch::Tensor> = net
            .named()
            .into_iter()
            .filter(|(k, _)| k.starts_with("conv_out"))
            .map(|(_, t)| t.flatten(0, -1))
            .collect();
        assert!(!parts.is_empty());
        tch::Tensor::cat(&parts, 0)
    };
    let (init, got) = (conv_out(&p.encoder), conv_out(&warm));
    let size = f64::try_from(init.norm()).unwrap();
    assert!(size > 0.0);
    // Adam's first step moves each weight by about the rate (7 % of this layer's norm here); a
    // fresh encoder's output layer, from zero, would be the whole norm away
    let moved = f64::try_from((&got - &init).norm()).unwrap();
    assert!(moved < 0.25 * size, "moved {moved} of {size}");
    // noisy sensors and no residual term: the checkpoint records the weight it was trained with
    let mut noisy = preset.clone();
    let a = noisy.amortise.as_mut().unwrap();
    (a.observation_noise, a.lambda) = (0.2, Some(0.0));
    let quiet = dir.join("quiet.ckpt");
    let out = one_step(&noisy, &quiet, &p.encoder);
    assert_eq!(out.unwrap(), Outcome::Stopped);
    let (_, meta) = checkpoint::load_role(&quiet, checkpoint::Role::Amortiser).unwrap();
    assert_eq!(meta.amortiser.unwrap().lambda_infer, 0.0);
    let err = one_step(preset, &dir.join("w2.ckpt"), &p.student).unwrap_err();
    assert!(
        format!("{err:#}").contains("expected amortised encoder"),
        "{err:#}"
    );
}

#[test]
fn tiny_pipeline_darcy() {
    tiny_pipeline_every_stage("darcy");
}

#[test]
fn tiny_pipeline_poisson() {
    tiny_pipeline_every_stage("poisson");
}

#[test]
fn tiny_pipeline_helmholtz() {
    tiny_pipeline_every_stage("helmholtz");
}

#[test]
fn tiny_pipeline_burgers() {
    tiny_pipeline_every_stage("burgers");
}

#[test]
fn tiny_pipeline_navier_stokes() {
    tiny_pipeline_every_stage("navier_stokes");
}

fn tensors_equal(a: &Path, b: &Path) {
    let (ta, _) = piddm_trainer::util::st::read(a, checkpoint::META_KEY, "checkpoint").unwrap();
    let (tb, _) = piddm_trainer::util::st::read(b, checkpoint::META_KEY, "checkpoint").unwrap();
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (k, t) in &ta {
        assert!(t.equal(&tb[k]), "tensor {k} differs after resume");
    }
}

/// A teacher run killed with SIGKILL mid-way and resumed ends bit-identical to an uninterrupted one.
#[test]
fn killed_training_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let preset_path = dir.path().join("long.toml");
    let text = piddm_trainer::config::TINY
        .replace("steps = 40", "steps = 300")
        .replace("checkpoint_every = 10", "checkpoint_every = 5");
    std::fs::write(&preset_path, text).unwrap();
    let preset = preset_path.to_str().unwrap();
    let data = dir.path().join("d.safetensors");
    let d = dataset::generate(Pde::parse("darcy").unwrap(), Grid::new(16).unwrap(), 64, 1).unwrap();
    d.save(&data).unwrap();
    let (full, killed) = (dir.path().join("full.ckpt"), dir.path().join("killed.ckpt"));
    let args = |out: &Path| {
        vec![
            "teacher".to_string(),
            "--preset".into(),
            preset.into(),
            "--data".into(),
            data.to_str().unwrap().into(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ]
    };
    assert!(bin().args(args(&full)).status().unwrap().success());

    let mut child = bin()
        .args(args(&killed))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !killed.exists() && t0.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let step = TrainState::load(&killed).unwrap().meta.step;
    assert!(
        step < 300,
        "the run finished before it could be killed (step {step})"
    );
    let mut resume = args(&killed);
    resume.push("--resume".into());
    assert!(bin().args(&resume).status().unwrap().success());
    tensors_equal(&full, &killed);
}

/// Library-level resume after a requested stop, and the NaN guard keeping the last good checkpoint.
#[test]
fn stop_resume_and_nan_guard() {
    let dir = tempfile::tempdir().unwrap();
    let preset = Preset::load("tiny").unwrap();
    let d = dataset::generate(Pde::parse("darcy").unwrap(), Grid::new(16).unwrap(), 64, 1).unwrap();
    let (a, b) = (dir.path().join("a.ckpt"), dir.path().join("b.ckpt"));
    assert_eq!(
        teacher::train_teacher(&preset, &d, &a, false, None).unwrap(),
        Outcome::Finished
    );
    assert_eq!(
        teacher::train_teacher(&preset, &d, &b, false, Some(13)).unwrap(),
        Outcome::Stopped
    );
    assert_eq!(
        teacher::train_teacher(&preset, &d, &b, true, None).unwrap(),
        Outcome::Finished
    );
    tensors_equal(&a, &b);

    // NaN at step 25: the error names the step and the checkpoint of step 20 stays as it was.
    let c = dir.path().join("c.ckpt");
    teacher::train_teacher(&preset, &d, &c, false, Some(20)).unwrap();
    let before = std::fs::read(&c).unwrap();
    let mut st = TrainState::load(&c).unwrap();
    let err = train::run(&mut st, &c, "teacher", None, |net, step| {
        let x = net
            .forward(
                &tch::Tensor::zeros([1, 2, 16, 16], tch::kind::FLOAT_CPU),
                &tch::Tensor::zeros([1], tch::kind::FLOAT_CPU),
            )
            .mean(tch::Kind::Float);
        Ok(if step == 24 { x * f64::NAN } else { x })
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("loss is NaN at step 24") && err.contains("step 20"),
        "{err}"
    );
    assert_eq!(std::fs::read(&c).unwrap(), before);

    // The weights-only form: the same EMA weights in about a quarter of the bytes; it takes a
    // copy's metadata change (a slimmed copy of it stays slim) but refuses to resume, by name.
    let slim = dir.path().join("slim.ckpt");
    checkpoint::slim(&a, &slim).unwrap();
    let (full, _) = checkpoint::load_ema(&a).unwrap();
    let (thin, meta) = checkpoint::load_ema(&slim).unwrap();
    assert!(meta.weights_only);
    assert_eq!(
        checkpoint::weights_sha256(&full),
        checkpoint::weights_sha256(&thin)
    );
    let (big, small) = (
        std::fs::metadata(&a).unwrap().len(),
        std::fs::metadata(&slim).unwrap().len(),
    );
    assert!(small * 10 < big * 3, "{small} bytes slim against {big}");
    let again = dir.path().join("again.ckpt");
    checkpoint::slim(&slim, &again).unwrap();
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&slim).unwrap()
    );
    let before = std::fs::read(&slim).unwrap();
    let err = teacher::train_teacher(&preset, &d, &slim, true, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds the weights alone"), "{err}");
    assert_eq!(std::fs::read(&slim).unwrap(), before);
}

#[test]
fn bad_input_is_a_clear_error_and_overwrites_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    assert!(
        run_err(&["data", "--pde", "heat", "--n", "4", "--out", &p("x")])
            .contains("unknown PDE 'heat' (known: darcy, poisson, helmholtz")
    );
    // Parameters out of range are refused by name, and nothing is written.
    for (args, says) in [
        (
            vec!["--pde", "helmholtz", "--set", "k=-1"],
            "wavenumber k must be finite and >= 0",
        ),
        (
            vec!["--pde", "helmholtz", "--set", "k=9"],
            "k = 9 is too large",
        ),
        (vec!["--pde", "poisson", "--res", "3"], "at least 4 points"),
        (
            vec!["--pde", "poisson", "--set", "nu=0.1"],
            "poisson has no parameter 'nu'",
        ),
        (
            vec!["--pde", "darcy", "--set", "a_lo=0"],
            "a_lo must be finite and positive",
        ),
        (
            vec!["--pde", "poisson", "--set", "grf.tau=-3"],
            "tau must be finite and positive",
        ),
    ] {
        let out = p("refused.safetensors");
        let mut all = vec!["data", "--n", "4", "--out", &out];
        all.extend(args);
        let e = run_err(&all);
        assert!(e.contains(says), "{all:?}: {e}");
        assert!(!Path::new(&out).exists());
    }
    assert!(run_err(&["pipeline", "--preset", "huge"]).contains("unknown preset 'huge'"));
    assert!(run_err(&[
        "teacher",
        "--preset",
        "tiny",
        "--data",
        &p("missing.safetensors"),
        "--out",
        &p("t.ckpt")
    ])
    .contains("cannot read data set"));
    std::fs::write(
        p("corrupt.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":",
    )
    .unwrap();
    assert!(run_err(&[
        "teacher",
        "--preset",
        "tiny",
        "--data",
        &p("corrupt.safetensors"),
        "--out",
        &p("t.ckpt")
    ])
    .contains("not a valid piddm data set"));

    // A teacher trained on 16x16 refuses to continue on an 8x8 data set; the checkpoint is untouched.
    let d16 =
        dataset::generate(Pde::parse("darcy").unwrap(), Grid::new(16).unwrap(), 8, 1).unwrap();
    d16.save(Path::new(&p("d16.safetensors"))).unwrap();
    let d8 = dataset::generate(Pde::parse("darcy").unwrap(), Grid::new(8).unwrap(), 8, 1).unwrap();
    d8.save(Path::new(&p("d8.safetensors"))).unwrap();
    let ok = bin()
        .args([
            "teacher",
            "--preset",
            "tiny",
            "--data",
            &p("d16.safetensors"),
            "--out",
            &p("t.ckpt"),
            "--stop-after",
            "5",
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let before = std::fs::read(p("t.ckpt")).unwrap();
    let e = run_err(&[
        "teacher",
        "--preset",
        "tiny",
        "--data",
        &p("d8.safetensors"),
        "--out",
        &p("t.ckpt"),
        "--resume",
    ]);
    assert!(
        e.contains("trained on darcy 16x16") && e.contains("data set is darcy 8x8"),
        "{e}"
    );
    let e = run_err(&[
        "teacher",
        "--preset",
        "tiny",
        "--data",
        &p("d16.safetensors"),
        "--out",
        &p("t.ckpt"),
    ]);
    assert!(e.contains("exists: pass --resume"), "{e}");
    assert_eq!(std::fs::read(p("t.ckpt")).unwrap(), before);
    // A data set is not a checkpoint.
    let e = run_err(&[
        "distill",
        "--preset",
        "tiny",
        "--teacher",
        &p("d16.safetensors"),
        "--out",
        &p("s.ckpt"),
    ]);
    assert!(e.contains("not a valid piddm checkpoint"), "{e}");
}
