//! `manabi experiment`: the book's chapter-6 experiments as `manabi train` runs, with one chart and one summary each.
//!
//! Each experiment is a list of runs, and each run is the options of a `manabi train` run
//! ([`TrainArgs`], built here, not parsed), trained by the same code, written to its own
//! subdirectory of `--out`; it prints the command line that runs it again by hand
//! ([`TrainArgs::command_line`]). The experiment then draws the runs' metrics together as the book's
//! figure does and writes a table of their final accuracies (`NAME.png`, `NAME.md`).
//!
//! The protocols are those of the book's scripts (chapter 6, `ch06/`):
//! - `batch-norm` (`batch_norm_test.py`): the first 1,000 training images, five hidden
//!   layers of 100 (affine → BatchNorm → ReLU, or affine → ReLU), SGD lr 0.01, batch 100,
//!   20 epochs, all weights N(0,1)·s for the 16 scales s of `logspace(0, -4, 16)`; the
//!   chart shows the training accuracy.
//! - `weight-decay` (`overfit_weight_decay.py`): the first 300 training images, six hidden
//!   ReLU layers of 100, He initialisation, SGD lr 0.01, batch 100, 201 epochs, λ = 0 and 0.1.
//! - `dropout` (`overfit_dropout.py`): the same network and data for 301 epochs, without and
//!   with Dropout (ratio 0.2, the book's, not inverted) after every hidden ReLU.
//!
//! The book evaluates after the updates `i = 0, iter_per_epoch, 2·iter_per_epoch, …` and stops
//! after `max_epochs` evaluations; `manabi train --epochs E` evaluates on the same schedule
//! and runs `E·iter_per_epoch` updates, a few more than the book's `(E−1)·iter_per_epoch + 1`.

use crate::backend::BackendArg;
use crate::chart::{self, Line, Panel};
use crate::{DataArgs, TrainArgs, train};
use clap::{Args, ValueEnum};
use manabi_cli::CliError;
use manabi_cli::checkpoint::MetricRow;
use manabi_cli::model;
use manabi_layers::Init;
use plotters::style::RGBColor;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The experiments.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExperimentName {
    /// batch_norm_test.py: 1,000 training images, five hidden layers of 100, SGD lr 0.01, 20
    /// epochs, with and without BatchNorm, at 16 initial weight scales from 1 to 0.0001.
    BatchNorm,
    /// overfit_weight_decay.py: 300 training images, six hidden ReLU layers of 100, SGD lr
    /// 0.01, 201 epochs, weight decay λ = 0 and 0.1.
    WeightDecay,
    /// overfit_dropout.py: 300 training images, six hidden ReLU layers of 100, SGD lr 0.01,
    /// 301 epochs, without and with Dropout 0.2 after every hidden layer.
    Dropout,
}

impl ExperimentName {
    /// The name as typed (`batch-norm`), also the chart's and summary's file stem.
    fn as_str(self) -> &'static str {
        match self {
            Self::BatchNorm => "batch-norm",
            Self::WeightDecay => "weight-decay",
            Self::Dropout => "dropout",
        }
    }

    /// The book's number of epochs.
    fn epochs(self) -> u64 {
        match self {
            Self::BatchNorm => 20,
            Self::WeightDecay => 201,
            Self::Dropout => 301,
        }
    }
}

/// `manabi experiment` options.
#[derive(Args, Debug, Clone)]
pub struct ExperimentArgs {
    /// Which experiment.
    #[arg(value_enum)]
    pub name: ExperimentName,
    /// Where the data comes from.
    #[command(flatten)]
    pub data: DataArgs,
    /// Output directory: one subdirectory per run (what `manabi train --out` writes there),
    /// and NAME.png (the chart) and NAME.md (the final accuracies and the commands).
    #[arg(long, default_value = "runs/chapter6")]
    pub out: PathBuf,
    /// Epochs instead of the book's (20, 201, 301), for a quick look.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: Option<u64>,
    /// batch-norm only: how many of the book's 16 weight scales to run, spread evenly from
    /// the first (1) to the last (0.0001).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub scales: u8,
    /// Seed of every run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// GEMM backend of every run (default: the fastest built).
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// Threads of every run, as `manabi train --threads` takes them: with two or more, a
    /// second thread gathers batches and evaluates, and convolutional networks without
    /// BatchNorm train data-parallel (default: the cores available).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,
}

