//! The flags of `manabi train` read into a run's configuration ([`RunConfig`]): the book's network or the one `--net` names, its protocol's defaults, and how the run computes.

use crate::backend::default_backend;
use crate::setup::{backend_name, replicas};
use crate::{ActivationArg, CliError, InputArg, ModelArg, SamplingArg, TrainArgs};
use crate::{DataArgs, OptimizerArg};
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
        let book = Self::book();
        let mut argv: Vec<String> = vec!["manabi".into(), "train".into()];
        let mut flag = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                argv.push(format!("--{name}"));
                if !v.is_empty() {
                    argv.push(v);
                }
            }
        };
        let differs = |on: bool, v: String| on.then_some(v);
        let name = |v: Option<clap::builder::PossibleValue>| v.map(|p| p.get_name().to_string());
        let hidden: Vec<String> = self.hidden.iter().map(u32::to_string).collect();
        flag(
            "hidden",
            differs(self.hidden != book.hidden, hidden.join(",")),
        );
        let act = name(self.activation.to_possible_value())
            .filter(|_| self.activation != book.activation);
        flag("activation", act);
        flag(
            "model",
            name(self.model.and_then(|m| m.to_possible_value())),
        );
        flag("net", self.net.clone());
        flag("init", self.init.map(init_name));
        flag("lr", self.lr.map(|v| v.to_string()));
        flag(
            "batch",
            differs(self.batch != book.batch, self.batch.to_string()),
        );
        flag(
            "weight-decay",
            differs(self.weight_decay != 0.0, self.weight_decay.to_string()),
        );
        flag("iters", self.iters.map(|v| v.to_string()));
        flag("epochs", self.epochs.map(|v| v.to_string()));
        flag("eval-samples", self.eval_samples.map(|v| v.to_string()));
        flag(
            "optimizer",
            self.optimizer.map(|o| OptimizerArg::name(o).to_string()),
        );
        let sampling =
            name(self.sampling.to_possible_value()).filter(|_| self.sampling != book.sampling);
        flag("sampling", sampling);
        flag("train-limit", self.train_limit.map(|v| v.to_string()));
        flag("f64", differs(self.f64, String::new()));
        flag(
            "seed",
            differs(self.seed != book.seed, self.seed.to_string()),
        );
        flag(
            "out",
            differs(
                self.out != book.out,
                self.out.to_string_lossy().into_owned(),
            ),
        );
        flag(
            "checkpoint-every",
            self.checkpoint_every.map(|v| v.to_string()),
        );
        flag(
            "resume",
            self.resume
                .as_ref()
                .map(|d| d.to_string_lossy().into_owned()),
        );
        let data = &self.data;
        flag(
            "data-dir",
            data.data_dir
                .as_ref()
                .map(|d| d.to_string_lossy().into_owned()),
        );
        flag("no-verify", differs(data.no_verify, String::new()));
        flag("classes", data.classes.map(|n| n.to_string()));
        flag(
            "backend",
            name(self.backend.and_then(|b| b.to_possible_value())),
        );
        flag(
            "input",
            name(self.input.and_then(|i| i.to_possible_value())),
        );
        flag("threads", self.threads.map(|t| t.to_string()));
        argv
    }
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
