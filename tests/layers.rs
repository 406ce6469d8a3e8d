//! The lib's imports point one way: `scripts/check-layers.py` finds no cycle between its
//! top-level modules, nor between sibling submodules, nor a refused upward import.

use std::process::Command;

#[test]
fn no_import_cycles() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check-layers.py");
    let out = Command::new("python3")
        .arg(script)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "check-layers failed:\n{text}");
    assert!(text.contains("no import cycles"), "{text}");
}

/// No function in `src/` runs past ~100 lines without its doc comment saying why
/// (`scripts/long-functions.py`).
#[test]
fn no_unexplained_long_functions() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/long-functions.py");
    let out = Command::new("python3")
        .arg(script)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "long functions without a reason:\n{text}"
    );
    assert!(!text.contains("(LONG)"), "{text}");
}