/// One `manabi train` run of an experiment.
struct Run {
    /// Its subdirectory of `--out`.
    dir: String,
    /// What the summary and the legend call it.
    label: String,
    /// Which chart it belongs to, and whether it is the run with the technique (solid) or
    /// the one without (dashed in the book's batch-norm figure).
    panel: usize,
    with_technique: bool,
    /// The protocol's `manabi train` options (without --out, --seed and the data flags).
    args: TrainArgs,
}

/// `n` hidden layers of 100 (each `hidden` followed by `after`) and the 10-class output.
fn net(n: usize, after: &str) -> String {
    let mut s = String::new();
    for _ in 0..n {
        s.push_str("affine:100,");
        s.push_str(after);
        s.push(',');
    }
    s.push_str("affine:10");
    s
}

/// The book's `np.logspace(0, -4, num=16)`, thinned to `count` values from first to last,
/// each with its index among the 16.
fn weight_scales(count: usize) -> Vec<(usize, f64)> {
    let scale = |k: usize| (k, 10f64.powf(-4.0 * k as f64 / 15.0));
    if count <= 1 {
        return vec![scale(0)];
    }
    (0..count)
        .map(|i| scale((i * 15 + (count - 1) / 2) / (count - 1)))
        .collect()
}

/// A run's options: the book's defaults with `net`, weights N(0,1)·`init` (or He), SGD at lr
/// 0.01, batches of 100, the first `train_limit` training images, `epochs` epochs.
fn protocol(net: String, init: Init, train_limit: u64, epochs: u64) -> TrainArgs {
    TrainArgs {
        net: Some(net),
        init: Some(init),
        lr: Some(0.01),
        train_limit: Some(train_limit),
        epochs: Some(epochs),
        ..TrainArgs::book()
    }
}

/// The runs of `name` for `epochs` epochs.
fn runs(name: ExperimentName, epochs: u64, scales: usize) -> Vec<Run> {
    // The overfitting protocol of both chapter-6 scripts: 300 images, He weights.
    let overfit = |layers: String| protocol(layers, Init::He, 300, epochs);
    match name {
        ExperimentName::BatchNorm => {
            let (with_bn, without) = (net(5, "batchnorm,relu"), net(5, "relu"));
            let mut runs = Vec::new();
            for (panel, (k, w)) in weight_scales(scales).into_iter().enumerate() {
                for (bn, layers) in [(true, &with_bn), (false, &without)] {
                    let tag = if bn { "batchnorm" } else { "plain" };
                    runs.push(Run {
                        dir: format!("batch-norm/{tag}-w{k:02}"),
                        label: format!("{} w={w:.2e}", if bn { "BatchNorm" } else { "without" }),
                        panel,
                        with_technique: bn,
                        args: protocol(layers.clone(), Init::Normal(w), 1000, epochs),
                    });
                }
            }
            runs
        }
        ExperimentName::WeightDecay => [(0.0, false), (0.1, true)]
            .into_iter()
            .enumerate()
            .map(|(k, (lambda, with))| Run {
                dir: format!("weight-decay/lambda-{lambda}"),
                label: format!("weight decay λ = {lambda}"),
                panel: k,
                with_technique: with,
                args: TrainArgs {
                    weight_decay: lambda,
                    ..overfit(net(6, "relu"))
                },
            })
            .collect(),
        ExperimentName::Dropout => [(net(6, "relu"), false), (net(6, "relu,dropout:0.2"), true)]
            .into_iter()
            .enumerate()
            .map(|(k, (layers, with))| Run {
                dir: format!("dropout/{}", if with { "dropout-0.2" } else { "none" }),
                label: if with { "Dropout 0.2" } else { "no Dropout" }.to_string(),
                panel: k,
                with_technique: with,
                args: overfit(layers),
            })
            .collect(),
    }
}

