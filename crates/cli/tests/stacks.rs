//! Layer stacks from the command line: `--net` with BatchNorm and Dropout, MLP files of the previous release (the default run's recorded bytes are in pins.rs).

mod common;

use common::{final_accuracy, run as manabi, s, scratch, text};
use manabi_cli::checkpoint;
use std::fs;
use std::path::Path;

/// The stack of issue 12's example: BatchNorm after the first affine layer, Dropout before
/// the last.
const BN_DROPOUT: &str = "affine:100,batchnorm,relu,dropout:0.2,affine:10";

/// `manabi eval`'s lines from `test accuracy` on (the accuracy and the confusion matrix),
/// with the default backend or the one named.
fn eval_report(weights: &Path, backend: Option<&str>) -> String {
    let mut args = vec!["eval", "--weights", s(weights)];
    args.extend(backend.iter().flat_map(|b| ["--backend", b]));
    let r = manabi(&args);
    assert!(r.status.success(), "{}", text(&r));
    let out = String::from_utf8_lossy(&r.stdout).into_owned();
    let at = out
        .find("test accuracy")
        .unwrap_or_else(|| panic!("no accuracy in:\n{out}"));
    out[at..].to_string()
}

#[test]
fn mlp_files_of_the_previous_release_evaluate_exactly_as_it_did() {
    // Written and evaluated by the release before the layer stack (fixtures/README.md):
    // ReLU and Sigmoid in f32, two hidden layers in f64.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for name in [
        "mlp-784-8-10-relu",
        "mlp-784-8-10-sigmoid",
        "mlp-784-8-6-10-f64",
    ] {
        let expected = fs::read_to_string(fixtures.join(format!("{name}.eval.txt"))).unwrap();
        let got = eval_report(&fixtures.join(format!("{name}.safetensors")), None);
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn a_stack_with_batchnorm_and_dropout_trains_saves_and_evaluates_from_its_file() {
    let dir = scratch("bn-dropout");
    let r = manabi(&[
        "train",
        "--net",
        BN_DROPOUT,
        "--iters",
        "300",
        "--seed",
        "4",
        "--backend",
        "naive",
        "--out",
        s(&dir),
    ]);
    assert!(r.status.success(), "{}", text(&r));
    // 300 iterations of the 784-50-10 MLP reach 0.88; BatchNorm gets further. The naive
    // backend's figure is the same on every CPU.
    let acc = final_accuracy(&text(&r));
    assert_eq!(acc, 0.9268, "{}", text(&r));
    let path = dir.join("model.safetensors");
    let bytes = fs::read(&path).unwrap();
    // The book's names, one index per layer of each kind; the running statistics are named
    // as such (PyTorch's running_mean / running_var).
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("a safetensors file");
    let mut names: Vec<(String, Vec<usize>)> = file
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect();
    names.sort();
    let want: Vec<(String, Vec<usize>)> = [
        ("W1", vec![784, 100]),
        ("W2", vec![100, 10]),
        ("b1", vec![100]),
        ("b2", vec![10]),
        ("beta1", vec![100]),
        ("gamma1", vec![100]),
        ("running_mean1", vec![100]),
        ("running_var1", vec![100]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    assert_eq!(names, want);
    // The file records the stack; eval rebuilds it (running statistics, dropout scaling)
    // and reports what training reported.
    let report = eval_report(&path, Some("naive"));
    assert!(
        report.starts_with(&format!("test accuracy {acc:.4}")),
        "{report}"
    );
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn a_batchnorm_and_dropout_run_resumes_to_byte_identical_weights() {
    // The checkpoint must carry the running statistics and the dropout mask's generator as
    // well as the weights: the run ends with its iteration-200 checkpoint in place, and a
    // copy of it resumed must write what the whole run wrote.
    let (whole, copy) = (scratch("bn-whole"), scratch("bn-copy"));
    let r = manabi(&[
        "train",
        "--net",
        BN_DROPOUT,
        "--iters",
        "300",
        "--checkpoint-every",
        "200",
        "--optimizer",
        "momentum",
        "--lr",
        "0.05",
        "--out",
        s(&whole),
    ]);
    assert!(r.status.success(), "{}", text(&r));
    fs::create_dir_all(&copy).unwrap();
    fs::copy(checkpoint::path_in(&whole), checkpoint::path_in(&copy)).unwrap();
    let at = checkpoint::load(&copy).unwrap();
    assert_eq!(at.progress.iteration, 200);
    assert!(!at.stats.is_empty() && at.dropout_rng.is_some());
    let r = manabi(&["train", "--resume", s(&copy)]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(text(&r).contains("resuming"), "{}", text(&r));
    let a = fs::read(whole.join("model.safetensors")).unwrap();
    let b = fs::read(copy.join("model.safetensors")).unwrap();
    assert!(a == b, "the resumed BatchNorm/Dropout weights differ");
    for d in [whole, copy] {
        let _ = fs::remove_dir_all(d);
    }
}

#[test]
fn bad_stacks_fail_with_one_clear_line_before_the_data_is_read() {
    let dir = scratch("bad-net");
    for (net, want) in [
        ("affine:100,bogus,affine:10", "\"bogus\": unknown layer"),
        ("affine:0,affine:10", "affine needs a positive output width"),
        ("affine,affine:10", "affine needs its output width"),
        ("dropout:1.5,affine:10", "dropout needs a ratio in [0, 1)"),
        (
            "relu,affine:10",
            "--input sparse needs a network that starts with an affine",
        ),
        (
            "affine:100,relu",
            "ends with 100 outputs, but the data has 10 classes",
        ),
    ] {
        // `--input auto` reads dense rows for a stack that does not start with an affine
        // layer; asked for sparse rows, such a stack is refused.
        let input = if want.contains("sparse") {
            "sparse"
        } else {
            "auto"
        };
        let r = manabi(&[
            "train",
            "--net",
            net,
            "--input",
            input,
            "--iters",
            "1",
            "--out",
            s(&dir),
        ]);
        assert!(!r.status.success(), "{net} was accepted");
        let err = String::from_utf8_lossy(&r.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(lines.len(), 1, "{net}: {err}");
        assert!(lines[0].contains(want), "{net}: {err}");
        assert!(!dir.join("model.safetensors").exists());
        // A syntax error is found before the data is loaded.
        if !want.contains("sparse") && !want.contains("classes") {
            assert!(!text(&r).contains("data: "), "{net}: {}", text(&r));
        }
    }
    // A stack that does not start with an affine layer trains on dense input: two steps of
    // BatchNorm and a linear classifier reach 0.6497 (naive backend, seed 1).
    let r = manabi(&[
        "train",
        "--net",
        "batchnorm,affine:10",
        "--input",
        "dense",
        "--iters",
        "2",
        "--backend",
        "naive",
        "--out",
        s(&dir),
    ]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(text(&r).contains("input as dense rows"), "{}", text(&r));
    assert_eq!(final_accuracy(&text(&r)), 0.6497, "{}", text(&r));
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn an_experiment_writes_its_chart_and_table_and_its_commands_reproduce_its_runs() {
    let dir = scratch("experiment");
    let r = manabi(&["experiment", "dropout", "--epochs", "2", "--out", s(&dir)]);
    assert!(r.status.success(), "{}", text(&r));
    let png = fs::read(dir.join("dropout.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let table = fs::read_to_string(dir.join("dropout.md")).unwrap();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ")).collect();
    // The header and the two runs, each with its final accuracies.
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows[1].starts_with("| no Dropout | 0.") && rows[2].starts_with("| Dropout 0.2 | 0."));
    // Each command line in the table, run by hand, writes the experiment's weights again.
    let commands: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("manabi train"))
        .collect();
    assert_eq!(commands.len(), 2, "{table}");
    for (k, line) in commands.iter().enumerate() {
        let mut argv: Vec<String> = line.split(' ').skip(1).map(String::from).collect();
        let out_at = argv.iter().position(|a| a == "--out").unwrap() + 1;
        let original = Path::new(&argv[out_at]).to_path_buf();
        let again = dir.join(format!("again-{k}"));
        argv[out_at] = s(&again).to_string();
        let r = manabi(&argv.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(r.status.success(), "{}", text(&r));
        assert!(
            fs::read(original.join("model.safetensors")).unwrap()
                == fs::read(again.join("model.safetensors")).unwrap(),
            "{line}"
        );
    }
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn a_diverging_run_is_recorded_and_the_experiment_goes_on() {
    // Without BatchNorm, weights of N(0,1)·1 through five layers overflow the loss within a
    // few iterations; with it they train.
    let dir = scratch("experiment-bn");
    let r = manabi(&[
        "experiment",
        "batch-norm",
        "--scales",
        "1",
        "--epochs",
        "2",
        "--out",
        s(&dir),
    ]);
    assert!(r.status.success(), "{}", text(&r));
    let table = fs::read_to_string(dir.join("batch-norm.md")).unwrap();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows[1].starts_with("| BatchNorm w=1.00e0 | 0."), "{table}");
    assert!(
        rows[2].starts_with("| without w=1.00e0 | training diverged at iteration "),
        "{table}"
    );
    assert!(dir.join("batch-norm.png").is_file());
    let _ = fs::remove_dir_all(dir);
}
