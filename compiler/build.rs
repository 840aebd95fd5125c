//! Embeds the runtime (`libptap_rt.so`) in the `ptap` binary, so that one
//! installed file is the whole tool (`cargo install --path compiler`).
//!
//! Stable Cargo cannot depend on another package's cdylib (artifact
//! dependencies are unstable), and a build script cannot rely on the
//! workspace's own build of the runtime having finished before it runs.
//! So this script builds the runtime itself with a nested `cargo build`
//! of `runtime/so/` (the cdylib crate, over the core crate in `runtime/`)
//! in a target directory of its own (the outer build holds
//! the lock on its own target directory), in the same profile, offline
//! (the outer build has fetched every dependency), with the runtime's
//! debug info stripped (a 25 MB debug build becomes ~4 MB: ptap writes
//! this file for every session). Later builds are incremental: Cargo
//! re-runs this script only when the runtime's or arch's sources change.
//!
//! `PTAP_EMBED_RUNTIME=/path/libptap_rt.so` embeds that file instead (for
//! packagers that build the runtime separately).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    println!("cargo:rerun-if-env-changed=PTAP_EMBED_RUNTIME");
    println!("cargo:rerun-if-changed=build.rs");
    let dest = out.join("libptap_rt.so");
    if let Some(p) = std::env::var_os("PTAP_EMBED_RUNTIME") {
        let p = PathBuf::from(p);
        println!("cargo:rerun-if-changed={}", p.display());
        copy(&p, &dest);
        println!("cargo:rustc-env=PTAP_EMBEDDED_RT={}", dest.display());
        return;
    }
    for d in [
        "runtime/src",
        "runtime/Cargo.toml",
        "runtime/so/src",
        "runtime/so/Cargo.toml",
        "arch/src",
        "arch/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(d).display());
    }
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    let (profile, dir) = if release {
        ("release", "release")
    } else {
        ("dev", "debug")
    };
    // <target>/<profile>/build/ptap-compiler-HASH/out -> <target>/<profile>/ptap-rt
    let target_dir = out
        .ancestors()
        .nth(3)
        .map(|p| p.join("ptap-rt"))
        .unwrap_or_else(|| out.join("ptap-rt"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--offline")
        .arg("--lib")
        .arg("--manifest-path")
        .arg(root.join("runtime/so/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--profile")
        .arg(profile)
        .arg("--config")
        .arg(format!("profile.{profile}.strip=\"debuginfo\""));
    if release {
        // The hit path crosses crates and codegen units (the core, arch,
        // the C-ABI shim): whole-program LTO inlines across them and calls
        // directly instead of through the GOT (measured with bench/run's
        // kretprobe rows: ~1 ns less per hit, for ~20 s more build time).
        cmd.arg("--config")
            .arg("profile.release.lto=\"fat\"")
            .arg("--config")
            .arg("profile.release.codegen-units=1");
    }
    cmd.env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    let st = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the runtime: {e}"));
    assert!(st.success(), "building the runtime (runtime/so/) failed");
    copy(&target_dir.join(dir).join("libptap_rt.so"), &dest);
    println!("cargo:rustc-env=PTAP_EMBEDDED_RT={}", dest.display());
}

fn copy(from: &Path, to: &Path) {
    // Replace, never write through: a previous file may be in use.
    let tmp = to.with_extension("so.tmp");
    std::fs::copy(from, &tmp)
        .and_then(|_| std::fs::rename(&tmp, to))
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", from.display(), to.display()));
}
