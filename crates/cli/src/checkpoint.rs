//! Training checkpoints: everything a run needs to continue bit for bit, in one safetensors file.
//!
//! `manabi train --checkpoint-every N` writes `checkpoint.safetensors` into `--out` every `N`
//! iterations with [`crate::model::write_atomic`] (temporary file, fsync, rename), so a crash
//! at any moment leaves the previous checkpoint readable. The file holds:
//!
//! | tensor | dtype | shape | contents |
//! |---|---|---|---|
//! | `W1`, `b1`, `gamma1`, `running_mean1`, … | F32/F64 | as in `model.safetensors` | the weights and running statistics |
//! | `opt_state` | F32/F64 | `[slots, params]` | the optimizer's state (SGD: 0 slots, Adam: 2) |
//! | `rng` | U64 | `[4]` | the xoshiro256++ generator's state (initialisation and batches) |
//! | `dropout_rng` | U64 | `[4]` | the Dropout layers' generator (only for stacks with Dropout) |
//! | `batcher` | U64 | `[6 + perm]` | the batcher's position (`BatcherState::to_words`) |
//! | `iteration` | U64 | `[1]` | iterations completed |
//! | `loss_window` | F64 | `[2]` | sum and count of the losses since the last evaluation |
//! | `elapsed` | F64 | `[1]` | training seconds so far |
//! | `metrics` | F64 | `[rows, 6]` | the evaluations so far: iteration, epoch, train acc, test acc, loss, seconds |
//!
//! and, under the metadata key `manabi`, the run's configuration ([`RunConfig`]): every
//! setting that affects the result (the layers — `sizes` and `activation` for an MLP, else
//! `input_shape` and `net` —, batch, lr, weight decay, iterations, optimizer, init, sampling,
//! seed, dtype, backend, input kind, training-set length and limit) plus `checkpoint_every`. [`parse`] checks all of it — each tensor's name, dtype and shape
//! against the configuration, the first mismatch named — and never panics on hostile bytes.

use crate::CliError;
use crate::model;
use crate::stack::{Stack, activation_from_name};
use manabi_data::{Batcher, BatcherState, Sampling};
use manabi_layers::{Init, Plan, State, Training};
use manabi_optim::{AnyOptimizer, Optimizer};
use manabi_tensor::Rng;
use manabi_tensor::safetensors::{Data, Entry, Name, StError};
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The checkpoint's file name inside the output directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// The format tag stored in the metadata.
const FORMAT: &str = "manabi-checkpoint";

/// The layout version stored in the metadata; bumped on any incompatible change.
const VERSION: &str = "1";

/// Columns of the `metrics` tensor (see [`MetricRow`]).
pub const METRIC_COLUMNS: usize = 6;

/// The header line of `metrics.csv`.
pub const CSV_HEADER: &str = "iteration,epoch,train_acc,test_acc,loss,elapsed_s\n";

/// The names of the tensors other than the weights.
const STATE_TENSORS: [&str; 8] = [
    "opt_state",
    "rng",
    "dropout_rng",
    "batcher",
    "iteration",
    "loss_window",
    "elapsed",
    "metrics",
];

/// Every setting of a run that affects its result, plus how often it checkpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    /// The network: input width and layers.
    pub stack: Stack,
    /// Rows per minibatch.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Total training iterations.
    pub iters: u64,
    /// Optimizer name as [`AnyOptimizer::from_name`] takes it.
    pub optimizer: String,
    /// Weight initialisation.
    pub init: Init,
    /// How minibatches are drawn.
    pub sampling: Sampling,
    /// Seed of the one random generator.
    pub seed: u64,
    /// Train in f64 (else f32).
    pub f64: bool,
    /// GEMM backend name (`Gemm::name`): backends round differently, so it is part of the result.
    pub backend: String,
    /// Whether the first layer read compressed sparse rows (`--input`): except with the naive
    /// backend, that rounds differently from the backend's dense product, so it is part of the
    /// result. Stored as `input` = `sparse` or `dense`; checkpoints written before sparse input
    /// existed have no such field and were dense.
    pub sparse: bool,
    /// Samples in the training set (checked against the data on resume).
    pub train_len: usize,
    /// `--train-limit`: only the first this many training samples were used (`train_len` is
    /// then at most this).
    pub train_limit: Option<usize>,
    /// Write a checkpoint every this many iterations (does not affect the result).
    pub checkpoint_every: Option<u64>,
    /// `--eval-samples`: the per-epoch evaluations read only the first this many training
    /// and test samples (the book's convnet trainer: 1,000); the final test accuracy is
    /// always over the whole test set.
    pub eval_samples: Option<usize>,
    /// Networks each step's batch is split between, one per thread (data parallelism: their
    /// gradients averaged by rows, one optimizer step): 1 or 2. Summing the gradient in two
    /// halves rounds differently from one sum, so it is part of the result. Checkpoints
    /// without the field had 1.
    pub replicas: usize,
}