/// The whole `manabi train` options of `run` under the experiment's `args`.
fn train_args(args: &ExperimentArgs, run: &Run) -> TrainArgs {
    TrainArgs {
        seed: args.seed,
        out: args.out.join(&run.dir),
        data: args.data.clone(),
        backend: args.backend,
        threads: args.threads,
        ..run.args.clone()
    }
}

/// `manabi experiment NAME`.
pub fn run(args: &ExperimentArgs) -> Result<(), CliError> {
    let name = args.name;
    let epochs = args.epochs.unwrap_or(name.epochs());
    let runs = runs(name, epochs, usize::from(args.scales));
    std::fs::create_dir_all(&args.out)
        .map_err(|e| CliError::Output(format!("creating {}: {e}", args.out.display())))?;
    let mut results: Vec<Outcome> = Vec::with_capacity(runs.len());
    for (i, r) in runs.iter().enumerate() {
        let train_args = train_args(args, r);
        let line = train_args.command_line().join(" ");
        say!("\n[{}/{}] $ {line}", i + 1, runs.len());
        // A run whose loss overflows stops (the book's NumPy carries on with NaN weights at
        // chance accuracy); the experiment records where and goes on.
        match train::run(&train_args) {
            Ok(rows) => results.push(Outcome::Finished(rows)),
            Err(CliError::Diverged(why)) => {
                say!("{why}: recorded as diverged");
                results.push(Outcome::Diverged(why));
            }
            Err(e) => return Err(e),
        }
    }
    let chart_path = args.out.join(format!("{}.png", name.as_str()));
    draw(name, epochs, &runs, &results, &chart_path)?;
    let summary = summary(name, epochs, args, &runs, &results);
    let summary_path = args.out.join(format!("{}.md", name.as_str()));
    model::write_atomic(&summary_path, summary.as_bytes())?;
    say!("\n{summary}");
    say!(
        "wrote {}, {} and one directory per run under {}",
        chart_path.display(),
        summary_path.display(),
        args.out.display()
    );
    Ok(())
}

/// How a run ended.
enum Outcome {
    /// It trained to the end: its evaluations.
    Finished(Vec<MetricRow>),
    /// Its loss or a weight became NaN or infinite: the message naming the iteration.
    Diverged(String),
}

impl Outcome {
    /// The evaluations (none for a diverged run, which writes no metrics).
    fn rows(&self) -> &[MetricRow] {
        match self {
            Outcome::Finished(rows) => rows,
            Outcome::Diverged(_) => &[],
        }
    }

    /// The final accuracies for the table, or where it diverged.
    fn final_cells(&self) -> String {
        match self {
            Outcome::Finished(rows) => rows.last().map_or_else(
                || "– | –".to_string(),
                |r| format!("{:.4} | {:.4}", r.train_acc, r.test_acc),
            ),
            Outcome::Diverged(why) => {
                let at = why.split(':').next().unwrap_or(why);
                format!("{at} | –")
            }
        }
    }

    /// `iteration N` of the divergence message, for a chart caption.
    fn diverged_at(&self) -> Option<&str> {
        match self {
            Outcome::Diverged(why) => Some(
                why.split(':')
                    .next()
                    .and_then(|s| s.strip_prefix("training "))
                    .unwrap_or(why),
            ),
            Outcome::Finished(_) => None,
        }
    }
}

/// The Markdown table of final accuracies and the commands that produced them.
fn summary(
    name: ExperimentName,
    epochs: u64,
    args: &ExperimentArgs,
    runs: &[Run],
    results: &[Outcome],
) -> String {
    let mut s = format!(
        "# manabi experiment {} ({epochs} epochs, seed {})\n\n| run | final train accuracy | final test accuracy |\n|---|---:|---:|\n",
        name.as_str(),
        args.seed
    );
    for (r, outcome) in runs.iter().zip(results) {
        let _ = writeln!(s, "| {} | {} |", r.label, outcome.final_cells());
    }
    s.push_str("\nCommands:\n\n```\n");
    for r in runs {
        let _ = writeln!(s, "{}", train_args(args, r).command_line().join(" "));
    }
    s.push_str("```\n");
    s
}

