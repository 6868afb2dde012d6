//! Hostile calls and crafted files, each in its own process through the C ABI
//! (`tests/c/hostile.c`): the process must exit normally, within a time limit, with the documented
//! status. The table in the README's "Reliability" section is this file's list of cases.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{libdir, run};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model() -> PathBuf {
    root().join("tests/data/tiny.onnx")
}

fn exe() -> PathBuf {
    static EXE: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    EXE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("hostile");
        let lib = libdir();
        run(Command::new("cc")
            .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O1"])
            .arg(root().join("tests/c/hostile.c"))
            .arg(format!("-I{}", root().join("include").display()))
            .arg(format!("-L{}", lib.display()))
            .arg("-lpiddm")
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .arg("-o")
            .arg(&exe));
        (dir, exe)
    })
    .1
    .clone()
}

/// Runs one case in its own process; returns (status name, message). Fails on a signal, a
/// nonzero exit or a hang.
fn case(name: &str, file: Option<&Path>) -> (String, String) {
    let mut cmd = Command::new(exe());
    cmd.arg(name).arg(model());
    if let Some(f) = file {
        cmd.arg(f);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().ok();
            panic!("case {name} hung (killed after 60 s)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.code() == Some(0),
        "case {name} ended with {:?}:\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or("")
            .to_string()
    };
    (field("status "), field("message "))
}

fn expect(name: &str, file: Option<&Path>, status: &str, message: &str) {
    let (s, m) = case(name, file);
    assert_eq!(s, status, "case {name}: {m}");
    assert!(
        m.contains(message),
        "case {name}: message {m:?} lacks {message:?}"
    );
}

#[test]
fn hostile_calls() {
    expect("status_name", None, "PIDDM_OK", "");
    for c in [
        "generate_batch_max",
        "generate_batch_over_limit",
        "generate_batch_huge_len",
        "residual_batch_max",
        "solve_batch_max",
    ] {
        expect(c, None, "PIDDM_ERR_SIZE", "batch");
    }
    for c in [
        "solve_steps_negative",
        "solve_steps_huge",
        "solve_steps_over_limit",
    ] {
        expect(c, None, "PIDDM_ERR_INVALID_ARGUMENT", "steps");
    }
    expect(
        "solve_lr_nan",
        None,
        "PIDDM_ERR_INVALID_ARGUMENT",
        "learning rate",
    );
    expect(
        "solve_lambda_negative",
        None,
        "PIDDM_ERR_INVALID_ARGUMENT",
        "lambda",
    );
    expect(
        "device_unknown",
        None,
        "PIDDM_ERR_INVALID_ARGUMENT",
        "device",
    );
    expect(
        "threads_negative",
        None,
        "PIDDM_ERR_INVALID_ARGUMENT",
        "intra_op_threads",
    );
    expect("clone_null", None, "PIDDM_ERR_NULL", "model");
}

/// A program built against ABI 1 gets a status, never a crash or a misread struct.
#[test]
fn callers_built_against_abi_1() {
    expect("options_default_v1", None, "PIDDM_ERR_ABI", "ABI 1");
    expect("params_default_v1", None, "PIDDM_ERR_ABI", "ABI 1");
    expect("options_v1", None, "PIDDM_ERR_ABI", "opts->size");
    expect("params_v1", None, "PIDDM_ERR_ABI", "params->size");
    expect("report_v1", None, "PIDDM_ERR_ABI", "report->size");
    expect("options_init_size", None, "PIDDM_ERR_ABI", "piddm_options");
    expect("options_init_first_layout", None, "PIDDM_OK", "");
    expect(
        "params_init_size",
        None,
        "PIDDM_ERR_ABI",
        "piddm_solve_params",
    );
    expect(
        "report_init_size",
        None,
        "PIDDM_ERR_ABI",
        "piddm_solve_report",
    );
}

/// A program compiled against the ABI 1 header as released (`tests/c/abi1/piddm.h`) and linked to
/// this library: NULL options and parameters keep working, the rest is PIDDM_ERR_ABI.
#[test]
fn program_compiled_against_abi_1() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("abi1_caller");
    let lib = libdir();
    run(Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O1"])
        .arg(root().join("tests/c/abi1_caller.c"))
        .arg(format!("-I{}", root().join("tests/c/abi1").display()))
        .arg(format!("-L{}", lib.display()))
        .arg("-lpiddm")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&exe));
    let out = run(Command::new(&exe).arg(model()));
    for line in [
        "header_abi 1 library_abi 2",
        "options_default PIDDM_ERR_ABI",
        "load_with_options PIDDM_ERR_ABI",
        "load_null_options PIDDM_OK",
        "generate PIDDM_OK",
        "solve_params_default PIDDM_ERR_ABI",
        "solve_with_params PIDDM_ERR_ABI",
        "solve_null_params PIDDM_OK",
        "solve_with_report PIDDM_ERR_ABI",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "no line {line:?} in:\n{out}"
        );
    }
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn read_varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0;
    for i in 0.. {
        let x = b[*pos];
        *pos += 1;
        v |= ((x & 0x7f) as u64) << (7 * i);
        if x & 0x80 == 0 {
            break;
        }
    }
    v
}