/// The `--init` text of an initialisation: `book`, `xavier`, `he` or the scale `s` of
/// `N(0, 1)·s`.
pub fn init_name(i: Init) -> String {
    match i {
        Init::Book => "book".into(),
        Init::Xavier => "xavier".into(),
        Init::He => "he".into(),
        // `Display` of an f64 is the shortest text that parses back to the same value.
        Init::Normal(s) => s.to_string(),
    }
}

/// Reads `--init` text (see [`init_name`]).
pub fn init_from_name(text: &str) -> Option<Init> {
    match text {
        "book" => Some(Init::Book),
        "xavier" => Some(Init::Xavier),
        "he" => Some(Init::He),
        _ => match text.parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 => Some(Init::Normal(s)),
            _ => None,
        },
    }
}

impl RunConfig {
    /// Optimizer state slots per parameter.
    ///
    /// # Errors
    /// An unknown optimizer name.
    pub fn slots(&self) -> Result<usize, CliError> {
        AnyOptimizer::<f64>::from_name(&self.optimizer, self.lr)
            .map(|o| o.slots())
            .map_err(|e| CliError::BadFile(format!("optimizer {:?}: {e}", self.optimizer)))
    }

    /// Parameters of the network, or `None` if it cannot be planned.
    pub fn param_len(&self) -> Option<usize> {
        self.stack.sizes().map(|(params, _)| params)
    }

    /// The plan of the network for this run's batch and optimizer (`fused`: plain SGD fused
    /// into backward, no gradient buffer).
    ///
    /// # Errors
    /// An unknown optimizer, or a stack the planner refuses.
    pub fn plan(&self, fused: bool) -> Result<Plan, CliError> {
        let training = if fused {
            Training::FusedSgd
        } else {
            Training::Backprop {
                optimizer_slots: self.slots()?,
            }
        };
        self.stack.plan(self.batch, self.batch, training)
    }

    /// Checks the configuration against the data a resumed run was given.
    ///
    /// # Errors
    /// A [`CliError`] naming the first quantity that differs.
    pub fn check_data(
        &self,
        features: usize,
        classes: usize,
        train_len: usize,
    ) -> Result<(), CliError> {
        let (d_in, outputs) = (self.stack.input_len(), self.stack.outputs());
        let what = if d_in != features {
            format!("{d_in} input features, the data has {features}")
        } else if outputs != classes {
            format!("{outputs} classes, the data has {classes}")
        } else if self.train_len != train_len {
            format!(
                "{} training samples, the data has {train_len}",
                self.train_len
            )
        } else {
            return Ok(());
        };
        Err(CliError::BadFile(format!(
            "the checkpoint was trained on different data: it has {what}"
        )))
    }