/// The colour of the run with the technique (batch-norm) and of training accuracy (the
/// overfitting runs).
const BLUE: RGBColor = RGBColor(31, 119, 180);
/// The colour of test accuracy (the overfitting runs).
const ORANGE: RGBColor = RGBColor(230, 110, 20);
/// The colour of the run without the technique (batch-norm).
const GREY: RGBColor = RGBColor(110, 110, 110);

/// The figure: for batch-norm the book's 4×4 grid of training accuracy (BatchNorm solid,
/// without dashed), for the overfitting runs one chart per run with train and test accuracy.
fn draw(
    name: ExperimentName,
    epochs: u64,
    runs: &[Run],
    results: &[Outcome],
    path: &Path,
) -> Result<(), CliError> {
    let mut panels = empty_panels(runs);
    for (r, outcome) in runs.iter().zip(results) {
        let panel = &mut panels[r.panel];
        match name {
            ExperimentName::BatchNorm => add_batch_norm_line(panel, r, outcome),
            ExperimentName::WeightDecay | ExperimentName::Dropout => {
                add_train_test_lines(panel, r, outcome);
            }
        }
    }
    let (title, cols, cell) = figure_layout(name, epochs);
    draw_panels_atomically(path, &title, &panels, cols, cell)
}

/// One panel without caption or lines per chart the runs name, the legend on the last.
fn empty_panels(runs: &[Run]) -> Vec<Panel> {
    let panels_n = runs.iter().map(|r| r.panel + 1).max().unwrap_or(0);
    (0..panels_n)
        .map(|k| Panel {
            caption: String::new(),
            lines: Vec::new(),
            legend: k + 1 == panels_n,
        })
        .collect()
}

/// (epoch, `f` of the row) for each evaluation.
fn curve(rows: &[MetricRow], f: fn(&MetricRow) -> f64) -> Vec<(f64, f64)> {
    rows.iter().map(|m| (m.epoch, f(m))).collect()
}

/// Adds a batch-norm run's training accuracy to its weight scale's panel (solid with
/// BatchNorm, dashed without), captioned with the scale and where a run diverged.
fn add_batch_norm_line(panel: &mut Panel, r: &Run, outcome: &Outcome) {
    let scale = r.label.rsplit_once("w=").map_or("", |(_, w)| w);
    if panel.caption.is_empty() {
        panel.caption = format!("W: {scale}");
    }
    if let Some(at) = outcome.diverged_at() {
        let who = if r.with_technique {
            "BatchNorm"
        } else {
            "without"
        };
        panel.caption = format!("{} ({who} {at})", panel.caption);
    }
    panel.lines.push(Line {
        label: if r.with_technique {
            "BatchNorm".into()
        } else {
            "without".into()
        },
        color: if r.with_technique { BLUE } else { GREY },
        dashed: !r.with_technique,
        points: curve(outcome.rows(), |m| m.train_acc),
    });
}

/// Fills an overfitting run's own panel: its train and test accuracy, with a legend,
/// captioned with the final accuracies or where it diverged.
fn add_train_test_lines(panel: &mut Panel, r: &Run, outcome: &Outcome) {
    let rows = outcome.rows();
    panel.caption = match (outcome.diverged_at(), rows.last()) {
        (Some(at), _) => format!("{}: {at}", r.label),
        (None, Some(m)) => format!(
            "{}: train {:.3}, test {:.3}",
            r.label, m.train_acc, m.test_acc
        ),
        (None, None) => r.label.clone(),
    };
    panel.legend = true;
    panel.lines.push(Line {
        label: "train".into(),
        color: BLUE,
        dashed: false,
        points: curve(rows, |m| m.train_acc),
    });
    panel.lines.push(Line {
        label: "test".into(),
        color: ORANGE,
        dashed: false,
        points: curve(rows, |m| m.test_acc),
    });
}

