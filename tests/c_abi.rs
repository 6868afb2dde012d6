//! The C ABI from C, C++ and Fortran programs compiled and run here against the built library;
//! the header's hygiene and drift; many load / generate / solve / free cycles under
//! AddressSanitizer.
//!
//! The model is `tests/data/tiny.onnx` (+ siblings), written by the exporter on the `tiny` preset:
//!   piddm-train pipeline --preset tiny --out runs/tiny
//!   piddm-train amortise --preset tiny --student runs/tiny/student.ckpt \
//!     --data runs/tiny/data-train.safetensors --out runs/tiny/encoder.ckpt
//!   piddm-train export --student runs/tiny/student.ckpt --preset tiny \
//!     --encoder runs/tiny/encoder.ckpt --out tests/data/tiny.onnx
//! `tests/data/v2/` holds the same student as exported before the amortised part existed (card
//! format 2): the artifact an earlier release wrote.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::{libdir, run};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model() -> PathBuf {
    root().join("tests/data/tiny.onnx")
}

fn link_args(cmd: &mut Command) -> &mut Command {
    let lib = libdir();
    cmd.arg(format!("-I{}", root().join("include").display()))
        .arg(format!("-I{}", root().join("bindings/cpp").display()))
        .arg(format!("-L{}", lib.display()))
        .arg("-lpiddm")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
}

/// A valid ONNX model that is not a PIDDM model, written by the `onnx` package.
fn foreign_model(dir: &Path) -> PathBuf {
    let py =
        std::env::var("PIDDM_PYTHON").expect("PIDDM_PYTHON not set: run through scripts/test.sh");
    let path = dir.join("identity.onnx");
    let code = format!(
        "import onnx\nfrom onnx import helper, TensorProto as T\n\
         g = helper.make_graph([helper.make_node('Identity', ['eps'], ['x'])], 'g', \
         [helper.make_tensor_value_info('eps', T.FLOAT, [1, 2, 16, 16])], [helper.make_tensor_value_info('x', T.FLOAT, [1, 2, 16, 16])])\n\
         m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)]); m.ir_version = 8\n\
         onnx.save(m, {:?})\n",
        path.to_str().unwrap()
    );
    run(Command::new(py).arg("-c").arg(code));
    path
}

fn assert_counts(out: &str) {
    let line = out
        .lines()
        .rev()
        .find(|l| l.contains(" passed, "))
        .unwrap_or_else(|| panic!("no summary in:\n{out}"));
    assert!(line.trim().ends_with(" 0 failed"), "{out}");
    print!("{out}");
}

#[test]
fn c_program() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.onnx");
    let bytes = std::fs::read(model()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let foreign = foreign_model(dir.path());
    let exe = dir.path().join("test_api");
    let mut cc = Command::new("cc");
    cc.args([
        "-std=c99",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
        "-O1",
    ])
    .arg(root().join("tests/c/test_api.c"))
    .arg("-o")
    .arg(&exe);
    run(link_args(&mut cc).arg("-lm"));
    assert_counts(&run(Command::new(&exe)
        .arg(model())
        .arg(&truncated)
        .arg(&foreign)));
}

#[test]
fn header_compiles_alone_twice_from_c_and_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let src = root().join("tests/c/header_twice.c");
    run(link_args(
        Command::new("cc")
            .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"])
            .arg(&src)
            .arg("-o")
            .arg(dir.path().join("c")),
    ));
    run(link_args(
        Command::new("c++")
            .args([
                "-std=c++11",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pedantic",
                "-x",
                "c++",
            ])
            .arg(&src)
            .arg("-o")
            .arg(dir.path().join("cpp")),
    ));
    run(&mut Command::new(dir.path().join("c")));
}

#[test]
fn header_has_not_drifted() {
    let generated = std::fs::read_to_string(Path::new(env!("OUT_DIR")).join("piddm.h")).unwrap();
    let committed = std::fs::read_to_string(root().join("include/piddm.h")).unwrap();
    assert!(generated == committed, "include/piddm.h differs from what cbindgen generates now: regenerate with PIDDM_WRITE_HEADER=1 cargo build --release and commit it");
}

#[test]
fn cpp_program() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("test_api");
    let mut cc = Command::new("c++");
    cc.args([
        "-std=c++17",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-O1",
        "-pthread",
    ])
    .arg(root().join("tests/cpp/test_api.cpp"))
    .arg("-o")
    .arg(&exe);
    run(link_args(&mut cc));
    assert_counts(&run(Command::new(&exe).arg(model())));
}

/// Compiles the Fortran module (strictly) and the program tests/fortran/`program` into `exe`,
/// linked against the library.
fn fortran_exe(dir: &Path, program: &str, exe: &Path) {
    run(Command::new("gfortran")
        .args([
            "-std=f2018",
            "-Wall",
            "-Werror",
            "-Wno-c-binding-type",
            "-c",
        ])
        .arg(root().join("bindings/fortran/piddm.f90"))
        .arg("-J")
        .arg(dir)
        .arg("-o")
        .arg(dir.join("piddm.o")));
    let mut fc = Command::new("gfortran");
    fc.arg(format!("-I{}", dir.display()))
        .arg(root().join("tests/fortran").join(program))
        .arg(dir.join("piddm.o"))
        .arg("-o")
        .arg(exe);
    run(link_args(&mut fc));
}

