//! The flags of `manabi train` read into a run's configuration ([`RunConfig`]): the book's network or the one `--net` names, its protocol's defaults, and how the run computes.

use crate::DataArgs;
use crate::backend::default_backend;
use crate::setup::{backend_name, replicas};
use crate::{ActivationArg, CliError, InputArg, ModelArg, SamplingArg, TrainArgs};
use clap::ValueEnum;
use manabi_cli::checkpoint::RunConfig;
use manabi_cli::checkpoint::init_name;
use manabi_cli::stack::{Stack, data_shape};
use manabi_data::{Sampling, TrainTest};
use manabi_layers::Spec;
use std::path::PathBuf;

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

impl TrainArgs {
    /// The flags' defaults, as `manabi train` alone has them: the book's protocol into
    /// `runs/mnist` (a test checks them against the parser's).
    pub fn book() -> Self {
        Self {
            data: DataArgs::default(),
            hidden: vec![50],
            activation: ActivationArg::Relu,
            model: None,
            net: None,
            batch: 100,
            lr: None,
            weight_decay: 0.0,
            iters: None,
            epochs: None,
            eval_samples: None,
            optimizer: None,
            init: None,
            sampling: SamplingArg::Random,
            seed: 1,
            out: PathBuf::from("runs/mnist"),
            train_limit: None,
            f64: false,
            backend: None,
            threads: None,
            input: None,
            checkpoint_every: None,
            resume: None,
        }
    }

    /// The command that runs these options: `manabi train` and every flag that differs from
    /// [`TrainArgs::book`], so that it can be printed and run again by hand.
    pub fn command_line(&self) -> Vec<String> {
        let mut argv: Vec<String> = vec!["manabi".into(), "train".into()];
        let flags = self.network_flags().into_iter().chain(self.run_flags());
        for (name, value) in flags {
            if let Some(v) = value {
                argv.push(format!("--{name}"));
                if !v.is_empty() {
                    argv.push(v);
                }
            }
        }
        argv
    }

    /// The flags that choose the network, each with its value if it differs from the book's
    /// (an empty value for a switch).
    fn network_flags(&self) -> Vec<(&'static str, Option<String>)> {
        let book = Self::book();
        let hidden: Vec<String> = self.hidden.iter().map(u32::to_string).collect();
        let activation = (self.activation != book.activation)
            .then(|| name(self.activation.to_possible_value()))
            .flatten();
        vec![
            (
                "hidden",
                (self.hidden != book.hidden).then(|| hidden.join(",")),
            ),
            ("activation", activation),
            (
                "model",
                name(self.model.and_then(|m| m.to_possible_value())),
            ),
            ("net", self.net.clone()),
            ("init", self.init.map(init_name)),
        ]
    }

    /// The flags of the protocol, the files and the computation, as [`Self::network_flags`].
    fn run_flags(&self) -> Vec<(&'static str, Option<String>)> {
        let book = Self::book();
        let text = |v: Option<u64>| v.map(|v| v.to_string());
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let sampling = (self.sampling != book.sampling)
            .then(|| name(self.sampling.to_possible_value()))
            .flatten();
        let data = &self.data;
        vec![
            ("lr", self.lr.map(|v| v.to_string())),
            (
                "batch",
                (self.batch != book.batch).then(|| self.batch.to_string()),
            ),
            (
                "weight-decay",
                (self.weight_decay != 0.0).then(|| self.weight_decay.to_string()),
            ),
            ("iters", text(self.iters)),
            ("epochs", text(self.epochs)),
            ("eval-samples", text(self.eval_samples)),
            ("optimizer", self.optimizer.map(|o| o.name().to_string())),
            ("sampling", sampling),
            ("train-limit", text(self.train_limit)),
            ("f64", self.f64.then(String::new)),
            (
                "seed",
                (self.seed != book.seed).then(|| self.seed.to_string()),
            ),
            ("out", (self.out != book.out).then(|| path(&self.out))),
            ("checkpoint-every", text(self.checkpoint_every)),
            ("resume", self.resume.as_deref().map(path)),
            ("data-dir", data.data_dir.as_deref().map(path)),
            ("no-verify", data.no_verify.then(String::new)),
            ("classes", data.classes.map(|n| n.to_string())),
            (
                "backend",
                name(self.backend.and_then(|b| b.to_possible_value())),
            ),
            (
                "input",
                name(self.input.and_then(|i| i.to_possible_value())),
            ),
            ("threads", self.threads.map(|t| t.to_string())),
        ]
    }
}

/// A value's name as its flag takes it.
fn name(v: Option<clap::builder::PossibleValue>) -> Option<String> {
    v.map(|p| p.get_name().to_string())
}

#[cfg(test)]
mod tests {
    use crate::{Cli, Command, TrainArgs};
    use clap::Parser;

    fn parse(argv: &[String]) -> TrainArgs {
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Train(t),
            }) => t,
            other => panic!("{argv:?}: {other:?}"),
        }
    }

    #[test]
    fn the_book_defaults_are_the_parsers() {
        assert_eq!(parse(&["manabi".into(), "train".into()]), TrainArgs::book());
        assert_eq!(TrainArgs::book().command_line(), ["manabi", "train"]);
    }

    #[test]
    fn a_command_line_parses_back_to_its_options() {
        let mut a = TrainArgs::book();
        a.net = Some("affine:100,relu,dropout:0.2,affine:10".into());
        a.init = Some(manabi_layers::Init::Normal(0.01));
        a.lr = Some(0.01);
        a.epochs = Some(3);
        a.train_limit = Some(300);
        a.weight_decay = 0.1;
        a.seed = 7;
        a.f64 = true;
        a.out = "runs/x y".into();
        a.data.no_verify = true;
        a.data.classes = Some(10);
        a.threads = Some(1);
        a.sampling = crate::SamplingArg::Shuffle;
        a.optimizer = Some(crate::OptimizerArg::Adam);
        assert_eq!(parse(&a.command_line()), a);
        let mut b = TrainArgs::book();
        b.hidden = vec![100, 50];
        b.activation = crate::ActivationArg::Sigmoid;
        b.batch = 128;
        b.iters = Some(500);
        b.checkpoint_every = Some(100);
        assert_eq!(parse(&b.command_line()), b);
    }
}
