//! `manabi eval`, `manabi gradcheck` and `manabi data fetch`.

use crate::backend::default_backend;
use crate::error::Context;
use crate::evaluate::Evaluator;
use crate::model::{self, Elem};
use crate::setup::load_data;
use crate::{CliError, EvalArgs, GradcheckArgs, InputArg, PredictArgs, with_backend};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use manabi_cli::stack::Stack;
use manabi_data::{DataError, FetchEvent, MIRRORS, TrainTest};
use manabi_layers::{
    GradCheck, Input, Network, RETAKE_STEPS, Region, Spec, Target, Tolerance, Training,
    gradcheck as check,
};
use manabi_matmul::{DefaultGemm, Gemm};
use manabi_tensor::{CsrBuf, Rng};
use safetensors::Dtype;
use std::path::PathBuf;
use std::time::Instant;

/// `manabi eval --weights FILE`: test accuracy and confusion matrix.
pub fn eval(args: &EvalArgs) -> Result<(), CliError> {
    let model = model::load(&args.weights)?;
    let sets = load_data(&args.data, Some(model.stack.outputs()))?;
    model.check_data(
        &args.weights.display().to_string(),
        sets.test.features(),
        sets.classes,
    )?;
    let backend = args
        .backend
        .unwrap_or_else(|| default_backend(model.stack.reads_images()));
    match model.dtype {
        Dtype::F64 => {
            with_backend!(backend, g => evaluate::<f64, _>(&model, &sets, &g, crate::threads(args.threads), args.input))
        }
        _ => {
            with_backend!(backend, g => evaluate::<f32, _>(&model, &sets, &g, crate::threads(args.threads), args.input))
        }
    }
}

/// `manabi predict FILE…`: the class and its probability for each picture, with a saved MLP
/// or CNN.
pub fn predict(args: &PredictArgs) -> Result<(), CliError> {
    let model = model::load(&args.weights)?;
    // Every picture is read (and refused) before the network runs.
    let pictures = args
        .files
        .iter()
        .map(|f| manabi_cli::digit::load(f))
        .collect::<Result<Vec<_>, _>>()?;
    let side = manabi_cli::digit::SIDE as usize;
    if model.stack.input_len() != side * side {
        return Err(CliError::BadFile(format!(
            "{}: the network reads {} values per sample, not a 28x28 picture",
            args.weights.display(),
            model.stack.input_len()
        )));
    }
    let backend = args
        .backend
        .unwrap_or_else(|| default_backend(model.stack.reads_images()));
    let rows = match model.dtype {
        Dtype::F64 => with_backend!(backend, g => classify::<f64, _>(&model, &pictures, &g)),
        _ => with_backend!(backend, g => classify::<f32, _>(&model, &pictures, &g)),
    }?;
    for (file, (class, p)) in args.files.iter().zip(rows) {
        say!("{}: {class} (probability {p:.4})", file.display());
    }
    Ok(())
}

/// The arg-max class and its softmax probability for each 28×28 picture.
fn classify<T: Elem, G: Gemm<T>>(
    model: &model::Model,
    pictures: &[[u8; 784]],
    mm: &G,
) -> Result<Vec<(usize, f64)>, CliError> {
    let plan = model.stack.plan(1, 1, Training::Inference)?;
    let mut arena = plan.alloc_arena::<T>();
    let mut net = Network::new(&plan, &mut arena)?;
    for (d, &v) in net.params_mut().iter_mut().zip(&model.params) {
        *d = T::from_f64(v);
    }
    for (d, &v) in net.stats_mut().iter_mut().zip(&model.stats) {
        *d = T::from_f64(v);
    }
    let mut out = Vec::with_capacity(pictures.len());
    for picture in pictures {
        // The same scaling as the training data: byte / 255.
        for (x, &b) in net.input_mut(1).iter_mut().zip(picture.iter()) {
            *x = T::from_f64(f64::from(b) / 255.0);
        }
        let logits: Vec<f64> = net
            .forward(mm, Input::Arena(1), manabi_layers::Mode::Eval)
            .iter()
            .map(|v| v.to_f64())
            .collect();
        let class = manabi_layers::argmax(&logits);
        let top = logits[class];
        let sum: f64 = logits.iter().map(|l| (l - top).exp()).sum();
        out.push((class, 1.0 / sum));
    }
    Ok(out)
}

