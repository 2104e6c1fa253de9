//! The `manabi` command: argument parsing and wiring; the work is in the library crates.
//!
//! # Features
//! - `matrixmultiply` (default): the pure-Rust GEMM backend; an MLP's default.
//! - `gemm` (default): the pure-Rust `gemm` crate (faer's kernels); a convolutional network's
//!   default.
//! - `blas`: OpenBLAS (system `libopenblas`); becomes every network's default backend.
//! - `threading`: lets matrixmultiply use several threads for large products.

/// `println!` for what a command reports on stdout. When stdout is closed early
/// (`manabi train | head`), the process ends at once with status 141, as a process killed by
/// SIGPIPE does, instead of panicking (Rust ignores SIGPIPE, so `println!` would panic); any
/// other write error ends it with status 1 and the error on stderr.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say_line(format_args!($($arg)*))
    };
}

mod backend;
mod chart;
mod commands;
mod config;
mod draw;
mod experiment;
mod feed;
mod outdir;
mod report;
mod setup;

mod train;
mod watch;

// The file formats live in the library half (src/lib.rs) so fuzz targets and tests can load bytes.
use manabi_cli::{error, evaluate, model};

use clap::{Args, Parser, Subcommand, ValueEnum};
use manabi_layers::Tolerance;
use std::path::PathBuf;
use std::process::ExitCode;

pub use manabi_cli::CliError;

/// Writes one line of the report to stdout (see `say!`).
fn say_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        // Any other failure (a full disk under a redirect) is reported, not lost.
        eprintln!("manabi: error: writing the report to stdout: {e}");
        std::process::exit(1);
    }
}

/// Train neural networks with hand-written backpropagation (Deep Learning from Scratch, ch. 5).
#[derive(Parser, Debug)]
#[command(name = "manabi", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a network on MNIST (defaults: the book's 784-50-10, batch 100, SGD lr 0.1, 10,000 iterations).
    Train(TrainArgs),
    /// Test accuracy and confusion matrix of saved weights.
    Eval(EvalArgs),
    /// Classify pictures of digits (PNG or PGM, any size) with saved weights: each is made
    /// light-on-black, fitted in 20x20 and centred by mass in 28x28 as MNIST's digits were.
    Predict(PredictArgs),
    /// Backprop against the numerical gradient in f64 on 3 training images (the book's gradient_check.py).
    Gradcheck(GradcheckArgs),
    /// The book's chapter-6 experiments (BatchNorm, weight decay, Dropout) as `manabi train`
    /// runs, with a chart and a table of final accuracies.
    Experiment(experiment::ExperimentArgs),
    /// Manage the data set.
    #[command(subcommand)]
    Data(DataCommand),
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// Download the four MNIST files from public mirrors, verify them and store them atomically.
    Fetch {
        /// Where to store the files (default: $MANABI_DATA, else ./data/mnist).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Where the data comes from.
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct DataArgs {
    /// Directory with the four IDX files, raw or .gz (default: $MANABI_DATA, else ./data/mnist).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Skip the MNIST SHA-256 checks (for other IDX data sets).
    #[arg(long, global = true)]
    pub no_verify: bool,
    /// Number of classes: every label must be below N. Without it the count is the largest
    /// label plus one, and a label set with a gap or a lone largest label is refused as a
    /// likely stray label.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub classes: Option<u32>,
}

/// Activation between layers.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivationArg {
    /// max(0, x), the book's chapter-5 network.
    Relu,
    /// 1/(1+e^-x).
    Sigmoid,
}

/// `--init`: `book`, `xavier`, `he`, or a positive number `s` for `N(0,1)·s`.
fn parse_init(s: &str) -> Result<manabi_layers::Init, String> {
    manabi_cli::checkpoint::init_from_name(s).ok_or_else(|| {
        format!("expected book (N(0,1)·0.01), xavier (N(0,1/d_in)), he (N(0,2/d_in)) or a positive scale s for N(0,1)·s, got {s:?}")
    })
}

