//! Faults during training, end to end on real MNIST: SIGKILL and --resume, divergence, unwritable or full output.

mod common;

use common::{run, s, scratch, text};
use manabi_cli::checkpoint;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};

/// The run the kill test interrupts: 1200 iterations (2 epochs), a checkpoint every 200.
const RUN: [&str; 7] = [
    "train",
    "--iters",
    "1200",
    "--checkpoint-every",
    "200",
    "--seed",
    "3",
];

/// Starts `manabi ARGS` with `MANABI_KILL_POINT=point` and waits until it has paused there
/// (its `paused …` line), so that the SIGKILL that follows lands at a known point.
fn run_until_paused(args: &[&str], point: &str) -> Child {
    let mut child = common::manabi()
        .args(args)
        .env("MANABI_KILL_POINT", point)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the manabi binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut seen = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("stdout");
        if line.starts_with("paused ") {
            return child;
        }
        seen.push(line);
    }
    let status = child.wait().expect("wait");
    panic!(
        "manabi {args:?} ended ({status}) without pausing at {point}: {}",
        seen.join("\n")
    );
}

/// SIGKILL (`Child::kill` on Unix), then reap.
fn kill(mut child: Child) {
    child.kill().expect("kill");
    child.wait().expect("wait");
}

/// The temporary files a writer left in `dir`.
fn temporaries(dir: &Path) -> Vec<(String, u64)> {
    let mut found: Vec<(String, u64)> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .map(|e| {
            let len = e.metadata().unwrap().len();
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect();
    found.sort();
    found
}

/// The CSV without its last column (seconds differ between runs).
fn metrics_without_time(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("metrics.csv"))
        .expect("metrics.csv")
        .lines()
        .map(|l| l.rsplit_once(',').map_or(l, |(head, _)| head).to_string())
        .collect()
}

#[test]
fn killed_runs_resume_to_byte_identical_weights() {
    let (whole, killed) = (scratch("whole"), scratch("killed"));
    let mut args = RUN.to_vec();
    args.extend(["--out", s(&whole)]);
    let r = run(&args);
    assert!(r.status.success(), "{}", text(&r));

    // First kill: SIGKILL right after the checkpoint of iteration 400.
    let mut args = RUN.to_vec();
    args.extend(["--out", s(&killed)]);
    kill(run_until_paused(&args, "after-checkpoint:400"));
    assert!(!killed.join("model.safetensors").exists());
    let at = checkpoint::load(&killed).expect("the checkpoint survives SIGKILL");
    assert_eq!(at.progress.iteration, 400);

    // Second kill, of the resumed run, inside the write of the checkpoint of iteration 600:
    // half of the new checkpoint is in a temporary file, the old one is untouched.
    let resume = ["train", "--resume", s(&killed)];
    let child = run_until_paused(&resume, "in-checkpoint:600");
    let pid = child.id();
    kill(child);
    let at = checkpoint::load(&killed).expect("the previous checkpoint stays readable");
    assert_eq!(at.progress.iteration, 400);
    let left = temporaries(&killed);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0]
            .0
            .starts_with(&format!(".checkpoint.safetensors.tmp-{pid}-")),
        "{left:?}"
    );
    // The whole checkpoint of iteration 600, from a third run paused after it.
    let reference = scratch("reference");
    let mut args = RUN.to_vec();
    args.extend(["--out", s(&reference)]);
    kill(run_until_paused(&args, "after-checkpoint:600"));
    let whole_len = fs::metadata(checkpoint::path_in(&reference)).unwrap().len();
    assert_eq!(
        left[0].1,
        whole_len / 2,
        "half of the checkpoint was written"
    );
    assert!(!killed.join("model.safetensors").exists());

    let r = run(&resume);
    assert!(r.status.success(), "{}", text(&r));
    assert!(
        text(&r).contains("resuming") && text(&r).contains("at iteration 400 of 1200"),
        "{}",
        text(&r)
    );
    assert_eq!(
        temporaries(&killed),
        [],
        "the killed writer's file is removed"
    );
    let a = fs::read(whole.join("model.safetensors")).unwrap();
    let b = fs::read(killed.join("model.safetensors")).unwrap();
    assert!(
        a == b,
        "the resumed weights differ from the uninterrupted run's"
    );
    assert_eq!(metrics_without_time(&whole), metrics_without_time(&killed));
    for d in [whole, killed, reference] {
        let _ = fs::remove_dir_all(d);
    }
}

