//! The runtime (ONNX Runtime through `piddm::Model`) reproduces the trainer (tch) on the same
//! exported student: generation, residual and the masked solve.

use piddm::optim::Optimizer;
use piddm::{Model, Options, SolveParams, Status};
use piddm_trainer::config::{InferConfig, Preset};
use piddm_trainer::stages::solve::Student;
use piddm_trainer::stages::RunPaths;
use piddm_trainer::{checkpoint, export, pipeline};
use std::path::PathBuf;
use std::sync::OnceLock;
use tch::{Kind, Tensor};

struct Fixture {
    _dir: tempfile::TempDir,
    student: PathBuf,
    model: PathBuf,
}

/// A tiny pipeline of `family`, exported; built once per test binary.
fn fixture_of(family: &str) -> &'static Fixture {
    static D: OnceLock<Fixture> = OnceLock::new();
    static P: OnceLock<Fixture> = OnceLock::new();
    static H: OnceLock<Fixture> = OnceLock::new();
    static B: OnceLock<Fixture> = OnceLock::new();
    static N: OnceLock<Fixture> = OnceLock::new();
    let cell = match family {
        "darcy" => &D,
        "poisson" => &P,
        "helmholtz" => &H,
        "burgers" => &B,
        "navier_stokes" => &N,
        f => panic!("no fixture for {f}"),
    };
    cell.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let preset = Preset::tiny_of(family).unwrap();
        pipeline::run(&preset, dir.path(), "test".into()).unwrap();
        let student = RunPaths::new(dir.path()).student;
        let model = dir.path().join("tiny.onnx");
        export::export(&student, &model, &preset.infer, None, serde_json::json!({})).unwrap();
        Fixture {
            _dir: dir,
            student,
            model,
        }
    })
}

fn fixture() -> &'static Fixture {
    fixture_of("darcy")
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().reshape([-1])).unwrap()
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max);
    let den = b.iter().map(|y| y.abs() as f64).fold(0.0, f64::max);
    num / den.max(1e-30)
}

/// Every family: the runtime reproduces tch (generation, residual field and its graph-side mean,
/// an inverse solve).
#[test]
fn runtime_reproduces_the_trainer() {
    for family in ["darcy", "poisson", "helmholtz", "burgers", "navier_stokes"] {
        reproduces_the_trainer(family);
    }
}