/// The top-level fields of a serialised ModelProto as (number, whole field bytes): a second,
/// independent reading of the wire format for crafting files.
fn fields(b: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < b.len() {
        let start = pos;
        let tag = read_varint(b, &mut pos);
        match tag & 7 {
            0 => {
                read_varint(b, &mut pos);
            }
            1 => pos += 8,
            2 => {
                let n = read_varint(b, &mut pos) as usize;
                pos += n;
            }
            5 => pos += 4,
            w => panic!("wire type {w}"),
        }
        out.push((tag >> 3, b[start..pos].to_vec()));
    }
    out
}

fn metadata_entry(key: &str, value: &str) -> Vec<u8> {
    let mut e = Vec::new();
    for (n, s) in [(1u64, key), (2, value)] {
        varint(n << 3 | 2, &mut e);
        varint(s.len() as u64, &mut e);
        e.extend_from_slice(s.as_bytes());
    }
    let mut f = Vec::new();
    varint(14 << 3 | 2, &mut f);
    varint(e.len() as u64, &mut f);
    f.extend_from_slice(&e);
    f
}

/// The model card of a file, parsed.
fn card_of(bytes: &[u8]) -> serde_json::Value {
    let s = piddm::artifact::scan(bytes).unwrap();
    serde_json::from_str(s.metadata(piddm::card::CARD_KEY).unwrap().unwrap()).unwrap()
}

/// Copies the shipped tiny artifact into `dir` under `name`, editing every file's card (or,
/// with `raw`, writing the main file's card metadata as given).
fn crafted(
    dir: &Path,
    name: &str,
    edit: impl Fn(&mut serde_json::Value),
    raw: Option<&str>,
) -> PathBuf {
    let src = model();
    let main = dir.join(format!("{name}.onnx"));
    for part in support::parts(&src) {
        let bytes = std::fs::read(piddm::card::sibling(&src, part)).unwrap();
        let mut card = card_of(&bytes);
        edit(&mut card);
        let json = match (raw, part) {
            (Some(r), piddm::card::Part::Generate) => r.to_string(),
            _ => card.to_string(),
        };
        let mut out = Vec::new();
        for (n, f) in fields(&bytes) {
            if n != 14 {
                out.extend_from_slice(&f);
            }
        }
        out.extend_from_slice(&metadata_entry(piddm::card::CARD_KEY, &json));
        std::fs::write(piddm::card::sibling(&main, part), out).unwrap();
    }
    main
}