    /// The configuration as `key=value` fields for the metadata (read back by
    /// [`RunConfig::from_fields`]).
    fn fields(&self) -> BTreeMap<&'static str, String> {
        let mut f = BTreeMap::new();
        f.insert("format", FORMAT.to_string());
        f.insert("version", VERSION.to_string());
        self.stack.write_fields(&mut f);
        f.insert("batch", self.batch.to_string());
        // `Display` of an f64 is the shortest text that parses back to the same bits.
        f.insert("lr", self.lr.to_string());
        f.insert("weight_decay", self.weight_decay.to_string());
        f.insert("iters", self.iters.to_string());
        f.insert("optimizer", self.optimizer.clone());
        f.insert("init", init_name(self.init));
        f.insert("sampling", self.sampling.name().to_string());
        f.insert("seed", self.seed.to_string());
        f.insert("dtype", if self.f64 { "f64" } else { "f32" }.to_string());
        f.insert("backend", self.backend.clone());
        f.insert(
            "input",
            if self.sparse { "sparse" } else { "dense" }.to_string(),
        );
        f.insert("train_len", self.train_len.to_string());
        if let Some(limit) = self.train_limit {
            f.insert("train_limit", limit.to_string());
        }
        f.insert(
            "checkpoint_every",
            self.checkpoint_every.unwrap_or(0).to_string(),
        );
        if let Some(n) = self.eval_samples {
            f.insert("eval_samples", n.to_string());
        }
        if self.replicas != 1 {
            f.insert("replicas", self.replicas.to_string());
        }
        f
    }

    /// Reads the configuration [`RunConfig::fields`] wrote, checking every field in a fixed
    /// order (the first bad one named); `name` (usually the path) starts every message.
    fn from_fields(map: &BTreeMap<String, String>, name: &str) -> Result<Self, CliError> {
        let fields = ConfigFields { map, name };
        fields.check_format()?;
        let stack = fields.stack()?;
        let init = fields.init()?;
        let sampling = fields.sampling()?;
        let f64 = fields.is_f64()?;
        let every = fields.int("checkpoint_every", 0, u64::MAX)?;
        let sparse = fields.is_sparse()?;
        let train_limit = fields.optional_size("train_limit", 1, u64::MAX)?;
        let eval_samples = fields.optional_size("eval_samples", 1, u64::MAX)?;
        // Checkpoints without the field had one replica.
        let replicas = fields.optional_size("replicas", 1, 2)?.unwrap_or(1);
        let config = RunConfig {
            stack,
            eval_samples,
            replicas,
            batch: fields.size("batch", 1, SIZE_LIMIT)?,
            lr: fields.float("lr")?,
            weight_decay: fields.float("weight_decay")?,
            iters: fields.int("iters", 1, u64::MAX)?,
            optimizer: fields.get("optimizer")?.to_string(),
            init,
            sampling,
            seed: fields.int("seed", 0, u64::MAX)?,
            f64,
            backend: fields.get("backend")?.to_string(),
            sparse,
            train_len: fields.size("train_len", 1, u64::MAX)?,
            train_limit,
            checkpoint_every: (every > 0).then_some(every),
        };
        fields.check_optimizer(&config)?;
        Ok(config)
    }
}

/// The largest width or batch a checkpoint may hold: the same bounds as the command-line
/// flags (widths and batch fit in `u32`).
const SIZE_LIMIT: u64 = u32::MAX as u64;

/// A checkpoint's configuration fields, read with messages that name the file and the field.
struct ConfigFields<'a> {
    /// The `key=value` pairs of the metadata.
    map: &'a BTreeMap<String, String>,
    /// The file (usually its path), which starts every message.
    name: &'a str,
}