fn reproduces_the_trainer(family: &str) {
    let f = fixture_of(family);
    let m = Model::load(&f.model, &Options::default()).unwrap();
    assert_eq!(m.card().pde.name, family);
    let (net, meta) = checkpoint::load_ema(&f.student).unwrap();
    let st = Student::of(&net, &meta);
    let (c, ny, nx) = m.shape();
    assert_eq!((c, ny, nx), (meta.unet.channels as usize, 16, 16));
    let batch = 4;
    let eps = m.noise(7, batch).unwrap();
    let eps_t = Tensor::from_slice(&eps).reshape([batch as i64, c as i64, ny as i64, nx as i64]);

    // generate: the same eps gives the tch student's output to 1e-5
    let rc = m.residual_channels();
    assert_eq!(rc, meta.data.pde.family().residual_channels());
    let mut x = vec![0.0; batch * m.field_len()];
    let mut r = vec![0.0; batch * rc * ny * nx];
    m.generate_from(&eps, batch, &mut x, Some(&mut r)).unwrap();
    let xt = st.generate(&eps_t);
    assert!(
        rel(&x, &to_vec(&xt)) <= 1e-5,
        "generate: {}",
        rel(&x, &to_vec(&xt))
    );
    // R of a corrected student is float32 rounding noise: compared on the scale that sets it.
    let r_t = to_vec(&st.op.apply(&xt));
    let scale = st.op.rounding_scale(&xt);
    let err = r
        .iter()
        .zip(&r_t)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs() as f64));
    assert!(err <= 1e-5 * scale, "residual: {err} of {scale}");
    // seeded generation is deterministic
    let (mut a, mut b) = (
        vec![0.0; batch * m.field_len()],
        vec![0.0; batch * m.field_len()],
    );
    m.generate(7, batch, &mut a).unwrap();
    m.generate(7, batch, &mut b).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, x);

    // residual of given fields and its mean square against tch
    let mut r2 = vec![0.0; batch * rc * ny * nx];
    let ms = m.residual(&x, batch, &mut r2).unwrap();
    let ms_t = f64::try_from(
        st.op
            .mse_per_sample(&xt.to_kind(Kind::Double))
            .mean(Kind::Double),
    )
    .unwrap();
    assert!(
        (ms - ms_t).abs() <= 1e-4 * ms_t.max(1e-6 * scale * scale),
        "{ms} vs {ms_t}"
    );

    // solve: the family's inverse problem, the same start, the same optimiser
    let truth = st.generate(&Tensor::randn(
        [batch as i64, c as i64, ny as i64, nx as i64],
        tch::kind::FLOAT_CPU,
    ));
    let one = meta
        .data
        .pde
        .family()
        .task_mask(piddm_trainer::pde::Task::Inverse, meta.data.grid);
    let mask: Vec<u8> = (0..batch * m.field_len())
        .map(|i| (one[i % m.field_len()] > 0.0) as u8)
        .collect();
    let mask_t = Tensor::from_slice(&mask.iter().map(|&v| v as f32).collect::<Vec<_>>())
        .reshape(truth.size());
    let mut observed = to_vec(&truth);
    for (o, &k) in observed.iter_mut().zip(&mask) {
        if k == 0 {
            *o = f32::NAN; // unobserved entries are ignored, NaN included
        }
    }
    // both optimisers: the same code (piddm::optim) over ONNX Runtime and over tch
    for optimizer in [Optimizer::Adam, Optimizer::Lbfgs] {
        let params = SolveParams {
            steps: 15,
            learning_rate: 0.05,
            lambda_infer: 1e-6,
            seed: 0,
            start: piddm::card::Start::Random,
            optimizer,
            noise_scale: 1.0,
        };
        let mut out = vec![0.0; batch * m.field_len()];
        let rep = m
            .solve_from(eps.clone(), &observed, &mask, batch, &params, &mut out)
            .unwrap();
        let cfg = InferConfig {
            lambda: params.lambda_infer,
            steps: params.steps,
            lr: params.learning_rate,
            optimizer,
            noise_scale: params.noise_scale,
            determined: None,
        };
        let tr = st
            .solve(&eps_t, &(&truth * &mask_t), &mask_t, &cfg)
            .unwrap();
        let e = rel(&out, &to_vec(&tr.x));
        assert!(
            e <= 1e-3,
            "{optimizer:?} solve: runtime vs trainer relative difference {e}"
        );
        assert_eq!(rep.loss_history.len(), 16);
        for (a, b) in rep.loss_history.iter().zip(&tr.history) {
            assert!(
                (a - b).abs() <= 1e-3 * b.abs(),
                "{optimizer:?} loss history {a} vs {b}"
            );
        }
        assert!(rep.loss_history.last() < rep.loss_history.first());
        assert!(
            rep.misfit < 1e-6,
            "observed entries are kept: misfit {}",
            rep.misfit
        );
    }
}

