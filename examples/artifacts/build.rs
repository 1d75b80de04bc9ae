//! Builds `examples/guests` for `wasm32-wasip2` (every guest) and `wasm32-wasip1` (`hello-p1`)
//! with the same cargo, and writes one `pub const` per guest with the path of its `.wasm`.
//!
//! The guests go to their own workspace's target directory, `examples/guests/target`: not the
//! outer build's (a nested build must not wait on the outer build's lock), and the very files
//! that `examples/*/app.yaml` name, so that a build of `shoal` (which depends on this crate by
//! default) is all that `shoal dev -f examples/hello/app.yaml` needs.

use std::path::{Path, PathBuf};
use std::process::Command;

const P2_GUESTS: &[(&str, &str)] = &[
    ("HELLO", "hello"),
    ("WORKER", "worker"),
    ("CRASH", "crash"),
    ("MISBEHAVE", "misbehave"),
    ("TROUBLE", "trouble"),
    ("FRONTEND", "frontend"),
    ("SETTINGS", "settings"),
];

/// Installs the wasm target's standard library when the toolchain lacks it: rustup installs the
/// targets that `rust-toolchain.toml` lists only together with the toolchain, so a machine that
/// already had this toolchain has none of them.
fn ensure_target(target: &str) {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(rustc).args(["--print", "sysroot"]).output().expect("run rustc --print sysroot");
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(target).exists() {
        return;
    }
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", target]);
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    match rustup.status() {
        Ok(status) if status.success() => {}
        _ => panic!("the {target} target is not installed and `rustup target add {target}` failed; install it by hand"),
    }
}

fn build(guests: &Path, target_dir: &Path, target: &str, packages: &[&str]) {
    ensure_target(target);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(guests).args(["build", "--release", "--target", target, "--target-dir"]).arg(target_dir);
    for p in packages {
        command.args(["-p", p]);
    }
    // The outer build's flags are for the host, not for wasm.
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "CARGO_TARGET_DIR", "RUSTC_WRAPPER"] {
        command.env_remove(var);
    }
    let status = command.status().expect("run cargo for the guests");
    assert!(status.success(), "building the guests in {} for {target} failed", guests.display());
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let guests = manifest.parent().unwrap().join("guests");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target_dir = guests.join("target");
    // Everything in the guests' workspace but its target directory (watching the directory
    // whole would see this build's own output and rerun every time).
    for entry in std::fs::read_dir(&guests).expect("read examples/guests") {
        let path = entry.expect("read examples/guests").path();
        if path != target_dir {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-changed={}", manifest.parent().unwrap().parent().unwrap().join("guest-sdk").display());

    let p2: Vec<&str> = P2_GUESTS.iter().map(|(_, p)| *p).collect();
    build(&guests, &target_dir, "wasm32-wasip2", &p2);
    build(&guests, &target_dir, "wasm32-wasip1", &["hello-p1"]);

    let mut consts = String::new();
    for (name, package) in P2_GUESTS {
        let path = target_dir.join("wasm32-wasip2/release").join(format!("{package}.wasm"));
        assert!(path.exists(), "missing {}", path.display());
        // A module deleted by hand (a `cargo clean` in examples/guests) is built again.
        println!("cargo:rerun-if-changed={}", path.display());
        consts.push_str(&format!(
            "/// `{package}` built for wasm32-wasip2.\npub const {name}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    let p1 = target_dir.join("wasm32-wasip1/release/hello-p1.wasm");
    assert!(p1.exists(), "missing {}", p1.display());
    println!("cargo:rerun-if-changed={}", p1.display());
    consts.push_str(&format!(
        "/// `hello-p1` built for wasm32-wasip1 (a core module).\npub const HELLO_P1: &str = {:?};\n",
        p1.display().to_string()
    ));
    std::fs::write(out.join("artifacts.rs"), consts).unwrap();
}
