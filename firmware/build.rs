//! Build script: the memory map of the target's board, `-Tlink.x`, and the embedded model.
//!
//! - The board follows the target: thumbv6m builds run on QEMU's `microbit` (16 KiB RAM), the
//!   others on `mps2-an386` capped at 256 KiB RAM and 1 MiB flash. Its `memory.x` goes on the
//!   linker's path and `cfg(board = "...")` tells the code which one it is.
//! - `-Tlink.x` is passed with `rustc-link-arg-bins`, not through `[target].rustflags`, which
//!   an environment `RUSTFLAGS` would silently replace.
//! - `mnist-infer` embeds `$MANABI_MODEL_BIN` (flat little-endian f32 `[W1 b1 W2 b2]`, written
//!   by `cargo xtask embedded`); without it an empty file is embedded and that program stops
//!   at run time with a message saying so.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = env::var("TARGET").unwrap_or_default();
    let board = if target.starts_with("thumbv6m") {
        "microbit"
    } else {
        "mps2-an386"
    };
    fs::copy(format!("memory/{board}.x"), out.join("memory.x")).expect("copy memory.x");
    // `cfg(board = "...")` selects the per-board constants (SysTick clock, names).
    println!("cargo::rustc-check-cfg=cfg(board, values(\"microbit\", \"mps2-an386\"))");
    println!("cargo:rustc-cfg=board=\"{board}\"");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");

    println!("cargo:rerun-if-env-changed=MANABI_MODEL_BIN");
    let model = out.join("model.bin");
    match env::var_os("MANABI_MODEL_BIN") {
        Some(path) if !path.is_empty() => {
            println!("cargo:rerun-if-changed={}", PathBuf::from(&path).display());
            fs::copy(&path, &model).unwrap_or_else(|e| {
                panic!("MANABI_MODEL_BIN={}: {e}", PathBuf::from(&path).display())
            });
        }
        _ => fs::write(&model, b"").expect("write an empty model.bin"),
    }
}