fn evaluate<T: Elem, G: Gemm<T> + Sync>(
    model: &model::Model,
    sets: &TrainTest,
    mm: &G,
    threads: usize,
    input: Option<InputArg>,
) -> Result<(), CliError> {
    let weights: Vec<T> = model
        .params
        .iter()
        .chain(&model.stats)
        .map(|&v| T::from_f64(v))
        .collect();
    let test = &sets.test;
    let (sparse, _) = InputArg::sparse(input, test);
    let sparse = sparse && matches!(model.stack.layers.first(), Some(Spec::Affine(_)));
    let rows = if sparse {
        Some(test.to_sparse::<T>()?)
    } else {
        None
    };
    let mut evaluator = Evaluator::<T>::new(&model.stack, threads)?;
    // The data's classes (the network may have more outputs; a prediction beyond them is
    // still counted, in its own column).
    let classes = model.stack.outputs();
    let confusion = evaluator.confusion(mm, &weights, test, rows.as_ref().map(CsrBuf::view));
    let correct: usize = (0..classes).map(|k| confusion[k * classes + k]).sum();
    say!(
        "backend: {} ({}), {} input; model {}",
        mm.name(),
        T::NAME,
        if sparse { "sparse" } else { "dense" },
        model.stack.describe()
    );
    say!(
        "test accuracy {:.4} ({correct} of {})",
        correct as f64 / test.len() as f64,
        test.len()
    );
    say!("confusion matrix (rows: true label, columns: predicted):");
    let mut header = String::from("      ");
    for k in 0..classes {
        header += &format!("{k:>6}");
    }
    say!("{header}");
    for k in 0..classes {
        let row: String = confusion[k * classes..(k + 1) * classes]
            .iter()
            .map(|c| format!("{c:>6}"))
            .collect();
        say!("{k:>6}{row}");
    }
    Ok(())
}

/// `manabi gradcheck`: the book's gradient_check.py in f64.
pub fn gradcheck(args: &GradcheckArgs) -> Result<(), CliError> {
    let sets = load_data(&args.data, None)?;
    let train = &sets.train;
    let rows = (args.images as usize).min(train.len());
    let stack = gradcheck_stack(args, train, sets.classes)?;
    let plan = stack.plan(rows, rows, Training::Backprop { optimizer_slots: 0 })?;
    let mut arena = plan.alloc_arena::<f64>();
    let mut net = Network::new(&plan, &mut arena)?;
    let mut rng = Rng::new(args.seed);
    net.init(args.init, &mut rng);
    draw_biases(&mut net, args.bias_std, &mut rng);
    // The book checks on x_train[:3].
    train.copy_rows(0, net.input_mut(rows));
    let labels = &train.labels()[..rows];
    let mm = DefaultGemm::default();
    let mut numeric = vec![0.0f64; plan.param_len()];
    let masks = net.rng().clone();
    let t1 = Instant::now();
    let report = check(
        &mut net,
        &mm,
        Input::Arena(rows),
        Target::Labels(labels),
        0.0,
        &mut numeric,
    )?;
    let check_time = t1.elapsed().as_secs_f64();
    // One more backprop pass, timed alone: it changes no parameter and, with the Dropout
    // generator wound back, draws the same masks, so the gradients stay those checked.
    net.set_rng(masks);
    let mut grads = manabi_layers::Update::gradients(&plan)?;
    let t0 = Instant::now();
    net.train_step(&mm, Input::Arena(rows), Target::Labels(labels), &mut grads);
    let backprop_time = t0.elapsed().as_secs_f64();
    say!(
        "network {} on {rows} training images, f64, backend {}",
        stack.short(),
        Gemm::<f64>::name(&mm)
    );
    say!(
        "numerical gradient: {} loss evaluations in {check_time:.2} s; backprop: {:.3} ms ({:.0}x faster)",
        2 * plan.param_len(),
        backprop_time * 1e3,
        check_time / backprop_time.max(1e-9)
    );
    let tolerance = Tolerance {
        atol: args.atol,
        rtol: args.rtol,
    };
    if report.retaken > 0 {
        let steps: Vec<String> = RETAKE_STEPS.iter().map(|s| format!("{s}x")).collect();
        say!(
            "numerical gradient taken again with {} smaller steps at {} elements where it disagreed",
            steps.join(", "),
            report.retaken
        );
    }
    let report = GradCheck::compare(&plan, net.grads(), &numeric, report.loss, tolerance);
    verdict(&report)
}

