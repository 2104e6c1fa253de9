//! `manabi train`: the book's training loop with progress, per-epoch lines, metrics, chart, weights.

use crate::chart::{self, EpochPoint};
use crate::error::Context;
use crate::evaluate::Evaluator;
use crate::model::{self, Elem};
use crate::{ActivationArg, CliError, InitArg, SamplingArg, TrainArgs, with_backend};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use manabi_data::{Batcher, Sampling, TrainTest, Verify};
use manabi_layers::{Activation, Init, Mlp, MlpConfig, MlpPlan, Target, Training};
use manabi_matmul::Gemm;
use manabi_optim::{AnyOptimizer, Optimizer};
use manabi_tensor::Rng;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Instant;

/// Loads the data the flags point at.
pub fn load_data(data: &crate::DataArgs) -> Result<TrainTest, CliError> {
    let dir = manabi_data::find_data_dir(data.data_dir.as_deref())?;
    let verify = if data.no_verify {
        Verify::Skip
    } else {
        Verify::Mnist
    };
    let t0 = Instant::now();
    let sets = manabi_data::load(&dir, verify)?;
    println!(
        "data: {} ({} training, {} test samples of {} features, {} classes; loaded in {:.2} s)",
        dir.display(),
        sets.train.len(),
        sets.test.len(),
        sets.train.features(),
        sets.classes,
        t0.elapsed().as_secs_f64()
    );
    Ok(sets)
}

/// Checks that `out` can be written before any training time is spent.
fn prepare_out(out: &Path) -> Result<(), CliError> {
    fs::create_dir_all(out).context(|| format!("creating output directory {}", out.display()))?;
    let probe = out.join(".manabi-write-test");
    model::write_atomic(&probe, &[0u8; 4096]).map_err(|e| {
        CliError(format!(
            "output directory {} is not writable: {e}",
            out.display()
        ))
    })?;
    fs::remove_file(&probe).context(|| format!("cleaning up {}", probe.display()))
}

/// `manabi train`.
pub fn run(args: &TrainArgs) -> Result<(), CliError> {
    prepare_out(&args.out)?;
    let sets = load_data(&args.data)?;
    if args.f64 {
        with_backend!(args.backend, g => train::<f64, _>(args, &sets, &g))
    } else {
        with_backend!(args.backend, g => train::<f32, _>(args, &sets, &g))
    }
}