#[test]
fn one_model_from_eight_threads_gives_serial_bits() {
    let f = fixture();
    let m = Model::load(
        &f.model,
        &Options {
            intra_op_threads: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let n = m.field_len();
    let serial: Vec<Vec<f32>> = (0..8u64)
        .map(|s| {
            let mut o = vec![0.0; 2 * n];
            m.generate(s, 2, &mut o).unwrap();
            o
        })
        .collect();
    let parallel: Vec<Vec<f32>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8u64)
            .map(|s| {
                let m = &m;
                sc.spawn(move || {
                    let mut o = vec![0.0; 2 * n];
                    for _ in 0..5 {
                        m.generate(s, 2, &mut o).unwrap();
                    }
                    o
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(serial, parallel);
}

#[test]
fn bad_input_gets_its_status() {
    let f = fixture();
    let m = Model::load(&f.model, &Options::default()).unwrap();
    let n = m.field_len();
    let mut out = vec![0.0; n];
    assert_eq!(
        m.generate(1, 1, &mut out[..n - 1]).unwrap_err().status,
        Status::PIDDM_ERR_SIZE
    );
    assert_eq!(
        m.generate(1, 0, &mut out).unwrap_err().status,
        Status::PIDDM_ERR_INVALID_ARGUMENT
    );
    let mut nan = vec![0.0; n];
    nan[3] = f32::NAN;
    let mut r = vec![0.0; n / 2];
    assert_eq!(
        m.residual(&nan, 1, &mut r).unwrap_err().status,
        Status::PIDDM_ERR_NONFINITE
    );
    let mask = vec![1u8; n];
    let p = m.default_solve_params();
    assert_eq!(
        m.solve(&nan, &mask, 1, &p, &mut out).unwrap_err().status,
        Status::PIDDM_ERR_NONFINITE
    );
    assert_eq!(
        m.solve(&out.clone(), &mask[..n - 2], 1, &p, &mut out)
            .unwrap_err()
            .status,
        Status::PIDDM_ERR_SIZE
    );
    let bad = SolveParams {
        learning_rate: -1.0,
        ..p
    };
    assert_eq!(
        m.solve(&out.clone(), &mask, 1, &bad, &mut out)
            .unwrap_err()
            .status,
        Status::PIDDM_ERR_INVALID_ARGUMENT
    );

    let dir = tempfile::tempdir().unwrap();
    let e = Model::load(dir.path().join("missing.onnx"), &Options::default())
        .err()
        .unwrap();
    assert_eq!(e.status, Status::PIDDM_ERR_IO, "{}", e.message);
    // truncated main file
    let t = dir.path().join("t.onnx");
    let bytes = std::fs::read(&f.model).unwrap();
    std::fs::write(&t, &bytes[..bytes.len() / 2]).unwrap();
    let e = Model::load(&t, &Options::default()).err().unwrap();
    assert_eq!(e.status, Status::PIDDM_ERR_FORMAT, "{}", e.message);
    // an ONNX file that is not a PIDDM model: the residual graph alone renamed as a main file
    // has a card of the wrong part; a foreign ONNX model has none
    let foreign = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/anchors/unet32_pytorch_export.onnx");
    if foreign.exists() {
        let e = Model::load(&foreign, &Options::default()).err().unwrap();
        assert_eq!(e.status, Status::PIDDM_ERR_FORMAT);
        assert!(e.message.contains("not a PIDDM model"), "{}", e.message);
    }
    let wrong = dir.path().join("w.onnx");
    std::fs::copy(
        piddm::card::sibling(&f.model, piddm::card::Part::Residual),
        &wrong,
    )
    .unwrap();
    let e = Model::load(&wrong, &Options::default()).err().unwrap();
    assert_eq!(e.status, Status::PIDDM_ERR_FORMAT);
    assert!(
        e.message.contains("expected the Generate graph"),
        "{}",
        e.message
    );
    // missing sibling
    let lone = dir.path().join("lone.onnx");
    std::fs::copy(&f.model, &lone).unwrap();
    let e = Model::load(&lone, &Options::default()).err().unwrap();
    assert_eq!(e.status, Status::PIDDM_ERR_IO);
    assert!(e.message.contains("lone.refine.onnx"), "{}", e.message);
    // CUDA without a GPU (or without the CUDA provider): a clear error, or the CPU when allowed
    let cuda = Options {
        device: piddm::Device::Cuda { device_id: 0 },
        ..Default::default()
    };
    match Model::load(&f.model, &cuda) {
        Ok(_) => {}
        Err(e) => {
            assert_eq!(e.status, Status::PIDDM_ERR_DEVICE, "{}", e.message);
            let m = Model::load(
                &f.model,
                &Options {
                    cuda_fallback_to_cpu: true,
                    ..cuda
                },
            )
            .unwrap();
            assert!(m.fell_back_to_cpu());
        }
    }
}

/// A graph whose shapes come out negative (a Pad by -1000 points, the kind of file tests/fuzz.rs
/// made from a mutated pads constant) made the `ort` binding panic while it read the session's
/// outputs. Sealed with a matching digest, as an author who recomputes it would, the graph is refused
/// with a status naming it when its session is made (its first use).
#[test]
fn graph_with_negative_shapes_is_a_status_not_a_panic() {
    use onnx_protobuf::{Message, ModelProto};
    use piddm::card::{self, Part};
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("bad.onnx");
    let parts = Part::all();
    let models: Vec<ModelProto> = parts
        .iter()
        .map(|&p| {
            ModelProto::parse_from_bytes(&std::fs::read(card::sibling(&f.model, p)).unwrap())
                .unwrap()
        })
        .collect();
    let mut models: [ModelProto; 3] = models.try_into().unwrap();
    let g = models[2].graph.as_mut().unwrap();
    let pads = g
        .node
        .iter()
        .find(|n| n.op_type == "Pad")
        .expect("the residual pads its interior")
        .input[1]
        .clone();
    let t = g.initializer.iter_mut().find(|t| t.name == pads).unwrap();
    let v: [i64; 8] = [0, 0, 1, 1, 0, 0, -1000, 1];
    t.raw_data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    t.int64_data.clear();
    let (mut card, _) = export::read_card(&f.model).unwrap();
    export::seal(&mut models, &mut card).unwrap();
    for (m, p) in models.iter().zip(parts) {
        std::fs::write(card::sibling(&main, p), m.write_to_bytes().unwrap()).unwrap();
    }
    // Its digest and declared interface are the card's, so it loads; the residual graph's session
    // is made when a call first needs it, and that call gets the status.
    let m = Model::load(&main, &Options::default()).unwrap();
    let (c, ny, nx) = m.shape();
    let mut x = vec![0f32; c * ny * nx];
    m.generate(1, 1, &mut x).unwrap();
    let e = m
        .residual(&x, 1, &mut vec![0f32; ny * nx])
        .expect_err("refused");
    assert_eq!(e.status, Status::PIDDM_ERR_FORMAT, "{}", e.message);
    assert!(e.message.contains("bad.residual.onnx"), "{}", e.message);
    // and again on the next call: no session was kept
    assert!(m.residual(&x, 1, &mut vec![0f32; ny * nx]).is_err());
}

/// Every model shipped in examples/models loads, and its card's defaults answer its family's
/// forward problem on fresh problems from the family's solver.
#[test]
fn shipped_models_answer_their_forward_problem() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models");
    let mut families = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // main files only (NAME.onnx, not NAME.refine.onnx ...)
        if !name.ends_with(".onnx") || name.trim_end_matches(".onnx").contains('.') {
            continue;
        }
        let m = Model::load(&path, &Options::default()).unwrap();
        let card = m.card().clone();
        let pde = piddm_trainer::apps::examples::card_pde(&card).unwrap();
        let grid = piddm_trainer::pde::Grid::new(card.grid.nx).unwrap();
        let problems = 4;
        let truth = piddm_trainer::apps::examples::problems(&card, problems, 99)
            .unwrap()
            .data;
        let one = pde
            .family()
            .task_mask(piddm_trainer::pde::Task::Forward, grid);
        let field = m.field_len();
        let mask: Vec<u8> = (0..problems * field)
            .map(|i| (one[i % field] > 0.0) as u8)
            .collect();
        let mut x = vec![0f32; problems * field];
        m.solve(&truth, &mask, problems, &m.default_solve_params(), &mut x)
            .unwrap();
        let plane = grid.len();
        for s in pde.family().scored(piddm_trainer::pde::Task::Forward, grid) {
            let metric = pde.family().metric(s.channel);
            let err = (0..problems)
                .map(|p| {
                    let at = |v: &[f32]| s.pick(&v[p * field..(p + 1) * field], plane);
                    metric.of(&at(&x), &at(&truth))
                })
                .sum::<f64>()
                / problems as f64;
            assert!(err < 0.2, "{name}: forward {} {err}", s.label);
        }
        families.push(pde.name());
    }
    for shipped in ["darcy", "poisson", "helmholtz", "burgers", "navier_stokes"] {
        assert!(families.contains(&shipped), "{shipped} not in {families:?}");
    }
}

/// The demo on a model whose channels are time levels: its residual has one channel per level,
/// its report scores the levels as one field, and its figure shows three levels (a readable width:
/// 3 true, 2 forward of the later levels shown, 1 inverse, 3 generated, 1 residual).
#[test]
fn demo_runs_on_a_family_of_time_levels() {
    let f = fixture_of("navier_stokes");
    let dir = tempfile::tempdir().unwrap();
    let report =
        piddm_trainer::apps::demo::run(&f.model, 3, 1, dir.path(), piddm::card::Precision::Fp32)
            .unwrap();
    assert!(report.contains("rel. L2 of w for t > 0"), "{report}");
    assert!(report.contains("rel. L2 of w at t = 0"), "{report}");
    assert!(
        report.contains("columns: w0, w5, w10, forward w5, forward w10, inverse w0, generated w0"),
        "{report}"
    );
    let png = std::fs::read(dir.path().join("demo.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}