/// The stack `manabi gradcheck` checks: `--net`, else the MLP of `--hidden`.
fn gradcheck_stack(
    args: &GradcheckArgs,
    train: &manabi_data::Dataset,
    classes: usize,
) -> Result<Stack, CliError> {
    let stack = match &args.net {
        Some(text) => Stack::parse(manabi_cli::stack::data_shape(train), text)?,
        None => {
            let hidden: Vec<usize> = args.hidden.iter().map(|&h| h as usize).collect();
            Stack::mlp(train.features(), &hidden, classes, Spec::Relu)
        }
    };
    if stack.outputs() < classes {
        return Err(CliError::Usage(format!(
            "--net ends with {} outputs, but the data has {classes} classes",
            stack.outputs(),
        )));
    }
    Ok(stack)
}

/// Draws every bias (`b…`, and BatchNorm's `beta…`) from N(0, std), for `--bias-std`; nothing
/// for 0. Zero biases put every unit that sees only zero pixels on ReLU's kink, and every
/// window of such units in a tie.
fn draw_biases(net: &mut Network<'_, f64>, std: f64, rng: &mut Rng) {
    if std == 0.0 {
        return;
    }
    let plan = net.plan();
    for t in plan.tensors() {
        if t.region == Region::Params && matches!(t.name.prefix, "b" | "beta") {
            rng.fill_normal(&mut net.params_mut()[t.span.start..t.span.end()], std);
        }
    }
}

/// Prints each tensor's differences, then passes or names the worst element.
fn verdict(report: &GradCheck) -> Result<(), CliError> {
    for d in report.tensors() {
        say!(
            "{}: mean |diff| {:.3e}  max |diff| {:.3e}  max rel {:.3e}",
            d.name,
            d.mean_abs,
            d.max_abs,
            d.max_rel
        );
    }
    let Tolerance { atol, rtol } = report.tolerance;
    if let Err(mismatch) = report.verdict() {
        return Err(CliError::GradCheck(format!(
            "gradient check failed: {mismatch}"
        )));
    }
    say!(
        "gradient check passed (every element within {atol:.1e} + {rtol:.1e}·max(|backprop|, |numerical|))"
    );
    Ok(())
}

/// `manabi data fetch`.
pub fn fetch(dir: Option<PathBuf>) -> Result<(), CliError> {
    let dir = dir
        .or_else(|| std::env::var_os(manabi_data::mnist::DATA_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(manabi_data::mnist::DEFAULT_DATA_DIR));
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{msg:32} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
    {
        bar.set_style(style);
    }
    let mut on_event = |e: FetchEvent<'_>| match e {
        FetchEvent::Present { path } => {
            bar.suspend(|| say!("present and verified: {}", path.display()))
        }
        FetchEvent::Start { file, url, total } => {
            bar.reset();
            bar.set_length(total.unwrap_or(0));
            bar.set_message(file.to_string());
            bar.suspend(|| say!("downloading {url}"));
        }
        FetchEvent::Progress { done, total, .. } => {
            if let Some(t) = total {
                bar.set_length(t);
            }
            bar.set_position(done);
        }
        FetchEvent::MirrorFailed { url, reason, .. } => {
            bar.suspend(|| say!("  {url} failed: {reason}; trying the next mirror"))
        }
        FetchEvent::Done { path, .. } => {
            bar.suspend(|| say!("  verified and stored {}", path.display()))
        }
        _ => {}
    };
    let result: Result<(), DataError> = manabi_data::fetch(&dir, MIRRORS, &mut on_event);
    bar.finish_and_clear();
    result.context(|| "fetching MNIST".to_string())?;
    say!("MNIST is ready in {}", dir.display());
    Ok(())
}