/// How minibatches are drawn.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplingArg {
    /// `batch` random indices with replacement each iteration (the book).
    Random,
    /// A new permutation every epoch.
    Shuffle,
}

/// The zero fraction from which the first layer reads its input as sparse rows (`--input
/// auto`): where a fused SGD step at batch 100 on sparse rows overtakes matrixmultiply's dense
/// one (`cargo xtask bench`'s `sparse` group; README, "Why the defaults are what they are").
pub const SPARSE_FROM: f64 = 0.7;

/// How the first layer reads its input.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputArg {
    /// Sparse rows when at least 70 % of the inputs are zero (MNIST: 81 %), else dense. `train`
    /// looks at the training set, `eval` at the test set; the backend does not enter into it.
    Auto,
    /// Dense rows: every product through the backend.
    Dense,
    /// Compressed sparse rows: the first layer reads only the nonzero inputs.
    Sparse,
}

impl InputArg {
    /// Whether the first layer reads `data` as sparse rows, and the zero fraction measured
    /// (`None` when the flag decided without looking). No flag means [`InputArg::Auto`].
    pub fn sparse(flag: Option<Self>, data: &manabi_data::Dataset) -> (bool, Option<f64>) {
        match flag.unwrap_or(InputArg::Auto) {
            InputArg::Dense => (false, None),
            InputArg::Sparse => (true, None),
            InputArg::Auto => {
                let zeros = data.zero_fraction();
                (zeros >= SPARSE_FROM, Some(zeros))
            }
        }
    }
}

/// The book's networks, with their training protocols as defaults.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelArg {
    /// Chapter 5's two-layer net: 784-50-10 ReLU, SGD lr 0.1, 10,000 iterations, init book
    /// (the default without --model, --net or --hidden).
    Mlp,
    /// Chapter 7's SimpleConvNet: conv 30@5x5, ReLU, max-pool 2x2, affine 100, ReLU, affine
    /// 10; init book, Adam lr 0.001, 20 epochs, 1,000 samples evaluated per epoch.
    SimpleCnn,
    /// Chapter 8's DeepConvNet: six 3x3 convolutions (16, 16, 32, 32, 64, 64) with ReLU and
    /// a max-pool after each pair, affine 50, ReLU, Dropout 0.5, affine 10, Dropout 0.5; init
    /// he, Adam lr 0.001, 20 epochs, 1,000 samples evaluated per epoch.
    DeepCnn,
}

impl ModelArg {
    /// The `--net` text of the network (classes last).
    pub fn net(self, classes: usize) -> String {
        match self {
            ModelArg::Mlp => format!("affine:50,relu,affine:{classes}"),
            ModelArg::SimpleCnn => {
                format!("conv:30@5x5,relu,maxpool:2x2,affine:100,relu,affine:{classes}")
            }
            ModelArg::DeepCnn => format!(
                "conv:16@3x3:p1,relu,conv:16@3x3:p1,relu,maxpool:2x2,\
                 conv:32@3x3:p1,relu,conv:32@3x3:p2,relu,maxpool:2x2,\
                 conv:64@3x3:p1,relu,conv:64@3x3:p1,relu,maxpool:2x2,\
                 affine:50,relu,dropout:0.5,affine:{classes},dropout:0.5"
            ),
        }
    }

    /// The protocol's optimizer, learning rate, initialisation, epochs (`None`: 10,000
    /// iterations) and samples evaluated per epoch (`None`: all).
    pub fn protocol(
        self,
    ) -> (
        OptimizerArg,
        f64,
        manabi_layers::Init,
        Option<u64>,
        Option<u64>,
    ) {
        use manabi_layers::Init;
        match self {
            ModelArg::Mlp => (OptimizerArg::Sgd, 0.1, Init::Book, None, None),
            ModelArg::SimpleCnn => (OptimizerArg::Adam, 0.001, Init::Book, Some(20), Some(1000)),
            ModelArg::DeepCnn => (OptimizerArg::Adam, 0.001, Init::He, Some(20), Some(1000)),
        }
    }
}