fn train<T: Elem, G: Gemm<T> + Sync>(
    args: &TrainArgs,
    sets: &TrainTest,
    mm: &G,
) -> Result<(), CliError> {
    let (train, test) = (&sets.train, &sets.test);
    let mut sizes = vec![train.features()];
    sizes.extend(args.hidden.iter().map(|&h| h as usize));
    sizes.push(sets.classes);
    let batch = args.batch as usize;
    let opt = AnyOptimizer::<T>::from_name(args.optimizer.name(), T::from_f64(args.lr))?
        .with_weight_decay(T::from_f64(args.weight_decay));
    opt.validate()?;
    let iter_per_epoch = (train.len() / batch).max(1);
    let iters = args
        .iters
        .or(args.epochs.map(|e| e * iter_per_epoch as u64))
        .unwrap_or(10_000);
    let activation = match args.activation {
        ActivationArg::Relu => Activation::Relu,
        ActivationArg::Sigmoid => Activation::Sigmoid,
    };
    let plan = MlpPlan::new(&MlpConfig {
        sizes: &sizes,
        activation,
        batch,
        eval_batch: batch,
        training: Training::Backprop {
            optimizer_slots: opt.slots(),
        },
    })?;
    let sizes_text = sizes
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("-");
    println!(
        "network: {sizes_text} {activation:?}, {} lr {}, batch {batch}, {iters} iterations ({:.2} epochs of {iter_per_epoch}), seed {}",
        opt.name(),
        args.lr,
        iters as f64 / iter_per_epoch as f64,
        args.seed
    );
    let (p, g, s, a) = plan.breakdown();
    let mut evaluator = Evaluator::<T>::new(&sizes, activation, crate::threads(args.threads))?;
    println!(
        "backend: {} ({}), evaluation on {} threads; arena: {} elements, {:.1} KiB (parameters {p}, gradients {g}, optimizer state {s}, activations {a})",
        mm.name(),
        T::NAME,
        evaluator.threads(),
        plan.total(),
        plan.bytes::<T>() as f64 / 1024.0
    );
    let mut arena = vec![T::ZERO; plan.total()];
    let mut net = Mlp::new(plan, &mut arena)?;
    let mut rng = Rng::new(args.seed);
    net.init(
        match args.init {
            InitArg::Book => Init::Book,
            InitArg::Xavier => Init::Xavier,
            InitArg::He => Init::He,
        },
        &mut rng,
    );
    let sampling = match args.sampling {
        SamplingArg::Random => Sampling::Random,
        SamplingArg::Shuffle => Sampling::EpochShuffle,
    };
    let mut batcher = Batcher::new(sampling, batch, train.len())?;
    let train_x = T::from_f32s(train.images());
    let test_x = T::from_f32s(test.images());
    let mut labels = vec![0usize; batch];
    let mut scratch = vec![
        0.0f32;
        if T::BYTES == 4 {
            0
        } else {
            batch * train.features()
        }
    ];

    let bar = ProgressBar::with_draw_target(Some(iters), ProgressDrawTarget::stderr_with_hz(8));
    if let Ok(style) =
        ProgressStyle::with_template("{bar:32} {pos}/{len} it  {per_sec}  ETA {eta}  loss {msg}")
    {
        bar.set_style(style);
    }
    let started = Instant::now();
    let mut points: Vec<EpochPoint> = Vec::new();
    let mut csv = String::from("iteration,epoch,train_acc,test_acc,loss,elapsed_s\n");
    let (mut loss_sum, mut loss_n) = (0.0f64, 0u64);
    let mut last_eval = None;
    for i in 0..iters {
        let rows = {
            let input = net.input_mut(batch);
            T::next_batch(
                &mut batcher,
                &mut rng,
                train,
                input,
                &mut labels,
                &mut scratch,
            )
        };
        let loss = net.train_step(mm, &opt, i + 1, rows, Target::Labels(&labels[..rows]));
        if !loss.is_finite() {
            bar.finish_and_clear();
            return Err(CliError(format!(
                "training diverged at iteration {}: the loss is {loss}; try a smaller --lr",
                i + 1
            )));
        }
        loss_sum += loss.to_f64();
        loss_n += 1;
        bar.inc(1);
        if i % 50 == 0 {
            bar.set_message(format!("{:.4}", loss.to_f64()));
        }
        // The book evaluates after iterations 0, 600, 1200, …: 17 times in 10,000 iterations.
        if i % iter_per_epoch as u64 == 0 {
            let train_acc = evaluator.accuracy(mm, net.params(), &train_x, train.labels());
            let test_acc = evaluator.accuracy(mm, net.params(), &test_x, test.labels());
            let point = EpochPoint {
                epoch: (i + 1) as f64 / iter_per_epoch as f64,
                train_acc,
                test_acc,
                loss: loss_sum / loss_n as f64,
            };
            let elapsed = started.elapsed().as_secs_f64();
            bar.suspend(|| {
                println!(
                    "epoch {:>3}  iter {:>6}  train acc {train_acc:.4}  test acc {test_acc:.4}  loss {:.4}  ({elapsed:.1} s)",
                    i / iter_per_epoch as u64,
                    i + 1,
                    point.loss
                )
            });
            let _ = writeln!(
                csv,
                "{},{:.4},{train_acc},{test_acc},{},{elapsed:.3}",
                i + 1,
                point.epoch,
                point.loss
            );
            points.push(point);
            (loss_sum, loss_n) = (0.0, 0);
            last_eval = Some(i);
        }
    }
    bar.finish_and_clear();
    let train_time = started.elapsed().as_secs_f64();
    // The weights saved are those after the last iteration: report their test accuracy.
    let final_test = if last_eval == Some(iters - 1) {
        points.last().map_or(0.0, |p| p.test_acc)
    } else {
        evaluator.accuracy(mm, net.params(), &test_x, test.labels())
    };
    println!(
        "final test acc {final_test:.4} after {iters} iterations; training took {train_time:.2} s"
    );

    let extra = [
        ("backend", mm.name().to_string()),
        ("seed", args.seed.to_string()),
        ("iterations", iters.to_string()),
        ("test_accuracy", final_test.to_string()),
    ];
    let bytes = model::to_safetensors(net.plan(), net.params(), &extra)?;
    let model_path = args.out.join("model.safetensors");
    model::write_atomic(&model_path, &bytes)?;
    model::write_atomic(&args.out.join("metrics.csv"), csv.as_bytes())?;
    let chart_path = args.out.join("accuracy.png");
    let tmp = args
        .out
        .join(format!(".accuracy.tmp-{}.png", std::process::id()));
    let title = format!(
        "manabi {sizes_text}, {} lr {}, batch {batch}: final test accuracy {final_test:.4}",
        opt.name(),
        args.lr
    );
    chart::draw(&tmp, &points, &title)
        .and_then(|()| {
            fs::rename(&tmp, &chart_path).context(|| format!("writing {}", chart_path.display()))
        })
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
    println!(
        "wrote {}, {}, {}",
        model_path.display(),
        args.out.join("metrics.csv").display(),
        chart_path.display()
    );
    Ok(())
}
