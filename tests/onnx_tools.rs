//! The shipped models through the ONNX ecosystem's own tools, as a user passes them: re-saved with
//! the `onnx` package they still load verified and answer bit for bit as before; edited after the
//! same round trip they are refused, saying whether weights or structure changed and how to
//! re-seal; and plain ONNX Runtime from Python gives what `piddm_generate` gives.
//! Python is the set-up's venv (`PIDDM_PYTHON`, from `scripts/setup.sh`'s env.sh).

use piddm::card::{sibling, Part};
use piddm::{Model, Options};
use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> String {
    std::env::var("PIDDM_PYTHON").expect(
        "PIDDM_PYTHON is not set: run the tests through scripts/test.sh (it sources the set-up's env.sh)",
    )
}

/// Runs a Python program with `args`; fails the test with its output if it fails.
fn py(program: &str, args: &[&std::ffi::OsStr]) {
    let out = Command::new(python())
        .arg("-c")
        .arg(program)
        .args(args)
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "python failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The main file of every shipped model.
fn shipped() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".onnx") && name.matches('.').count() == 1
        })
        .collect();
    v.sort();
    assert!(v.len() >= 4, "shipped models: {v:?}");
    v
}

fn parts(m: &Model) -> Vec<Part> {
    m.card().parts()
}

/// A copy of the model at `main` in `dir`, every part.
fn copy(main: &Path, dir: &Path) -> PathBuf {
    let to = dir.join(main.file_name().unwrap());
    let m = Model::load(main, &Options::default()).unwrap();
    for p in parts(&m) {
        std::fs::copy(sibling(main, p), sibling(&to, p)).unwrap();
    }
    to
}

/// What a model answers: two generated samples, their residual, and a forward solve with the
/// card's defaults.
fn answers(m: &Model) -> Vec<u32> {
    let (c, ny, nx) = m.shape();
    let n = 2 * c * ny * nx;
    let mut x = vec![0f32; n];
    m.generate(7, 2, &mut x).unwrap();
    let mut r = vec![0f32; 2 * m.residual_channels() * ny * nx];
    m.residual(&x, 2, &mut r).unwrap();
    let mask: Vec<u8> = (0..n)
        .map(|i| (i % (c * ny * nx) < ny * nx) as u8)
        .collect();
    let mut solved = vec![0f32; n];
    m.solve(&x, &mask, 2, &m.default_solve_params(), &mut solved)
        .unwrap();
    x.iter()
        .chain(&r)
        .chain(&solved)
        .map(|v| v.to_bits())
        .collect()
}

const RESAVE: &str = "
import sys, onnx
for f in sys.argv[1:]:
    onnx.save(onnx.load(f), f)
";

#[test]
fn onnx_save_keeps_every_shipped_model_verified_and_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    for main in shipped() {
        let before = Model::load(&main, &Options::default()).unwrap();
        let copied = copy(&main, dir.path());
        let files: Vec<PathBuf> = parts(&before)
            .iter()
            .map(|&p| sibling(&copied, p))
            .collect();
        let refs: Vec<&std::ffi::OsStr> = files.iter().map(|f| f.as_os_str()).collect();
        py(RESAVE, &refs);
        for (p, f) in parts(&before).iter().zip(&files) {
            assert_eq!(
                std::fs::read(f).unwrap(),
                std::fs::read(sibling(&main, *p)).unwrap(),
                "onnx.save changed the bytes of {}",
                f.display()
            );
        }
        let after = Model::load(&copied, &Options::default())
            .unwrap_or_else(|e| panic!("{} after onnx.save: {e}", main.display()));
        assert_eq!(answers(&after), answers(&before), "{}", main.display());
    }
}

#[test]
fn edits_after_a_round_trip_are_refused_naming_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let main = shipped()
        .into_iter()
        .find(|p| p.ends_with("poisson32.onnx"))
        .unwrap();
    let cases = [
        (
            "weight",
            "
import sys, onnx
from onnx import numpy_helper
f = sys.argv[1]
m = onnx.load(f)
t = next(t for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 4)
a = numpy_helper.to_array(t).copy()
a.flat[0] += 1e-3
t.CopyFrom(numpy_helper.from_array(a, t.name))
onnx.save(m, f)
",
            "its weights (initializer values) do not match",
        ),
        (
            "attribute",
            "
import sys, onnx
f = sys.argv[1]
m = onnx.load(f)
a = next(a for n in m.graph.node if n.op_type == 'Conv' for a in n.attribute if a.name == 'strides')
a.ints[0] = 2 if a.ints[0] == 1 else 1
onnx.save(m, f)
",
            "its operators, attributes or wiring do not match",
        ),
    ];
    for (what, program, says) in cases {
        let sub = dir.path().join(what);
        std::fs::create_dir(&sub).unwrap();
        let copied = copy(&main, &sub);
        let refine = sibling(&copied, Part::Refine);
        py(program, &[refine.as_os_str()]);
        let e = Model::load(&copied, &Options::default())
            .err()
            .unwrap_or_else(|| panic!("an edited {what} loaded"));
        let m = e.to_string();
        assert!(m.contains(says), "{what}: {m}");
        assert!(m.contains("poisson32.refine.onnx"), "{what}: {m}");
        assert!(m.contains("piddm-train seal"), "{what}: {m}");
    }
}