/// Optimizer choice.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerArg {
    /// Plain stochastic gradient descent.
    Sgd,
    /// SGD with momentum 0.9.
    Momentum,
    /// Nesterov's accelerated gradient, momentum 0.9.
    Nesterov,
    /// AdaGrad.
    Adagrad,
    /// RMSprop, decay 0.99.
    Rmsprop,
    /// Adam, β1 0.9, β2 0.999.
    Adam,
}

impl OptimizerArg {
    /// The name as `--optimizer` takes it.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerArg::Sgd => "sgd",
            OptimizerArg::Momentum => "momentum",
            OptimizerArg::Nesterov => "nesterov",
            OptimizerArg::Adagrad => "adagrad",
            OptimizerArg::Rmsprop => "rmsprop",
            OptimizerArg::Adam => "adam",
        }
    }
}

/// `manabi train` options ([`TrainArgs::book`] gives the defaults without parsing).
#[derive(Args, Debug, Clone, PartialEq)]
pub struct TrainArgs {
    /// Where the data comes from.
    #[command(flatten)]
    pub data: DataArgs,
    /// Hidden layer widths, comma-separated (e.g. 100,50 for a deeper net): the book's MLP,
    /// affine layers with --activation between them.
    #[arg(long, value_delimiter = ',', default_value = "50", value_parser = clap::value_parser!(u32).range(1..))]
    pub hidden: Vec<u32>,
    /// Activation between layers.
    #[arg(long, value_enum, default_value_t = ActivationArg::Relu)]
    pub activation: ActivationArg,
    /// One of the book's networks with its training protocol as the defaults of --lr,
    /// --optimizer, --init, --epochs and --eval-samples (each flag still overrides).
    #[arg(long, value_enum, conflicts_with_all = ["hidden", "activation", "net"])]
    pub model: Option<ModelArg>,
    /// Any layer stack instead of --hidden/--activation: layers separated by commas, from
    /// affine:N (N outputs), relu, sigmoid, batchnorm (the book's, per activation),
    /// dropout:R (the book's, not inverted: R of the units dropped in training, outputs
    /// scaled by 1-R in evaluation), conv:F@KxK (F filters of KxK; :sN stride, :pN zero
    /// padding, as conv:16@3x3:p1), maxpool:KxK and avgpool:KxK (the window's max or mean,
    /// stride K unless :sN; avgpool is PyTorch's nn.AvgPool2d); the last affine
    /// layer has one output per class. Example: affine:100,batchnorm,relu,dropout:0.2,affine:10.
    #[arg(long, value_name = "LAYERS", conflicts_with_all = ["hidden", "activation"])]
    pub net: Option<String>,
    /// Minibatch size.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// Learning rate (positive) [default: 0.1; 0.001 with --model simple-cnn or deep-cnn].
    #[arg(long, value_parser = positive_f64, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// The book's weight decay λ: ½·λ·ΣW² over the affine and convolution weights (not biases
    /// or BatchNorm's γ, β) is added to the loss, λ·W to their gradient (0 = none).
    #[arg(long, default_value_t = 0.0, value_parser = non_negative_f64, allow_negative_numbers = true)]
    pub weight_decay: f64,
    /// Training iterations (minibatch updates).
    #[arg(long, conflicts_with = "epochs", value_parser = clap::value_parser!(u64).range(1..))]
    pub iters: Option<u64>,
    /// Train for this many epochs (of train_size/batch iterations) instead of --iters
    /// [default: 10,000 iterations; 20 epochs with --model simple-cnn or deep-cnn].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: Option<u64>,
    /// Evaluate only the first N training and N test samples at each epoch (the book's
    /// convnet trainer uses 1,000); the final test accuracy is over the whole test set
    /// [default: all; 1000 with --model simple-cnn or deep-cnn].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub eval_samples: Option<u64>,
    /// Optimizer [default: sgd; adam with --model simple-cnn or deep-cnn].
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,
    /// Weight initialisation: book (N(0,1)·0.01, the book's TwoLayerNet), xavier
    /// (N(0,1/d_in)), he (N(0,2/d_in)), or a number s for N(0,1)·s; the fan-in of a
    /// convolution is channels·kernel height·kernel width [default: book; he with --model
    /// deep-cnn].
    #[arg(long, value_parser = parse_init)]
    pub init: Option<manabi_layers::Init>,
    /// How minibatches are drawn.
    #[arg(long, value_enum, default_value_t = SamplingArg::Random)]
    pub sampling: SamplingArg,
    /// Seed of the one random generator (initialisation and batches).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output directory for metrics.csv, accuracy.png and model.safetensors.
    #[arg(long, default_value = "runs/mnist")]
    pub out: PathBuf,
    /// Train on the first N training samples only (the book's chapter-6 experiments use
    /// 1,000 and 300); evaluations then report the accuracy on those N.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub train_limit: Option<u64>,
    /// Train in f64 instead of f32.
    #[arg(long)]
    pub f64: bool,
    /// GEMM backend (default: openblas if built, else gemm for a convolutional network and
    /// matrixmultiply for an MLP: the fastest measured for each).
    #[arg(long, value_enum)]
    pub backend: Option<backend::BackendArg>,
    /// Threads (default: the cores available). With two or more, a second thread gathers
    /// batches and evaluates while training goes on, and a convolutional network without
    /// BatchNorm trains data-parallel: each batch split in two halves, one per thread, the
    /// gradients averaged (the result then differs from one thread's by rounding; a
    /// resumed run keeps the split it started with).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,
    /// How the first layer reads its input: sparse rows skip the zeros (same results as dense
    /// with the naive backend, within rounding with the others) [default: auto].
    #[arg(long, value_enum)]
    pub input: Option<InputArg>,
    /// Every N iterations, write --out/checkpoint.safetensors (weights, optimizer and generator
    /// state, batch position, metrics, configuration) atomically, for --resume.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every: Option<u64>,
    /// Continue the run whose checkpoint is in DIR, with the configuration stored there, and
    /// write its outputs to DIR; only --data-dir, --no-verify, --classes, --threads and
    /// --checkpoint-every may be given with it.
    #[arg(long, value_name = "DIR", conflicts_with_all = [
        "hidden", "activation", "net", "model", "batch", "lr", "weight_decay", "iters", "epochs",
        "optimizer", "init", "sampling", "seed", "out", "f64", "backend", "input", "train_limit",
        "eval_samples",
    ])]
    pub resume: Option<PathBuf>,
}