#[test]
fn crafted_and_special_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // sanity: an unedited rewrite loads, so each failure below is the edit's
    let same = crafted(d, "same", |_| {}, None);
    expect("load", Some(&same), "PIDDM_OK", "");

    let fifo = d.join("fifo.onnx");
    run(Command::new("mkfifo").arg(&fifo));
    expect("load", Some(&fifo), "PIDDM_ERR_IO", "FIFO");
    expect(
        "load",
        Some(Path::new("/dev/zero")),
        "PIDDM_ERR_IO",
        "device",
    );
    let link = d.join("zero.onnx");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    expect("load", Some(&link), "PIDDM_ERR_IO", "device");
    expect("load", Some(d), "PIDDM_ERR_IO", "directory");
    let huge = d.join("huge.onnx");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(piddm::limits::MAX_FILE_BYTES + 1)
        .unwrap();
    expect("load", Some(&huge), "PIDDM_ERR_SIZE", "bytes");
    let trunc = d.join("truncated.onnx");
    let bytes = std::fs::read(model()).unwrap();
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    expect("load", Some(&trunc), "PIDDM_ERR_FORMAT", "truncated");

    let grid = crafted(
        d,
        "grid",
        |c| {
            c["grid"]["nx"] = 1_000_000.into();
            c["grid"]["ny"] = 1_000_000.into();
        },
        None,
    );
    expect("load", Some(&grid), "PIDDM_ERR_FORMAT", "grid");
    // a spread calibration needs a card of format 6 or later
    let spread = crafted(
        d,
        "spread",
        |c| {
            c["spread"] = serde_json::json!({"noise_scale": 1.0, "answers": 8, "coverage": 0.95,
                "problems": 32, "seed": 1, "tasks": [{"task": "inverse", "given": "all of u",
                "observed": [0.0, 1.0], "std_scale": 1.5}]});
        },
        None,
    );
    expect(
        "load",
        Some(&spread),
        "PIDDM_ERR_FORMAT",
        "spread in a format",
    );
    // the fit of the determined modes comes with its resolve graph (card format 7)
    let det = serde_json::json!({"channel": 0, "rows": [0, 1], "modes": [{"ky": 0, "kx": 1,
        "phase": "cos", "std": 0.5}], "noise": 3e-3, "iterations": 8});
    let lone = crafted(
        d,
        "determined",
        |c| {
            c["format"] = 7.into();
            c["graph_structure_sha256"] = c["graph_sha256"].clone();
            c["determined"] = det.clone();
        },
        None,
    );
    expect("load", Some(&lone), "PIDDM_ERR_FORMAT", "come together");
    let old = crafted(d, "determined6", |c| c["determined"] = det.clone(), None);
    expect("load", Some(&old), "PIDDM_ERR_FORMAT", "in a format");

    let values = crafted(
        d,
        "values",
        |c| {
            c["grid"]["nx"] = 4096.into();
            c["grid"]["ny"] = 4096.into();
        },
        None,
    );
    expect(
        "load",
        Some(&values),
        "PIDDM_ERR_FORMAT",
        "values per sample",
    );
    // a card within the limits that disagrees with its graph's declared shapes
    let shape = crafted(
        d,
        "shape",
        |c| {
            c["grid"]["nx"] = 2048.into();
            c["grid"]["ny"] = 2048.into();
        },
        None,
    );
    expect("load", Some(&shape), "PIDDM_ERR_FORMAT", "has shape");
    let steps = crafted(
        d,
        "steps",
        |c| c["defaults"]["steps"] = 1_000_000_000_000u64.into(),
        None,
    );
    expect("load", Some(&steps), "PIDDM_ERR_FORMAT", "default steps");
    let lr = crafted(
        d,
        "lr",
        |c| c["defaults"]["learning_rate"] = (-1.0).into(),
        None,
    );
    expect("load", Some(&lr), "PIDDM_ERR_FORMAT", "learning rate");
    let scale = crafted(
        d,
        "scale",
        |c| c["normalisation"]["scale"][0] = 0.0.into(),
        None,
    );
    expect("load", Some(&scale), "PIDDM_ERR_FORMAT", "normalisation");
    let chans = crafted(
        d,
        "chans",
        |c| {
            let ch = c["channels"][0].clone();
            c["channels"] = serde_json::Value::Array(vec![ch; 70]);
        },
        None,
    );
    expect("load", Some(&chans), "PIDDM_ERR_FORMAT", "channels");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let nested = crafted(d, "nested", |_| {}, Some(&deep));
    expect(
        "load",
        Some(&nested),
        "PIDDM_ERR_FORMAT",
        "invalid model card",
    );
    // a card edited in one file only: the three files no longer belong together
    let mixed = crafted(d, "mixed", |_| {}, None);
    let refine = piddm::card::sibling(&mixed, piddm::card::Part::Refine);
    std::fs::copy(
        piddm::card::sibling(
            &crafted(d, "other", |c| c["lambda_train"] = 5.0.into(), None),
            piddm::card::Part::Refine,
        ),
        &refine,
    )
    .unwrap();
    expect("load", Some(&mixed), "PIDDM_ERR_FORMAT", "different model");
    // format 1 (no digests): refused while verifying, loads with verification off
    let old = crafted(
        d,
        "old",
        |c| {
            c["format"] = 1.into();
            c.as_object_mut().unwrap().remove("graph_sha256");
        },
        None,
    );
    expect("load", Some(&old), "PIDDM_ERR_FORMAT", "re-export");
    expect("load_unverified", Some(&old), "PIDDM_OK", "");
    // the card names an amortised part whose file is missing, or whose digest it lacks
    let lost = crafted(d, "lost", |_| {}, None);
    std::fs::remove_file(piddm::card::sibling(&lost, piddm::card::Part::Amortised)).unwrap();
    expect("load", Some(&lost), "PIDDM_ERR_IO", "amortised graph");
    let undigested = crafted(
        d,
        "undigested",
        |c| {
            c["graph_sha256"]
                .as_object_mut()
                .unwrap()
                .remove("amortised");
        },
        None,
    );
    expect(
        "load",
        Some(&undigested),
        "PIDDM_ERR_FORMAT",
        "file and digest disagree",
    );
    // the amortised file holding another part's graph
    let swapped = crafted(d, "swapped", |_| {}, None);
    std::fs::copy(
        piddm::card::sibling(&swapped, piddm::card::Part::Refine),
        piddm::card::sibling(&swapped, piddm::card::Part::Amortised),
    )
    .unwrap();
    expect(
        "load",
        Some(&swapped),
        "PIDDM_ERR_FORMAT",
        "expected the Amortised graph",
    );
}

/// One byte of the weights changed, the card untouched: refused, naming the file.
#[test]
fn edited_weights_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("edited.onnx");
    for part in support::parts(&model()) {
        std::fs::copy(
            piddm::card::sibling(&model(), part),
            piddm::card::sibling(&main, part),
        )
        .unwrap();
    }
    let refine = piddm::card::sibling(&main, piddm::card::Part::Refine);
    let mut bytes = std::fs::read(&refine).unwrap();
    let s = piddm::artifact::scan(&bytes).unwrap();
    let g = s.graph.unwrap();
    let at = g.as_ptr() as usize - bytes.as_ptr() as usize + g.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::File::create(&refine)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    expect("load", Some(&main), "PIDDM_ERR_FORMAT", "does not match");
    let (_, m) = case("load", Some(&main));
    assert!(m.contains("edited.refine.onnx"), "{m}");
    // with verification off the edit is not detected: whatever ONNX Runtime makes of it, the
    // process survives
    let (s, _) = case("load_unverified", Some(&main));
    assert!(s == "PIDDM_OK" || s == "PIDDM_ERR_FORMAT", "{s}");
}