impl<'a> ConfigFields<'a> {
    /// The value of `key`, or an error saying the configuration has none.
    fn get(&self, key: &str) -> Result<&'a str, CliError> {
        self.map.get(key).map(String::as_str).ok_or_else(|| {
            CliError::BadFile(format!(
                "{}: the checkpoint's configuration has no {key:?}",
                self.name
            ))
        })
    }

    /// The error for a field `key=value` refused because of `why`.
    fn bad(&self, key: &str, value: &str, why: &str) -> CliError {
        CliError::BadFile(format!(
            "{}: configuration {key}={value:?} is invalid: {why}",
            self.name
        ))
    }

    /// `key` as an integer in `min..=max`.
    fn int(&self, key: &str, min: u64, max: u64) -> Result<u64, CliError> {
        let v = self.get(key)?;
        match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.bad(key, v, &format!("expected an integer in {min}..={max}"))),
        }
    }

    /// `key` as an integer in `min..=max` that also fits this machine's `usize`.
    fn size(&self, key: &str, min: u64, max: u64) -> Result<usize, CliError> {
        let n = self.int(key, min, max)?;
        usize::try_from(n).map_err(|_| self.bad(key, &n.to_string(), "too large for this machine"))
    }

    /// `key` read as [`ConfigFields::size`] if the configuration has it, else `None`.
    fn optional_size(&self, key: &str, min: u64, max: u64) -> Result<Option<usize>, CliError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(_) => self.size(key, min, max).map(Some),
        }
    }

    /// `key` as a finite number >= 0.
    fn float(&self, key: &str) -> Result<f64, CliError> {
        let v = self.get(key)?;
        match v.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
            _ => Err(self.bad(key, v, "expected a finite number >= 0")),
        }
    }

    /// Checks that `format` is a manabi checkpoint's and `version` the one this build reads.
    fn check_format(&self) -> Result<(), CliError> {
        let name = self.name;
        match self.get("format")? {
            FORMAT => {}
            other => {
                return Err(CliError::BadFile(format!(
                    "{name}: this is a {other:?} file, not a manabi checkpoint"
                )));
            }
        }
        match self.get("version")? {
            VERSION => {}
            other => {
                return Err(CliError::BadFile(format!(
                    "{name}: checkpoint version {other:?} is not supported (this manabi reads {VERSION})"
                )));
            }
        }
        Ok(())
    }

    /// The network: from `net` (and `input_shape`) when the configuration has it, else the
    /// MLP of `sizes` and `activation`.
    fn stack(&self) -> Result<Stack, CliError> {
        match Stack::from_net_fields(self.map, self.name)? {
            Some(stack) => Ok(stack),
            None => self.mlp(),
        }
    }

    /// The MLP of `sizes` (input, hidden widths, classes) and `activation`.
    fn mlp(&self) -> Result<Stack, CliError> {
        let sizes_text = self.get("sizes")?;
        let sizes: Vec<usize> = sizes_text
            .split(',')
            .map(|s| match s.parse::<u64>() {
                Ok(n) if (1..=SIZE_LIMIT).contains(&n) => usize::try_from(n).ok(),
                _ => None,
            })
            .collect::<Option<_>>()
            .filter(|v: &Vec<usize>| v.len() >= 2)
            .ok_or_else(|| {
                self.bad(
                    "sizes",
                    sizes_text,
                    "expected two or more widths in 1..=4294967295",
                )
            })?;
        let activation = self.get("activation")?;
        let activation = activation_from_name(activation)
            .ok_or_else(|| self.bad("activation", activation, "expected relu or sigmoid"))?;
        Ok(Stack::mlp(
            sizes[0],
            &sizes[1..sizes.len() - 1],
            sizes[sizes.len() - 1],
            activation,
        ))
    }

    /// The weight initialisation, `init` (see [`init_from_name`]).
    fn init(&self) -> Result<Init, CliError> {
        let init_text = self.get("init")?;
        init_from_name(init_text).ok_or_else(|| {
            self.bad(
                "init",
                init_text,
                "expected book, xavier, he or a positive scale",
            )
        })
    }

    /// How minibatches are drawn, `sampling`.
    fn sampling(&self) -> Result<Sampling, CliError> {
        let sampling_text = self.get("sampling")?;
        Sampling::from_name(sampling_text)
            .ok_or_else(|| self.bad("sampling", sampling_text, "expected random or shuffle"))
    }

    /// Whether `dtype` is f64 (else f32).
    fn is_f64(&self) -> Result<bool, CliError> {
        match self.get("dtype")? {
            "f32" => Ok(false),
            "f64" => Ok(true),
            other => Err(self.bad("dtype", other, "expected f32 or f64")),
        }
    }

    /// Whether `input` is sparse; checkpoints without the field were dense.
    fn is_sparse(&self) -> Result<bool, CliError> {
        match self.map.get("input").map(String::as_str) {
            None | Some("dense") => Ok(false),
            Some("sparse") => Ok(true),
            Some(other) => Err(self.bad("input", other, "expected dense or sparse")),
        }
    }

    /// Checks that the configuration's learning rate is positive and that its optimizer exists
    /// and accepts its learning rate and weight decay.
    fn check_optimizer(&self, config: &RunConfig) -> Result<(), CliError> {
        if config.lr <= 0.0 {
            return Err(self.bad("lr", self.get("lr")?, "must be positive"));
        }
        let opt = AnyOptimizer::<f64>::from_name(&config.optimizer, config.lr)
            .map_err(|e| self.bad("optimizer", &config.optimizer, &e.to_string()))?;
        opt.with_weight_decay(config.weight_decay)
            .validate()
            .map_err(|e| self.bad("lr", &config.lr.to_string(), &e.to_string()))
    }
}