/// `manabi eval` options.
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// Where the data comes from.
    #[command(flatten)]
    pub data: DataArgs,
    /// Weights written by `manabi train`.
    #[arg(long, default_value = "runs/mnist/model.safetensors")]
    pub weights: PathBuf,
    /// GEMM backend (default: openblas if built, else gemm for a convolutional network and
    /// matrixmultiply for an MLP: the fastest measured for each).
    #[arg(long, value_enum)]
    pub backend: Option<backend::BackendArg>,
    /// Threads that evaluate the test set, each on its own share of the samples (default:
    /// the cores available); the result does not depend on it.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,
    /// How the first layer reads its input (see `manabi train --help`; `auto` looks at the
    /// test set) [default: auto].
    #[arg(long, value_enum)]
    pub input: Option<InputArg>,
}

/// `manabi predict` options.
#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    /// Pictures to classify.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Weights written by `manabi train` (an MLP or a CNN on 28x28 inputs).
    #[arg(long, default_value = "runs/mnist/model.safetensors")]
    pub weights: PathBuf,
    /// GEMM backend (default: openblas if built, else gemm for a convolutional network and
    /// matrixmultiply for an MLP: the fastest measured for each).
    #[arg(long, value_enum)]
    pub backend: Option<backend::BackendArg>,
}