/// The figure's title, columns and cell size in pixels.
fn figure_layout(name: ExperimentName, epochs: u64) -> (String, usize, (u32, u32)) {
    match name {
        ExperimentName::BatchNorm => (
            format!(
                "BatchNorm against none: training accuracy over {epochs} epochs of 1,000 images, SGD lr 0.01"
            ),
            4,
            (300, 230),
        ),
        ExperimentName::WeightDecay => (
            format!("Six hidden layers of 100 on 300 images, {epochs} epochs: weight decay"),
            2,
            (520, 380),
        ),
        ExperimentName::Dropout => (
            format!("Six hidden layers of 100 on 300 images, {epochs} epochs: Dropout"),
            2,
            (520, 380),
        ),
    }
}

/// [`chart::draw_panels`] into a temporary file next to `path`, renamed over `path` once
/// drawn (and removed if anything fails), so a failure never leaves a partial figure.
fn draw_panels_atomically(
    path: &Path,
    title: &str,
    panels: &[Panel],
    cols: usize,
    cell: (u32, u32),
) -> Result<(), CliError> {
    let tmp = path.with_extension(format!("tmp-{}.png", std::process::id()));
    chart::draw_panels(&tmp, title, panels, cols, cell)
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .map_err(|e| CliError::Output(format!("writing {}: {e}", path.display())))
        })
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_gets_the_data_backend_and_thread_flags() {
        use crate::{Cli, Command};
        use clap::Parser;
        let argv = "manabi experiment dropout --data-dir d --no-verify --classes 12 --threads 1 --out o --epochs 2";
        let Ok(Cli {
            command: Command::Experiment(args),
        }) = Cli::try_parse_from(argv.split_whitespace())
        else {
            panic!("the experiment's flags parse");
        };
        let run = &runs(args.name, 2, 16)[0];
        let train = train_args(&args, run);
        let line = train.command_line();
        let tail = line[line.len() - 7..].join(" ");
        assert_eq!(tail, "--data-dir d --no-verify --classes 12 --threads 1");
        // The printed command parses back to the options the experiment trains with.
        assert!(matches!(
            Cli::try_parse_from(&line),
            Ok(Cli { command: Command::Train(t) }) if t == train
        ));
    }

    #[test]
    fn the_weight_scales_are_the_books_logspace_thinned_evenly() {
        let all = weight_scales(16);
        assert_eq!(all.len(), 16);
        assert!(all.iter().enumerate().all(|(i, &(k, _))| i == k));
        assert_eq!(all[0].1, 1.0);
        assert!((all[15].1 - 1e-4).abs() < 1e-18);
        assert!((all[5].1 - 10f64.powf(-4.0 / 3.0)).abs() < 1e-15);
        assert_eq!(weight_scales(2), [all[0], all[15]]);
        assert_eq!(weight_scales(4), [all[0], all[5], all[10], all[15]]);
        assert_eq!(weight_scales(1), [(0, 1.0)]);
    }

    #[test]
    fn the_runs_are_the_books_networks() {
        assert_eq!(
            net(2, "batchnorm,relu"),
            "affine:100,batchnorm,relu,affine:100,batchnorm,relu,affine:10"
        );
        let bn = runs(ExperimentName::BatchNorm, 20, 16);
        assert_eq!(bn.len(), 32);
        assert_eq!(bn.iter().filter(|r| r.with_technique).count(), 16);
        let dropout = runs(ExperimentName::Dropout, 301, 16);
        assert_eq!(dropout.len(), 2);
        let with = &dropout[1].args;
        let layers = with.net.as_deref().unwrap_or("");
        assert_eq!(layers.matches("dropout:0.2").count(), 6, "{with:?}");
        assert_eq!(with.epochs, Some(301));
        let wd = runs(ExperimentName::WeightDecay, 201, 16);
        assert_eq!(
            (wd[0].args.weight_decay, wd[1].args.weight_decay),
            (0.0, 0.1)
        );
    }
}