/// One evaluation of the whole sets, as written to `metrics.csv`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricRow {
    /// Iterations completed when it was taken.
    pub iteration: u64,
    /// `iteration / iterations per epoch`.
    pub epoch: f64,
    /// Training-set accuracy.
    pub train_acc: f64,
    /// Test-set accuracy.
    pub test_acc: f64,
    /// Mean loss since the previous evaluation.
    pub loss: f64,
    /// Training seconds so far.
    pub elapsed: f64,
}

impl MetricRow {
    /// The row as a `metrics.csv` line (with its newline).
    pub fn csv_line(&self) -> String {
        format!(
            "{},{:.4},{},{},{},{:.3}\n",
            self.iteration, self.epoch, self.train_acc, self.test_acc, self.loss, self.elapsed
        )
    }
}

/// Where a run stands, apart from the network and the random state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Iterations completed.
    pub iteration: u64,
    /// Sum of the losses since the last evaluation.
    pub loss_sum: f64,
    /// Number of losses in `loss_sum`.
    pub loss_count: u64,
    /// Training seconds so far.
    pub elapsed: f64,
    /// The evaluations so far.
    pub metrics: Vec<MetricRow>,
}

/// What a checkpoint holds, as read back by [`parse`].
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The run's configuration.
    pub config: RunConfig,
    /// Iteration, running loss, time and metrics.
    pub progress: Progress,
    /// Parameters in the network's layout, widened to f64 (exactly, for f32 runs).
    pub params: Vec<f64>,
    /// Running statistics in the network's layout (empty without BatchNorm), widened alike.
    pub stats: Vec<f64>,
    /// Optimizer state, `slots × params`, widened like `params`.
    pub opt_state: Vec<f64>,
    /// The generator's state (never all zero).
    pub rng: [u64; 4],
    /// The Dropout generator's state, for stacks with Dropout.
    pub dropout_rng: Option<[u64; 4]>,
    /// The batcher's position (validated by `Batcher::from_state`).
    pub batcher: BatcherState,
}

/// A running network's state, borrowed for [`Snapshot::to_bytes`].
#[derive(Debug)]
pub struct Snapshot<'a, T> {
    /// The run's configuration.
    pub config: &'a RunConfig,
    /// The network's plan (for the tensor names and shapes).
    pub plan: &'a Plan,
    /// `Network::params`.
    pub params: &'a [T],
    /// `Network::stats`.
    pub stats: &'a [T],
    /// `Network::state`.
    pub opt_state: &'a [T],
    /// `Rng::state` of the run's generator.
    pub rng: [u64; 4],
    /// `Rng::state` of the network's Dropout generator (written for stacks with Dropout).
    pub dropout_rng: [u64; 4],
    /// `Batcher::state`.
    pub batcher: &'a BatcherState,
    /// Where the run stands.
    pub progress: &'a Progress,
}