#[test]
fn adam_with_shuffled_batches_resumes_exactly_past_a_crashed_writer() {
    // Three layers, Adam's two state slots, a batcher permutation and a short last batch
    // (60000 = 468·128 + 96): every part of the state has to come back. Dense input: the
    // resumed run must read the checkpoint's `input` (the default would pick sparse rows for
    // MNIST, which round differently). The kill test below runs sparse, the default.
    let (whole, copy) = (scratch("adam-whole"), scratch("adam-copy"));
    let run_args = |out: &Path| {
        let mut a: Vec<String> = [
            "train",
            "--iters",
            "700",
            "--checkpoint-every",
            "250",
            "--optimizer",
            "adam",
            "--lr",
            "0.001",
            "--sampling",
            "shuffle",
            "--batch",
            "128",
            "--hidden",
            "40,20",
            "--init",
            "he",
            "--input",
            "dense",
            "--out",
        ]
        .map(String::from)
        .to_vec();
        a.push(s(out).to_string());
        a
    };
    let a = run_args(&whole);
    let r = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(r.status.success(), "{}", text(&r));
    // The run ends with its iteration-500 checkpoint in place; continue a copy of it.
    fs::create_dir_all(&copy).unwrap();
    fs::copy(checkpoint::path_in(&whole), checkpoint::path_in(&copy)).unwrap();
    assert_eq!(checkpoint::load(&copy).unwrap().progress.iteration, 500);
    // What a writer killed mid-checkpoint leaves: a truncated temporary file. Its pid is
    // that of a process that has exited.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let stale = copy.join(format!(".checkpoint.safetensors.tmp-{dead_pid}"));
    let bytes = fs::read(checkpoint::path_in(&whole)).unwrap();
    fs::write(&stale, &bytes[..bytes.len() / 3]).unwrap();

    let r = run(&["train", "--resume", s(&copy)]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(
        !stale.exists(),
        "the crashed writer's temporary file was left behind"
    );
    let a = fs::read(whole.join("model.safetensors")).unwrap();
    let b = fs::read(copy.join("model.safetensors")).unwrap();
    assert!(a == b, "resumed Adam/shuffle weights differ");
    assert_eq!(metrics_without_time(&whole), metrics_without_time(&copy));
    for d in [whole, copy] {
        let _ = fs::remove_dir_all(d);
    }
}

/// Four raw IDX files: `n` training and 20 test images of 28×28, labels 0–9.
fn write_small_mnist(dir: &Path, n: u32) {
    fs::create_dir_all(dir).unwrap();
    let idx = |dims: &[u32], fill: u8| {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        let len: u32 = dims.iter().product();
        b.extend((0..len).map(|i| (i as u8).wrapping_mul(fill)));
        b
    };
    let labels = |n: u32| {
        let mut b = vec![0, 0, 8, 1];
        b.extend_from_slice(&n.to_be_bytes());
        b.extend((0..n).map(|i| (i % 10) as u8));
        b
    };
    fs::write(dir.join("train-images-idx3-ubyte"), idx(&[n, 28, 28], 7)).unwrap();
    fs::write(dir.join("train-labels-idx1-ubyte"), labels(n)).unwrap();
    fs::write(dir.join("t10k-images-idx3-ubyte"), idx(&[20, 28, 28], 3)).unwrap();
    fs::write(dir.join("t10k-labels-idx1-ubyte"), labels(20)).unwrap();
}

#[test]
fn resume_refuses_other_flags_and_missing_damaged_or_foreign_checkpoints() {
    let dir = scratch("refuse");
    let r = run(&[
        "train",
        "--iters",
        "20",
        "--checkpoint-every",
        "10",
        "--out",
        s(&dir),
    ]);
    assert!(r.status.success(), "{}", text(&r));
    let good = fs::read(checkpoint::path_in(&dir)).unwrap();

    // Flags that would change the result, or the output place, conflict with --resume.
    for flag in [
        ["--lr", "0.5"],
        ["--seed", "2"],
        ["--out", "/tmp"],
        ["--iters", "9"],
        ["--input", "dense"],
    ] {
        let r = run(&["train", "--resume", s(&dir), flag[0], flag[1]]);
        assert!(!r.status.success(), "{flag:?} was accepted");
        assert!(text(&r).contains("cannot be used with"), "{}", text(&r));
    }

    let empty = scratch("refuse-empty");
    fs::create_dir_all(&empty).unwrap();
    let r = run(&["train", "--resume", s(&empty)]);
    assert!(!r.status.success());
    assert!(text(&r).contains("no checkpoint to resume"), "{}", text(&r));

    // A checkpoint cut short (what a non-atomic writer would leave after a crash).
    fs::write(checkpoint::path_in(&dir), &good[..good.len() - 100]).unwrap();
    let r = run(&["train", "--resume", s(&dir)]);
    assert!(!r.status.success());
    let msg = text(&r);
    assert!(msg.contains("checkpoint.safetensors: "), "{msg}");
    assert!(!msg.contains("panicked"), "{msg}");

    // A weights file where the checkpoint should be.
    fs::copy(dir.join("model.safetensors"), checkpoint::path_in(&dir)).unwrap();
    let r = run(&["train", "--resume", s(&dir)]);
    assert!(!r.status.success());
    assert!(text(&r).contains("not a manabi checkpoint"), "{}", text(&r));

    // The right checkpoint with different data.
    fs::write(checkpoint::path_in(&dir), &good).unwrap();
    let small = scratch("refuse-data");
    write_small_mnist(&small, 50);
    let r = run(&[
        "train",
        "--resume",
        s(&dir),
        "--data-dir",
        s(&small),
        "--no-verify",
    ]);
    assert!(!r.status.success());
    assert!(
        text(&r)
            .contains("trained on different data: it has 60000 training samples, the data has 50"),
        "{}",
        text(&r)
    );
    for d in [dir, empty, small] {
        let _ = fs::remove_dir_all(d);
    }
}

#[test]
fn divergence_names_the_iteration_and_keeps_the_last_checkpoint() {
    let dir = scratch("diverge");
    // With lr 10⁶ the weights grow a millionfold per step until the logits overflow. (With
    // lr 10⁴ the run does not diverge numerically: the ReLUs die and the loss stays finite.)
    let r = run(&[
        "train",
        "--iters",
        "200",
        "--lr",
        "1e6",
        "--checkpoint-every",
        "1",
        "--out",
        s(&dir),
    ]);
    assert!(!r.status.success(), "{}", text(&r));
    // Iteration 1's loss comes from the initial N(0, 0.01²) weights: about ln 10, finite.
    // The weights grow a millionfold per step, and at the fifth the logits overflow (the
    // same iteration with the naive backend: the overflow does not hang on rounding).
    assert_eq!(
        String::from_utf8_lossy(&r.stderr),
        format!(
            "manabi: error: training diverged at iteration 5: the loss is inf; try a smaller --lr; the last checkpoint ({}, iteration 4) is intact\n",
            checkpoint::path_in(&dir).display()
        )
    );
    let at = 5;
    let c = checkpoint::load(&dir).expect("the last good checkpoint is readable");
    assert_eq!(c.progress.iteration, at - 1);
    assert!(c.params.iter().all(|v| v.is_finite()));
    assert!(!dir.join("model.safetensors").exists());
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn an_unwritable_out_is_reported_before_the_data_is_loaded() {
    let base = scratch("unwritable");
    fs::create_dir_all(&base).unwrap();
    let file = base.join("a-file");
    fs::write(&file, b"x").unwrap();
    // Tests may run as root, for whom chmod 555 stops nothing: a path under a regular file
    // and one under /proc can't be created by anyone. The data directory does not exist
    // either, so an error about the data would mean the order is wrong.
    for out in [
        file.join("sub"),
        Path::new("/proc/manabi-test-out").to_path_buf(),
    ] {
        let r = run(&[
            "train",
            "--out",
            s(&out),
            "--data-dir",
            "/nonexistent-manabi-data",
        ]);
        assert!(!r.status.success());
        let msg = text(&r);
        assert!(
            msg.contains(&format!("creating output directory {}", out.display())),
            "{msg}"
        );
        assert!(
            !msg.contains("data:") && !msg.contains("manabi data fetch"),
            "{msg}"
        );
    }
    let _ = fs::remove_dir_all(base);
}

#[test]
fn a_full_disk_is_reported_before_training_starts() {
    // `ulimit -f 256` caps every file at 256 blocks of 512 bytes (128 KiB), smaller than the
    // 159 KiB weights of 784-50-10: this run could never save its result. Writes past the
    // limit fail with EFBIG once SIGXFSZ is ignored (ignored signals stay so across exec).
    let dir = scratch("full");
    let r = std::process::Command::new("sh")
        .args([
            "-c",
            "ulimit -f 256 && trap '' XFSZ && exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_manabi"),
            "train",
            "--iters",
            "300",
            "--checkpoint-every",
            "100",
            "--out",
            s(&dir),
        ])
        .env("MANABI_DATA", common::data_dir())
        .output()
        .expect("sh runs");
    assert!(!r.status.success(), "{}", text(&r));
    let msg = text(&r);
    assert!(msg.contains("has no room for the"), "{msg}");
    assert!(
        !msg.lines().any(|l| l.starts_with("epoch ")),
        "training started: {msg}"
    );
    let left: Vec<_> = fs::read_dir(&dir).unwrap().flatten().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    let _ = fs::remove_dir_all(dir);
}
