//! The `manabi` binary end to end on the real MNIST files (`$MANABI_DATA`), kept short.

mod common;

use common::{run as manabi, scratch, text};
use manabi_cli::model;
use std::path::Path;
use std::process::Output;

/// The rows of `dir/metrics.csv` without their last column (the elapsed time).
fn metrics_but_time(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|l| l.rsplit_once(',').map_or(l, |(head, _)| head).to_string())
        .collect()
}

fn train(out: &Path, extra: &[&str]) -> Output {
    let out = out.to_str().expect("utf-8 path");
    let mut args = vec!["train", "--iters", "300", "--out", out];
    args.extend_from_slice(extra);
    manabi(&args)
}

#[test]
fn batches_gathered_ahead_on_a_second_thread_train_exactly_like_gathering_in_place() {
    // `--threads 1` gathers each batch in place and evaluates inline; with two threads a
    // second thread gathers a few iterations ahead (checkpoints pause it) and evaluates. Shuffled batches of 128 cross an epoch
    // boundary (60000 = 468·128 + 96, a short batch) within the 500 iterations.
    let dirs = [scratch("inplace"), scratch("ahead"), scratch("ahead-ckpt")];
    let common = ["--sampling", "shuffle", "--batch", "128", "--iters", "500"];
    for (dir, extra) in dirs.iter().zip([
        &["--threads", "1"][..],
        &["--threads", "2"],
        &["--threads", "2", "--checkpoint-every", "7"],
    ]) {
        let mut args = vec!["train", "--out", dir.to_str().unwrap()];
        args.extend_from_slice(&common);
        args.extend_from_slice(extra);
        let r = manabi(&args);
        assert!(r.status.success(), "{}", text(&r));
    }
    let weights: Vec<Vec<u8>> = dirs
        .iter()
        .map(|d| std::fs::read(d.join("model.safetensors")).unwrap())
        .collect();
    assert!(weights[0] == weights[1], "batches gathered ahead differ");
    assert!(weights[0] == weights[2], "checkpoints changed the batches");
    // The second thread also evaluates, a chunk at a time between batches: the metrics rows
    // (all but the time column) equal those evaluated inline.
    let metrics: Vec<Vec<String>> = dirs.iter().map(|d| metrics_but_time(d)).collect();
    // The header and the evaluations after iterations 1 and 469 (468 batches an epoch).
    assert_eq!(metrics[0].len(), 3, "{:?}", metrics[0]);
    assert_eq!(metrics[0], metrics[1]);
    assert_eq!(metrics[0], metrics[2]);
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn same_seed_gives_byte_identical_weights_and_eval_agrees() {
    let (a, b) = (scratch("seed-a"), scratch("seed-b"));
    let first = train(&a, &["--seed", "7"]);
    assert!(first.status.success(), "{}", text(&first));
    let second = train(&b, &["--seed", "7"]);
    assert!(second.status.success(), "{}", text(&second));
    let wa = std::fs::read(a.join("model.safetensors")).unwrap();
    let wb = std::fs::read(b.join("model.safetensors")).unwrap();
    assert!(wa == wb, "two runs with seed 7 wrote different weights");
    for f in ["metrics.csv", "accuracy.png"] {
        assert!(a.join(f).is_file(), "{f} missing");
    }
    // 300 iterations of the book's protocol with seed 7: `--backend naive` ends at 0.8827.
    let acc = common::final_accuracy(&text(&first));
    common::assert_near_naive("300 iterations, seed 7", acc, 0.8827);
    // eval on the saved weights reports the same accuracy.
    let eval = manabi(&[
        "eval",
        "--weights",
        a.join("model.safetensors").to_str().unwrap(),
    ]);
    assert!(eval.status.success(), "{}", text(&eval));
    assert!(
        text(&eval).contains(&format!("test accuracy {acc:.4}")),
        "{}",
        text(&eval)
    );
    assert!(text(&eval).contains("confusion matrix"));
    // A different seed gives different weights.
    let c = scratch("seed-c");
    assert!(train(&c, &["--seed", "8"]).status.success());
    assert!(std::fs::read(c.join("model.safetensors")).unwrap() != wa);
    for d in [a, b, c] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn sparse_input_with_the_naive_backend_trains_and_evaluates_exactly_like_dense() {
    // Sparse rows skip MNIST's zero pixels but keep Naive's order of sums, so weights, metrics
    // and the confusion matrix are those of the dense run, byte for byte. Both gathering paths
    // (in place, and on a second thread) are covered.
    let dirs = [scratch("dense"), scratch("sparse"), scratch("sparse-ahead")];
    let mut finals: Vec<String> = Vec::new();
    for (dir, extra) in dirs.iter().zip([
        &["--input", "dense", "--threads", "1"][..],
        &["--input", "sparse", "--threads", "1"],
        &["--input", "sparse", "--threads", "2"],
    ]) {
        // Shuffled batches of 128 end each epoch with a short one (60000 = 468·128 + 96).
        let mut args = vec![
            "train",
            "--backend",
            "naive",
            "--iters",
            "480",
            "--batch",
            "128",
            "--sampling",
            "shuffle",
        ];
        args.extend_from_slice(&["--out", dir.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let r = manabi(&args);
        assert!(r.status.success(), "{}", text(&r));
        let input = if extra[1] == "dense" {
            "input as dense rows"
        } else {
            "input as sparse rows"
        };
        let out = text(&r);
        assert!(out.contains(input), "{out}");
        // "final test acc … after … iterations", without the time it took.
        let at = out.find("final test acc").unwrap();
        finals.push(out[at..].split(';').next().unwrap().to_string());
    }
    // The weights, bit for bit (the files differ in their `input` metadata).
    let read = |d: &Path| model::load(&d.join("model.safetensors")).unwrap().params;
    let bits = |v: Vec<f64>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let dense = bits(read(&dirs[0]));
    assert!(
        bits(read(&dirs[1])) == dense,
        "sparse in place differs from dense"
    );
    assert!(
        bits(read(&dirs[2])) == dense,
        "sparse gathered ahead differs from dense"
    );
    let metrics: Vec<Vec<String>> = dirs.iter().map(|d| metrics_but_time(d)).collect();
    assert_eq!(metrics[0], metrics[1]);
    assert_eq!(metrics[0], metrics[2]);
    assert_eq!(finals[0], finals[1]);
    assert_eq!(finals[0], finals[2]);
    let weights = dirs[0].join("model.safetensors");
    let eval = |input: &str| {
        let r = manabi(&[
            "eval",
            "--backend",
            "naive",
            "--input",
            input,
            "--weights",
            weights.to_str().unwrap(),
        ]);
        assert!(r.status.success(), "{}", text(&r));
        let t = text(&r);
        t[t.find("test accuracy").unwrap()..].to_string()
    };
    assert_eq!(eval("sparse"), eval("dense"));
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn bad_flags_and_inputs_fail_with_one_clear_line() {
    let out = scratch("bad");
    let o = out.to_str().unwrap();
    for (args, expect) in [
        (vec!["train", "--batch", "0", "--out", o], "--batch"),
        (vec!["train", "--lr", "-0.1", "--out", o], "positive"),
        (vec!["train", "--lr", "nan", "--out", o], "positive"),
        (vec!["train", "--hidden", "50,0", "--out", o], "--hidden"),
        (
            vec!["train", "--data-dir", "/nonexistent-manabi", "--out", o],
            "manabi data fetch",
        ),
        (
            vec!["eval", "--weights", "/nonexistent-manabi/model.safetensors"],
            "/nonexistent-manabi/model.safetensors",
        ),
    ] {
        let r = manabi(&args);
        assert!(!r.status.success(), "{args:?} succeeded");
        let msg = text(&r);
        assert!(msg.contains(expect), "{args:?}: {msg}");
        assert!(!msg.contains("panicked"), "{args:?} panicked: {msg}");
    }
    // Weights that are not safetensors, and weights of the wrong shape.
    std::fs::create_dir_all(&out).unwrap();
    let junk = out.join("junk.safetensors");
    std::fs::write(&junk, b"not a weights file").unwrap();
    let r = manabi(&["eval", "--weights", junk.to_str().unwrap()]);
    assert!(
        !r.status.success() && text(&r).contains("junk.safetensors"),
        "{}",
        text(&r)
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn gradcheck_matches_the_book_on_every_element() {
    let r = manabi(&["gradcheck"]);
    assert!(r.status.success(), "{}", text(&r));
    let out = text(&r);
    let mut worst = (0.0f64, "");
    for name in ["W1", "b1", "W2", "b2"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .expect("a line per tensor");
        // "W1: mean |diff| 3.780e-12  max |diff| 7.882e-11  max rel 2.086e-5"
        let words: Vec<&str> = line.split_whitespace().collect();
        let (mean, max): (f64, f64) = (words[3].parse().unwrap(), words[6].parse().unwrap());
        assert!(mean < 1e-10 && max < 1e-9, "{line}");
        if max > worst.0 {
            worst = (max, name);
        }
    }
    assert!(out.contains("79520 loss evaluations"));
    assert!(
        out.contains(
            "gradient check passed (every element within 1.0e-7 + 1.0e-5·max(|backprop|, |numerical|))"
        ),
        "{out}"
    );
    // A tolerance below the rounding the check leaves fails, naming the worst element.
    let r = manabi(&["gradcheck", "--atol", "1e-12", "--rtol", "0"]);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    let err = String::from_utf8_lossy(&r.stderr);
    let prefix = format!("manabi: error: gradient check failed: {}[", worst.1);
    assert!(err.starts_with(&prefix), "{err}");
    assert!(
        err.trim_end().ends_with(&format!(
            "|diff| {:.3e} exceeds 1.0e-12 + 0.0e0·{}",
            worst.0,
            err.rsplit('·').next().unwrap().trim_end()
        )),
        "{err}"
    );
}

/// The book's DeepConvNet made small: 3×3 convolutions of 2, 2, 4, 4, 8, 8 filters (padding 1,
/// 2 on the fourth), a 2×2 max-pool after each pair, affine 8, ReLU, Dropout 0.5, affine 10,
/// Dropout 0.5.
const SMALL_DEEP_CNN: &str = "conv:2@3x3:p1,relu,conv:2@3x3:p1,relu,maxpool:2x2,\
    conv:4@3x3:p1,relu,conv:4@3x3:p2,relu,maxpool:2x2,\
    conv:8@3x3:p1,relu,conv:8@3x3:p1,relu,maxpool:2x2,affine:8,relu,dropout:0.5,affine:10,dropout:0.5";

/// `manabi gradcheck` with `args`: its output, after asserting that it passed with every
/// tensor's max |diff| under the floor.
fn gradcheck_passes(args: &[&str]) -> String {
    let mut all = vec!["gradcheck"];
    all.extend_from_slice(args);
    let r = manabi(&all);
    let out = text(&r);
    assert!(r.status.success(), "{args:?}: {out}");
    assert!(out.contains("gradient check passed"), "{out}");
    let maxima: Vec<f64> = out
        .lines()
        .filter(|l| l.contains(": mean |diff| "))
        .map(|l| l.split_whitespace().nth(6).unwrap().parse().unwrap())
        .collect();
    assert!(
        !maxima.is_empty() && maxima.iter().all(|&m| m < 1e-7),
        "{out}"
    );
    out
}

#[test]
fn gradcheck_passes_on_convolutional_stacks_and_fails_on_the_kink_of_zero_biases() {
    // The stack that failed with zero biases (b1 on ReLU's kink under the zero background).
    gradcheck_passes(&["--net", "conv:4@3x3,relu,maxpool:2x2,affine:10"]);
    // SimpleConvNet's convolution, ReLU and pooling (its 30 filters of 5×5 on MNIST's faint
    // stroke edges are where kinks and ties fall within the step) under one affine layer; the
    // whole SimpleConvNet takes minutes (README).
    let out = gradcheck_passes(&["--net", "conv:30@5x5,relu,maxpool:2x2,affine:10"]);
    assert!(out.contains("87980 loss evaluations"), "{out}");
    // The small DeepConvNet, He-initialised as the book's: sixteen tensors, W1 to b8.
    let out = gradcheck_passes(&["--net", SMALL_DEEP_CNN, "--init", "he"]);
    assert!(out.lines().any(|l| l.starts_with("b8: ")), "{out}");
    // Average pooling, and a Dropout whose masks both gradients share (the timed extra pass
    // used to draw new ones).
    gradcheck_passes(&["--net", "conv:8@5x5,relu,avgpool:2x2,affine:10"]);
    gradcheck_passes(&["--net", "affine:20,relu,dropout:0.5,affine:10"]);
    // Biases left at zero: the background's units sit exactly on the kink, at every step.
    let r = manabi(&[
        "gradcheck",
        "--net",
        "conv:4@3x3,relu,maxpool:2x2,affine:10",
        "--bias-std",
        "0",
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.starts_with("manabi: error: gradient check failed: b1["),
        "{err}"
    );
}

/// Writes a small digits set under the MNIST names: 200 training and 20 test samples of
/// 28×28, labels `i % 10`, with training label `stray_at` set to `stray`.
fn write_digits_with_a_stray_label(dir: &Path, (stray_at, stray): (usize, u8)) {
    std::fs::create_dir_all(dir).unwrap();
    let images = |n: u32| {
        let mut b = vec![0, 0, 8, 3];
        for d in [n, 28, 28] {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend((0..n * 784).map(|i| (i % 251) as u8));
        b
    };
    let labels = |n: u32| {
        let mut b = vec![0, 0, 8, 1];
        b.extend_from_slice(&n.to_be_bytes());
        b.extend((0..n).map(|i| (i % 10) as u8));
        b
    };
    let mut train_labels = labels(200);
    train_labels[8 + stray_at] = stray;
    let files = [
        ("train-images-idx3-ubyte", images(200)),
        ("train-labels-idx1-ubyte", train_labels),
        ("t10k-images-idx3-ubyte", images(20)),
        ("t10k-labels-idx1-ubyte", labels(20)),
    ];
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn a_stray_label_is_refused_unless_classes_says_how_many() {
    let data = scratch("stray-label");
    write_digits_with_a_stray_label(&data, (57, 200));
    let out = scratch("stray-label-out");
    let labels = data.join("train-labels-idx1-ubyte");
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--data-dir", common::s(&data), "--no-verify"];
        args.extend(["--iters", "3", "--out", common::s(&out)]);
        args.extend(extra);
        manabi(&args)
    };

    let r = train(&[]);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    assert_eq!(
        String::from_utf8_lossy(&r.stderr),
        format!(
            "manabi: error: {}: label 200 at index 57 skips classes 10 to 199, which no training or test label uses (a stray label?); if the gap is intended, `--classes 201` accepts it\n",
            labels.display()
        )
    );
    let r = train(&["--classes", "10"]);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    assert_eq!(
        String::from_utf8_lossy(&r.stderr),
        format!(
            "manabi: error: {}: label 200 at index 57 is out of range for 10 classes (expected 0 to 9)\n",
            labels.display()
        )
    );
    assert!(!out.join("model.safetensors").exists());

    // Told there are 201 classes, it trains a 201-way classifier.
    let r = train(&["--classes", "201"]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(
        text(&r).contains("200 training, 20 test samples of 784 features, 201 classes"),
        "{}",
        text(&r)
    );
    let weights = model::load(&out.join("model.safetensors")).unwrap();
    assert_eq!(weights.stack.outputs(), 201);
    for d in [data, out] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_closed_stdout_ends_the_run_quietly_as_sigpipe_would() {
    use std::io::{BufRead, BufReader, Read};
    let out = scratch("closed-stdout");
    let mut child = common::manabi()
        .args(["train", "--iters", "1200", "--out", common::s(&out)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `manabi train | head -1`: read the first line, then close the pipe.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("data: "), "{first}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(141), "{stderr}");
    assert_eq!(stderr, "", "no panic message");
    let _ = std::fs::remove_dir_all(out);
}

#[cfg(unix)]
#[test]
fn outputs_get_the_permissions_a_plain_file_gets() {
    use std::os::unix::fs::PermissionsExt;
    let out = scratch("permissions");
    let r = train(&out, &["--checkpoint-every", "100"]);
    assert!(r.status.success(), "{}", text(&r));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // What `File::create` gives under this process's umask, as the old writer did.
    let plain = out.join("plain");
    std::fs::File::create(&plain).unwrap();
    for f in [
        "model.safetensors",
        "metrics.csv",
        "checkpoint.safetensors",
        "accuracy.png",
    ] {
        assert_eq!(mode(&out.join(f)), mode(&plain), "{f}");
    }
    let _ = std::fs::remove_dir_all(out);
}