impl<T: manabi_tensor::Real> Snapshot<'_, T> {
    /// Serialises the snapshot as checkpoint bytes (see the module docs for the layout): the
    /// training state as the library's [`State::save`] writes it (the format a device's
    /// snapshot has too), with the CLI's generator, batcher, clock, metrics and
    /// configuration added.
    ///
    /// # Errors
    /// If the slices do not fit the plan.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CliError> {
        let p = self.progress;
        let state = State {
            plan: self.plan,
            params: self.params,
            stats: self.stats,
            opt_state: self.opt_state,
            dropout_rng: self.dropout_rng,
            progress: manabi_layers::Progress {
                iteration: p.iteration,
                loss_sum: p.loss_sum,
                loss_count: p.loss_count,
            },
        };
        let words = self.batcher.to_words();
        let elapsed = [p.elapsed];
        let rows: Vec<f64> = p
            .metrics
            .iter()
            .flat_map(|m| {
                [
                    m.iteration as f64,
                    m.epoch,
                    m.train_acc,
                    m.test_acc,
                    m.loss,
                    m.elapsed,
                ]
            })
            .collect();
        let extra = [
            Entry::vector(Name::Text("rng"), Data::U64(&self.rng)),
            Entry::vector(Name::Text("batcher"), Data::U64(&words)),
            Entry::vector(Name::Text("elapsed"), Data::F64(&elapsed)),
            Entry::new(
                Name::Text("metrics"),
                &[p.metrics.len(), METRIC_COLUMNS],
                Data::F64(&rows),
            ),
        ];
        // One metadata key with sorted pairs (see `model::META_KEY`).
        let text = model::join_fields(&self.config.fields());
        let meta = [(model::META_KEY, text.as_str())];
        let bad = |e: StError| CliError::BadFile(format!("checkpoint: {e}"));
        let mut bytes = vec![0u8; state.save_len(&extra, &meta).map_err(bad)?];
        let n = state.save(&extra, &meta, &mut bytes).map_err(bad)?;
        bytes.truncate(n);
        Ok(bytes)
    }
}

/// The checkpoint's path inside `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// Reads and checks `dir/checkpoint.safetensors` (see [`parse`]).
///
/// # Errors
/// No checkpoint in `dir`, the file can't be read, or any error of [`parse`].
pub fn load(dir: &Path) -> Result<Checkpoint, CliError> {
    let path = path_in(dir);
    let shown = path.display().to_string();
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::BadFile(format!(
                "no checkpoint to resume in {}: {shown} does not exist (train with --checkpoint-every N to write one)",
                dir.display()
            )));
        }
        Err(e) => return Err(CliError::BadFile(format!("reading {shown}: {e}"))),
    };
    parse(&bytes, &shown)
}

/// The one tensor `tensor` of `st`, with the given dtype and shape, or an error naming it.
fn expect<'a>(
    st: &SafeTensors<'a>,
    name: &str,
    tensor: &str,
    dtype: Dtype,
    shape: &[usize],
) -> Result<&'a [u8], CliError> {
    let t = st
        .tensor(tensor)
        .map_err(|_| CliError::BadFile(format!("{name}: tensor {tensor} is missing")))?;
    if t.dtype() != dtype {
        return Err(CliError::BadFile(format!(
            "{name}: tensor {tensor} has dtype {:?}, expected {dtype:?}",
            t.dtype()
        )));
    }
    if t.shape() != shape {
        return Err(CliError::BadFile(format!(
            "{name}: tensor {tensor} has shape {:?}, expected {shape:?}",
            t.shape()
        )));
    }
    Ok(t.data())
}

/// The little-endian `u64` words of a tensor's bytes.
fn words(data: &[u8]) -> Vec<u64> {
    data.chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect()
}

/// The first dimension of tensor `tensor` of `st`, or 0 if it is missing or has no dimension
/// (so that [`expect`] names what is wrong with it).
fn first_dim(st: &SafeTensors<'_>, tensor: &str) -> usize {
    st.tensor(tensor)
        .map(|t| t.shape().first().copied().unwrap_or(0))
        .unwrap_or(0)
}

