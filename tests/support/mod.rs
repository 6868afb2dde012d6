//! Shared by the test programs that drive native code (tests/c_abi.rs, trainer/tests/examples.rs):
//! running a command, the shared library those programs link, and the parts of an artifact.
// Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Runs `cmd`; fails the test with its whole output if it fails. Returns stdout + stderr.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The directory holding libpiddm.so: the profile directory of this test binary. `cargo test`
/// builds only the rlib for integration tests, so the shared library is built here, once per run,
/// from the same sources (a stale or missing .so would test the wrong code).
pub fn libdir() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
            let target_dir = profile_dir.parent().unwrap();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", "piddm", "--lib", "--target-dir"])
                .arg(target_dir);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            run(&mut cmd);
            assert!(
                profile_dir.join("libpiddm.so").exists(),
                "libpiddm.so not found in {} after building it",
                profile_dir.display()
            );
            profile_dir
        })
        .clone()
}

/// The parts of the artifact whose main file is `main`, as its card names them.
pub fn parts(main: &std::path::Path) -> Vec<piddm::card::Part> {
    let bytes = std::fs::read(main).unwrap();
    let s = piddm::artifact::scan(&bytes).unwrap();
    let json = s.metadata(piddm::card::CARD_KEY).unwrap().unwrap();
    piddm::card::ModelCard::from_json(json).unwrap().parts()
}
