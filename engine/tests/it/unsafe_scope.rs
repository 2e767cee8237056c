//! `unsafe_code` is denied workspace-wide; two modules are allowed it: the int8 dot-product
//! kernel (intrinsics) and the allocator setting of `aq` (FFI). This keeps them the only
//! ones: a new allowance anywhere fails here until ARCHITECTURE.md and this list say why.

use std::path::{Path, PathBuf};

const ALLOWED: &[&str] = &["agent/src/memory.rs", "engine/src/kernels/qgemm.rs"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | ".git" | "node_modules") {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn unsafe_code_is_allowed_only_in_the_int8_kernel_and_the_allocator_setting() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 50, "found only {} Rust files", files.len());
    let needle = ["allow(", "unsafe_code)"].concat();
    let mut found: Vec<String> = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .contains(&needle)
        })
        .map(|f| {
            f.strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    found.sort();
    assert_eq!(found, ALLOWED);
}