/// Reads checkpoint bytes and checks them completely: the configuration in the metadata, then
/// every tensor's name, dtype and shape against it (the first mismatch named), the generator
/// and batcher states, and finite weights. `name` (usually the path) starts every message.
///
/// Nothing is sized from the file before [`model::check_header`] has bounded its numbers by
/// the file's length.
///
/// # Errors
/// A [`CliError`] for anything missing, extra, malformed or inconsistent.
pub fn parse(bytes: &[u8], name: &str) -> Result<Checkpoint, CliError> {
    let (st, fields) = model::open(bytes, name)?;
    if fields.is_empty() {
        return Err(CliError::BadFile(format!(
            "{name}: not a manabi checkpoint (no \"{}\" metadata)",
            model::META_KEY
        )));
    }
    let config = RunConfig::from_fields(&fields, name)?;
    // The tensors' layout does not depend on the batch or the optimizer.
    let plan = config.stack.plan(1, 1, Training::Inference)?;
    let found = model::read_tensors(&st, name, &plan, &config.stack.short(), &STATE_TENSORS)?;
    let dtype = if config.f64 { Dtype::F64 } else { Dtype::F32 };
    if found.dtype != dtype {
        return Err(CliError::BadFile(format!(
            "{name}: tensor W1 has dtype {:?}, but the configuration says {}",
            found.dtype,
            if config.f64 { "f64" } else { "f32" }
        )));
    }
    // The shapes matched, so the parameter count is what the file holds (no overflow).
    let param_len = found.params.len();
    let slots = config.slots()?;
    let opt_state = read_opt_state(&st, name, dtype, slots, param_len)?;
    let rng = read_rng(&st, name, "rng")?;
    let dropout_rng = read_dropout_rng(&st, name, config.stack.has_dropout())?;
    let batcher = read_batcher(&st, name, &config)?;
    let progress = read_progress(&st, name, config.iters)?;
    Ok(Checkpoint {
        config,
        progress,
        params: found.params,
        stats: found.stats,
        opt_state,
        rng,
        dropout_rng,
        batcher,
    })
}

/// The `opt_state` tensor, `slots × param_len` values of `dtype` widened to f64, all finite.
fn read_opt_state(
    st: &SafeTensors<'_>,
    name: &str,
    dtype: Dtype,
    slots: usize,
    param_len: usize,
) -> Result<Vec<f64>, CliError> {
    let state = model::floats(
        dtype,
        expect(st, name, "opt_state", dtype, &[slots, param_len])?,
    );
    if let Some(i) = state.iter().position(|v| !v.is_finite()) {
        return Err(CliError::BadFile(format!(
            "{name}: tensor opt_state holds {} at index {i}",
            state[i]
        )));
    }
    Ok(state)
}

/// The generator state in tensor `tensor` (four `u64` words, not all zero).
fn read_rng(st: &SafeTensors<'_>, name: &str, tensor: &str) -> Result<[u64; 4], CliError> {
    let w = words(expect(st, name, tensor, Dtype::U64, &[4])?);
    let state = [w[0], w[1], w[2], w[3]];
    Rng::from_state(state)
        .map_err(|e| CliError::BadFile(format!("{name}: tensor {tensor}: {e}")))?;
    Ok(state)
}

/// The Dropout generator's state: required for a network with Dropout, refused for one
/// without.
fn read_dropout_rng(
    st: &SafeTensors<'_>,
    name: &str,
    has_dropout: bool,
) -> Result<Option<[u64; 4]>, CliError> {
    if has_dropout {
        read_rng(st, name, "dropout_rng").map(Some)
    } else if st.tensor("dropout_rng").is_ok() {
        Err(CliError::BadFile(format!(
            "{name}: tensor dropout_rng in a checkpoint of a network without Dropout"
        )))
    } else {
        Ok(None)
    }
}

