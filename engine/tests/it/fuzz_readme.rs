//! `fuzz/README.md` lists exactly the fuzz targets `fuzz/Cargo.toml` builds, each with a file.

use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn the_fuzz_readme_lists_exactly_the_targets_that_exist() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
    let built: BTreeSet<String> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "aq-fuzz")
        .map(str::to_owned)
        .collect();
    for name in &built {
        assert!(
            fuzz.join(format!("fuzz_targets/{name}.rs")).exists(),
            "{name} has no source file"
        );
    }
    let readme = std::fs::read_to_string(fuzz.join("README.md")).unwrap();
    let listed: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, built, "fuzz/README.md and fuzz/Cargo.toml disagree");
    assert!(built.len() >= 9, "{built:?}");
}