/// The standard deviation of the biases `manabi gradcheck` draws (`--bias-std`).
const GRADCHECK_BIAS_STD: f64 = 0.1;

/// `manabi gradcheck` options.
#[derive(Args, Debug, Clone)]
pub struct GradcheckArgs {
    /// Where the data comes from.
    #[command(flatten)]
    pub data: DataArgs,
    /// Hidden layer widths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "50", value_parser = clap::value_parser!(u32).range(1..))]
    pub hidden: Vec<u32>,
    /// Any layer stack instead of --hidden (see `manabi train --help`); Dropout masks are
    /// drawn once and used by both gradients.
    #[arg(long, value_name = "LAYERS", conflicts_with = "hidden")]
    pub net: Option<String>,
    /// Training images to check on (the book uses 3).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub images: u32,
    /// Seed for the weight initialisation (and the biases, see --bias-std).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Weight initialisation, as `manabi train --init`: book (N(0,1)·0.01), xavier, he, or a
    /// number s for N(0,1)·s. A deep stack wants he: under book's 0.01 its gradients vanish
    /// below --atol and the check would pass whatever backward did.
    #[arg(long, value_parser = parse_init, default_value = "book")]
    pub init: manabi_layers::Init,
    /// After the initialisation, draw every bias (b, and BatchNorm's beta) from N(0, S), so
    /// that the check runs where the network is differentiable: with zero biases every unit
    /// that sees only MNIST's zero background sits exactly on ReLU's kink (central differences
    /// give half its slope there, backprop none) and pooling windows of such units tie. The
    /// book's own convolution check uses random inputs for the same reason. 0 keeps the
    /// initialisation's biases.
    #[arg(long, value_name = "S", default_value_t = GRADCHECK_BIAS_STD, value_parser = non_negative_f64)]
    pub bias_std: f64,
    /// Fail if any element's |backprop − numerical| exceeds ATOL + RTOL·max(|backprop|,
    /// |numerical|); the book's figures reach 1e-7, which its `log(y + 1e-7)` explains. An
    /// element beyond the book's tolerance is first taken again with steps 10, 100 and 1000
    /// times smaller: a kink or a pooling tie within the step fools central differences, not
    /// backprop.
    #[arg(long, default_value_t = Tolerance::BOOK.atol, value_parser = non_negative_f64)]
    pub atol: f64,
    /// The relative part of the tolerance (see --atol).
    #[arg(long, default_value_t = Tolerance::BOOK.rtol, value_parser = non_negative_f64)]
    pub rtol: f64,
}

fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(v) => Err(format!("must be a positive finite number, got {v}")),
        Err(e) => Err(format!("not a number: {e}")),
    }
}

fn non_negative_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(v) => Err(format!("must be zero or a positive finite number, got {v}")),
        Err(e) => Err(format!("not a number: {e}")),
    }
}

/// The `--threads` value, or the cores available.
pub fn threads(flag: Option<u32>) -> usize {
    flag.map(|t| t as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // manabi parallelises evaluation itself (one thread per share of the rows, or a background
    // evaluator next to training); OpenBLAS's own threads would only compete with it, and the
    // network's small products run fastest on one. OPENBLAS_NUM_THREADS still overrides.
    #[cfg(feature = "blas")]
    if std::env::var_os("OPENBLAS_NUM_THREADS").is_none() {
        manabi_matmul::Blas::set_threads(1);
    }
    let result = match cli.command {
        Command::Train(args) => train::run(&args).map(drop),
        Command::Eval(args) => commands::eval(&args),
        Command::Predict(args) => commands::predict(&args),
        Command::Gradcheck(args) => commands::gradcheck(&args),
        Command::Experiment(args) => experiment::run(&args),
        Command::Data(DataCommand::Fetch { data_dir }) => commands::fetch(data_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("manabi: error: {e}");
            ExitCode::FAILURE
        }
    }
}
