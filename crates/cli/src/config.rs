//! The flags of `manabi train` read into a run's configuration ([`RunConfig`]): the book's network or the one `--net` names, its protocol's defaults, and how the run computes.

use crate::backend::default_backend;
use crate::setup::{backend_name, replicas};
use crate::{ActivationArg, CliError, InputArg, ModelArg, SamplingArg, TrainArgs};
use manabi_cli::checkpoint::RunConfig;
use manabi_cli::stack::{Stack, data_shape};
use manabi_data::{Sampling, TrainTest};
use manabi_layers::Spec;

/// The network the flags name: `--net`, `--model`'s, or the book's MLP of `--hidden` and
/// `--activation`.
///
/// # Errors
/// A `--net` that does not parse or does not end with one output per class.
fn stack(args: &TrainArgs, sets: &TrainTest) -> Result<Stack, CliError> {
    let net_text = match (&args.net, args.model) {
        (Some(text), _) => Some(text.clone()),
        (None, Some(m)) if m != ModelArg::Mlp => Some(m.net(sets.classes)),
        (None, _) => None,
    };
    Ok(match &net_text {
        Some(text) => {
            let stack = Stack::parse(data_shape(&sets.train), text)?;
            if stack.outputs() != sets.classes {
                return Err(CliError::Usage(format!(
                    "--net ends with {} outputs, but the data has {} classes (end it with affine:{})",
                    stack.outputs(),
                    sets.classes,
                    sets.classes
                )));
            }
            stack
        }
        None => {
            let hidden: Vec<usize> = args.hidden.iter().map(|&h| h as usize).collect();
            let activation = match args.activation {
                ActivationArg::Relu => Spec::Relu,
                ActivationArg::Sigmoid => Spec::Sigmoid,
            };
            Stack::mlp(sets.train.features(), &hidden, sets.classes, activation)
        }
    })
}

/// The run the flags describe on `sets` (the training set already cut to `train_limit`), the
/// backend it computes with, and the zero fraction measured for `--input auto` (if measured).
///
/// # Errors
/// As [`stack`], or `--input sparse` for a network whose first layer is not affine.
pub fn from_args(
    args: &TrainArgs,
    sets: &TrainTest,
    train_limit: Option<usize>,
) -> Result<(RunConfig, crate::backend::BackendArg, Option<f64>), CliError> {
    let batch = args.batch as usize;
    let iter_per_epoch = (sets.train.len() / batch).max(1) as u64;
    let model = args.model.unwrap_or(ModelArg::Mlp);
    let (optimizer, lr, init, epochs, eval_samples) = model.protocol();
    let stack = stack(args, sets)?;
    let backend = args
        .backend
        .unwrap_or_else(|| default_backend(stack.reads_images()));
    let starts_affine = matches!(stack.layers.first(), Some(Spec::Affine(_)));
    let (sparse, zeros) = match args.input {
        // Only an affine first layer reads sparse rows; `auto` does not ask the others.
        None | Some(InputArg::Auto) if !starts_affine => (false, None),
        flag => InputArg::sparse(flag, &sets.train),
    };
    if sparse && !starts_affine {
        return Err(CliError::Usage(format!(
            "--input sparse needs a network that starts with an affine layer, not {}",
            stack
                .layers
                .first()
                .map_or(String::new(), |s| s.to_string())
        )));
    }
    let config = RunConfig {
        stack: stack.clone(),
        batch,
        lr: args.lr.unwrap_or(lr),
        weight_decay: args.weight_decay,
        iters: args
            .iters
            .or(args
                .epochs
                .or(epochs)
                .map(|e| e.saturating_mul(iter_per_epoch)))
            .unwrap_or(10_000),
        optimizer: args.optimizer.unwrap_or(optimizer).name().to_string(),
        init: args.init.unwrap_or(init),
        sampling: match args.sampling {
            SamplingArg::Random => Sampling::Random,
            SamplingArg::Shuffle => Sampling::EpochShuffle,
        },
        seed: args.seed,
        f64: args.f64,
        backend: backend_name(backend),
        sparse,
        train_len: sets.train.len(),
        train_limit,
        checkpoint_every: args.checkpoint_every,
        eval_samples: args.eval_samples.or(eval_samples).map(|n| n as usize),
        replicas: replicas(&stack, crate::threads(args.threads), sparse, batch),
    };
    Ok((config, backend, zeros))
}