#[test]
fn plain_onnx_runtime_from_python_gives_what_generate_gives() {
    let dir = tempfile::tempdir().unwrap();
    let program = "
import sys, numpy as np, onnxruntime as ort
model, eps_file, shape, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
session = ort.InferenceSession(model)
eps = np.fromfile(eps_file, dtype=np.float32).reshape([int(d) for d in shape.split(',')])
x, residual = session.run(['x', 'residual'], {'eps': eps})
x.astype(np.float32).tofile(out)
";
    for main in shipped() {
        let m = Model::load(&main, &Options::default()).unwrap();
        let (c, ny, nx) = m.shape();
        let batch = 3;
        let eps = m.noise(11, batch).unwrap();
        let eps_file = dir.path().join("eps.f32");
        std::fs::write(
            &eps_file,
            eps.iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        let out = dir.path().join("x.f32");
        let shape = format!("{batch},{c},{ny},{nx}");
        py(
            program,
            &[
                main.as_os_str(),
                eps_file.as_os_str(),
                shape.as_ref(),
                out.as_os_str(),
            ],
        );
        let got: Vec<f32> = std::fs::read(&out)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let mut want = vec![0f32; batch * c * ny * nx];
        m.generate(11, batch, &mut want).unwrap();
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
        assert_eq!(got.len(), want.len());
        assert!(
            worst <= 1e-6 * scale,
            "{}: python's x differs from piddm_generate's by {worst} (scale {scale})",
            main.display()
        );
    }
}

/// A caller that only generates gets no session of the other graphs; each is made when a call
/// first needs it (checked at load against its declarations all the same). With two threads, a
/// batch of two runs as two single-threaded halves side by side: two more sessions of the graph
/// it uses, and the same numbers as one session running the whole batch.
#[test]
fn sessions_are_made_when_a_call_first_needs_them() {
    let main = shipped()
        .into_iter()
        .find(|p| p.ends_with("darcy32.onnx"))
        .unwrap();
    let two = Options {
        intra_op_threads: 2,
        ..Options::default()
    };
    let m = Model::load(&main, &two).unwrap();
    let sessions = |m: &Model| {
        [
            Part::Generate,
            Part::Refine,
            Part::Residual,
            Part::Amortised,
        ]
        .map(|p| m.sessions(p))
    };
    assert_eq!(sessions(&m), [1, 0, 0, 0]);
    let (c, ny, nx) = m.shape();
    let n = 2 * c * ny * nx;
    let mut x = vec![0f32; n];
    m.generate(1, 1, &mut x[..n / 2]).unwrap();
    assert_eq!(sessions(&m), [1, 0, 0, 0]);
    m.generate(1, 2, &mut x).unwrap();
    assert_eq!(sessions(&m), [3, 0, 0, 0]);
    let mut r = vec![0f32; 2 * ny * nx];
    m.residual(&x, 2, &mut r).unwrap();
    assert_eq!(sessions(&m), [3, 0, 2, 0]);
    let mask: Vec<u8> = (0..n)
        .map(|i| (i % (c * ny * nx) < ny * nx) as u8)
        .collect();
    let one_call = piddm::SolveParams {
        steps: 0,
        start: piddm::card::Start::Amortised,
        ..m.default_solve_params()
    };
    let mut out = vec![0f32; n];
    m.solve(&x, &mask, 2, &one_call, &mut out).unwrap();
    assert_eq!(sessions(&m)[1..], [0, 2, 2]);
    let defaults = m.default_solve_params();
    assert!(defaults.steps > 0);
    m.solve(&x, &mask, 2, &defaults, &mut out).unwrap();
    assert_eq!(sessions(&m)[1], 2);

    // the split changes no number: one single-threaded session over the whole batch
    let one = Model::load(
        &main,
        &Options {
            intra_op_threads: 1,
            ..Options::default()
        },
    )
    .unwrap();
    let (mut y, mut out1) = (vec![0f32; n], vec![0f32; n]);
    one.generate(1, 2, &mut y).unwrap();
    assert_eq!(x, y);
    let mut r1 = vec![0f32; 2 * ny * nx];
    one.residual(&x, 2, &mut r1).unwrap();
    assert_eq!(r, r1);
    let rep = m.solve(&x, &mask, 2, &defaults, &mut out).unwrap();
    let rep1 = one.solve(&x, &mask, 2, &defaults, &mut out1).unwrap();
    assert_eq!(out, out1);
    assert_eq!(rep.loss_history, rep1.loss_history);
    assert_eq!(sessions(&one), [1, 1, 1, 1]);
}