/// The batcher's position, checked against the configuration's batch, training-set length and
/// sampling and by [`Batcher::from_state`].
fn read_batcher(
    st: &SafeTensors<'_>,
    name: &str,
    config: &RunConfig,
) -> Result<BatcherState, CliError> {
    let batcher_len = first_dim(st, "batcher");
    let batcher_words = words(expect(st, name, "batcher", Dtype::U64, &[batcher_len])?);
    let batcher = BatcherState::from_words(&batcher_words)
        .map_err(|e| CliError::BadFile(format!("{name}: tensor batcher: {e}")))?;
    if batcher.batch != config.batch
        || batcher.len != config.train_len
        || batcher.sampling != config.sampling
    {
        return Err(CliError::BadFile(format!(
            "{name}: tensor batcher draws {} rows from {} samples ({:?}), but the configuration says {} from {} ({:?})",
            batcher.batch,
            batcher.len,
            batcher.sampling,
            config.batch,
            config.train_len,
            config.sampling
        )));
    }
    Batcher::from_state(batcher.clone())
        .map_err(|e| CliError::BadFile(format!("{name}: tensor batcher: {e}")))?;
    Ok(batcher)
}

/// Where the run stands: `iteration` (in `1..=iters`), `loss_window`, `elapsed` and
/// `metrics`, each checked against the iteration.
fn read_progress(st: &SafeTensors<'_>, name: &str, iters: u64) -> Result<Progress, CliError> {
    let iteration = words(expect(st, name, "iteration", Dtype::U64, &[1])?)[0];
    if iteration == 0 || iteration > iters {
        return Err(CliError::BadFile(format!(
            "{name}: tensor iteration is {iteration}, outside 1..={iters}"
        )));
    }
    let (loss_sum, loss_count) = read_loss_window(st, name, iteration)?;
    let elapsed = read_elapsed(st, name)?;
    let metrics = read_metrics(st, name, iteration)?;
    Ok(Progress {
        iteration,
        loss_sum,
        loss_count,
        elapsed,
        metrics,
    })
}

/// The `loss_window` tensor: a finite sum of losses and their count, at most `iteration`.
fn read_loss_window(
    st: &SafeTensors<'_>,
    name: &str,
    iteration: u64,
) -> Result<(f64, u64), CliError> {
    let window = model::floats(
        Dtype::F64,
        expect(st, name, "loss_window", Dtype::F64, &[2])?,
    );
    let (loss_sum, count) = (window[0], window[1]);
    if !loss_sum.is_finite() || !(0.0..=iteration as f64).contains(&count) || count.fract() != 0.0 {
        return Err(CliError::BadFile(format!(
            "{name}: tensor loss_window holds [{loss_sum}, {count}], not a finite sum and a count up to {iteration}"
        )));
    }
    Ok((loss_sum, count as u64))
}

/// The `elapsed` tensor: training seconds so far, finite and not negative.
fn read_elapsed(st: &SafeTensors<'_>, name: &str) -> Result<f64, CliError> {
    let elapsed = model::floats(Dtype::F64, expect(st, name, "elapsed", Dtype::F64, &[1])?)[0];
    if !(elapsed.is_finite() && elapsed >= 0.0) {
        return Err(CliError::BadFile(format!(
            "{name}: tensor elapsed holds {elapsed}, not a number of seconds"
        )));
    }
    Ok(elapsed)
}

/// The `metrics` tensor: one row per evaluation, each finite and taken at an iteration in
/// `1..=iteration`.
fn read_metrics(
    st: &SafeTensors<'_>,
    name: &str,
    iteration: u64,
) -> Result<Vec<MetricRow>, CliError> {
    let rows = first_dim(st, "metrics");
    let values = model::floats(
        Dtype::F64,
        expect(st, name, "metrics", Dtype::F64, &[rows, METRIC_COLUMNS])?,
    );
    let mut metrics = Vec::with_capacity(rows);
    for (r, row) in values.chunks_exact(METRIC_COLUMNS).enumerate() {
        let it = row[0];
        if !(it >= 1.0 && it <= iteration as f64 && it.fract() == 0.0)
            || row.iter().any(|v| !v.is_finite())
        {
            return Err(CliError::BadFile(format!(
                "{name}: tensor metrics row {r} {row:?} is not an evaluation before iteration {iteration}"
            )));
        }
        metrics.push(MetricRow {
            iteration: it as u64,
            epoch: row[1],
            train_acc: row[2],
            test_acc: row[3],
            loss: row[4],
            elapsed: row[5],
        });
    }
    Ok(metrics)
}