#[test]
fn fortran_program() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("test_api");
    fortran_exe(dir.path(), "test_api.f90", &exe);
    assert_counts(&run(Command::new(&exe).arg(model())));
}

/// The Fortran module's bind(c) types have the header's sizes and field offsets.
#[test]
fn fortran_structs_match_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("layout_c");
    run(link_args(
        Command::new("cc")
            .args(["-std=c99", "-Wall", "-Werror"])
            .arg(root().join("tests/c/layout.c"))
            .arg("-o")
            .arg(&c),
    ));
    let f = dir.path().join("layout_f");
    fortran_exe(dir.path(), "layout.f90", &f);
    let from_c = run(&mut Command::new(&c));
    let from_f = run(&mut Command::new(&f));
    assert_eq!(from_c.lines().count(), 28, "{from_c}");
    assert_eq!(from_c, from_f, "C:\n{from_c}\nFortran:\n{from_f}");
}

fn cycles_exe(dir: &Path, sanitize: bool) -> PathBuf {
    let exe = dir.join(if sanitize { "cycles_asan" } else { "cycles" });
    let mut cc = Command::new("cc");
    cc.args(["-std=c99", "-g", "-O1"]);
    if sanitize {
        cc.args(["-fsanitize=address", "-fno-omit-frame-pointer"]);
    }
    cc.arg(root().join("tests/c/cycles.c")).arg("-o").arg(&exe);
    run(link_args(&mut cc));
    exe
}

/// 1000 load / generate / solve / free cycles: resident memory after warm-up must not grow (the
/// program fails above 4 MB over 900 cycles, i.e. 4.5 kB a cycle).
#[test]
fn thousand_cycles_do_not_leak() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(cycles_exe(dir.path(), false))
        .arg(model())
        .arg("1000"));
    println!("{out}");
    assert!(out.contains("cycles 1000"), "{out}");
}

/// The same cycles under AddressSanitizer and LeakSanitizer (fewer: ASan makes each ~5x slower):
/// any invalid access aborts, any leak of ours fails at exit.
#[test]
fn cycles_under_address_sanitizer() {
    let dir = tempfile::tempdir().unwrap();
    let supp = dir.path().join("lsan.supp");
    // ONNX Runtime keeps process-wide singletons (loaded once, by design): not leaks of ours.
    std::fs::write(&supp, "leak:libonnxruntime\n").unwrap();
    let out = run(Command::new(cycles_exe(dir.path(), true))
        .arg(model())
        .arg("60")
        .arg("0")
        .env(
            "ASAN_OPTIONS",
            "detect_leaks=1:abort_on_error=1:malloc_context_size=8",
        )
        .env(
            "LSAN_OPTIONS",
            format!("suppressions={}:print_suppressions=0", supp.display()),
        ));
    println!("{out}");
    assert!(out.contains("cycles 60"), "{out}");
}

/// The CMake package and pkg-config file, installed to a prefix and used by a consumer project.
#[test]
fn cmake_package_and_pkg_config() {
    let dir = tempfile::tempdir().unwrap();
    let (build, prefix, cbuild) = (
        dir.path().join("build"),
        dir.path().join("prefix"),
        dir.path().join("consumer"),
    );
    let lib = libdir().join("libpiddm.so");
    run(Command::new("cmake")
        .arg("-S")
        .arg(root().join("bindings"))
        .arg("-B")
        .arg(&build)
        .arg(format!("-DPIDDM_LIBRARY={}", lib.display())));
    run(Command::new("cmake").arg("--build").arg(&build));
    run(Command::new("cmake")
        .arg("--install")
        .arg(&build)
        .arg("--prefix")
        .arg(&prefix));
    run(Command::new("cmake")
        .arg("-S")
        .arg(root().join("tests/cmake_consumer"))
        .arg("-B")
        .arg(&cbuild)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display())));
    run(Command::new("cmake").arg("--build").arg(&cbuild));
    assert!(run(Command::new(cbuild.join("consumer_c")).arg(model())).contains("generate ok"));
    assert!(run(Command::new(cbuild.join("consumer_f")).arg(model())).contains("generate ok"));
    // pkg-config: compile the C consumer with only what the .pc file says
    let pc = run(Command::new("pkg-config")
        .args(["--cflags", "--libs", "piddm"])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")));
    let exe = dir.path().join("pc_consumer");
    let mut cc = Command::new("cc");
    cc.arg(root().join("tests/cmake_consumer/main.c"))
        .arg("-o")
        .arg(&exe)
        .args(pc.split_whitespace());
    run(&mut cc);
    assert!(run(Command::new(&exe).arg(model())).contains("generate ok"));
}
