//! Generates the C header from the `extern "C"` items. The committed `include/piddm.h` must equal
//! what this produces (a test checks); set PIDDM_WRITE_HEADER=1 to rewrite it.

fn main() {
    // cbindgen reads every public constant of the crate, not just ffi.rs: any source may change it.
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=PIDDM_WRITE_HEADER");
    println!("cargo:rerun-if-env-changed=PIDDM_ORT_LIBRARY");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let mut config =
        cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).expect("cbindgen.toml");
    let v = |k: &str| std::env::var(k).unwrap();
    config.after_includes = Some(format!(
        "\n#define PIDDM_VERSION_MAJOR {}\n#define PIDDM_VERSION_MINOR {}\n#define PIDDM_VERSION_PATCH {}\n#define PIDDM_VERSION \"{}\"",
        v("CARGO_PKG_VERSION_MAJOR"),
        v("CARGO_PKG_VERSION_MINOR"),
        v("CARGO_PKG_VERSION_PATCH"),
        v("CARGO_PKG_VERSION")
    ));
    let bindings = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("generating the C header");
    let out = std::path::PathBuf::from(v("OUT_DIR")).join("piddm.h");
    bindings.write_to_file(&out);
    if std::env::var("PIDDM_WRITE_HEADER").is_ok() {
        std::fs::copy(&out, format!("{dir}/include/piddm.h")).expect("writing include/piddm.h");
    }
}
