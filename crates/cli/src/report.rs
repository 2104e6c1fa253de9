//! What `manabi train` prints about a run before it starts (the network, the protocol, how it computes) and writes after it ends (weights, `metrics.csv`, the chart).

use crate::chart::{self, EpochPoint};
use crate::error::Context;
use crate::model::{self, Elem};
use crate::watch::SetRows;
use manabi_cli::CliError;
use manabi_cli::checkpoint::{self, MetricRow, RunConfig};
use manabi_layers::{Network, Plan};
use manabi_optim::AnyOptimizer;
use manabi_tensor::Real;
use std::fs;
use std::path::Path;

/// Prints the network and the protocol.
pub fn print_network<T: Real>(config: &RunConfig, opt: &AnyOptimizer<T>, iter_per_epoch: u64) {
    let decay = if config.weight_decay > 0.0 {
        format!(", weight decay {}", config.weight_decay)
    } else {
        String::new()
    };
    say!(
        "network: {}, {} lr {}{decay}, batch {}, {} iterations ({:.2} epochs of {iter_per_epoch}), seed {}",
        config.stack.describe(),
        opt.name(),
        config.lr,
        config.batch,
        config.iters,
        config.iters as f64 / iter_per_epoch as f64,
        config.seed
    );
}

/// Prints how the run computes: backend, input, evaluation (`evaluators` threads, in the
/// `background` or inline) and the arena's breakdown. `replicas` is the data-parallel split,
/// if any.
pub fn print_backend<T: Elem>(
    plan: &Plan,
    backend: &str,
    (rows, zeros): (SetRows<'_, T>, Option<f64>),
    (evaluators, background): (usize, bool),
    replicas: Option<usize>,
) {
    let input = match (rows, zeros) {
        (Some((a, b)), z) => format!(
            "sparse rows ({}{:.1} M nonzeros, {:.0} MB)",
            z.map_or(String::new(), |z| format!("{:.0} % zeros, ", 100.0 * z)),
            (a.nnz() + b.nnz()) as f64 / 1e6,
            ((a.nnz() + b.nnz()) * (4 + T::BYTES)) as f64 / 1e6
        ),
        (None, Some(z)) => format!("dense rows ({:.0} % zeros)", 100.0 * z),
        (None, None) => "dense rows".to_string(),
    };
    let evaluation = format!(
        "on {evaluators} thread{}{}",
        if evaluators == 1 { "" } else { "s" },
        if background { " in the background" } else { "" }
    );
    let arenas = match replicas {
        Some(n) => format!("{n} data-parallel arenas of {} rows", plan.batch()),
        None => "arena".to_string(),
    };
    let (p, g, s, a) = plan.breakdown();
    say!(
        "backend: {backend} ({}), input as {input}, evaluation {evaluation}; {arenas}: {} elements, {:.1} KiB (parameters {p}, gradients {g}, optimizer state {s}, activations {a})",
        T::NAME,
        plan.total(),
        plan.bytes::<T>() as f64 / 1024.0
    );
}

/// Writes the run's results into `out`: the weights, `metrics.csv` and the chart.
pub fn write_outputs<T: Elem>(
    config: &RunConfig,
    out: &Path,
    (net, backend, sparse): (&Network<'_, T>, &str, bool),
    opt: &AnyOptimizer<T>,
    final_test: f64,
    metrics: &[MetricRow],
) -> Result<(), CliError> {
    let extra = [
        ("backend", backend.to_string()),
        ("input", if sparse { "sparse" } else { "dense" }.to_string()),
        ("seed", config.seed.to_string()),
        ("iterations", config.iters.to_string()),
        ("test_accuracy", final_test.to_string()),
    ];
    let bytes =
        model::to_safetensors(&config.stack, net.plan(), net.params(), net.stats(), &extra)?;
    let model_path = out.join("model.safetensors");
    model::write_atomic(&model_path, &bytes)?;
    let csv: String = std::iter::once(checkpoint::CSV_HEADER.to_string())
        .chain(metrics.iter().map(MetricRow::csv_line))
        .collect();
    model::write_atomic(&out.join("metrics.csv"), csv.as_bytes())?;
    let chart_path = out.join("accuracy.png");
    let tmp = out.join(format!(".accuracy.tmp-{}.png", std::process::id()));
    let title = format!(
        "manabi {}, {} lr {}, batch {}: final test accuracy {final_test:.4}",
        config.stack.short(),
        opt.name(),
        config.lr,
        config.batch
    );
    let points: Vec<EpochPoint> = metrics
        .iter()
        .map(|m| EpochPoint {
            epoch: m.epoch,
            train_acc: m.train_acc,
            test_acc: m.test_acc,
            loss: m.loss,
        })
        .collect();
    chart::draw(&tmp, &points, &title)
        .and_then(|()| {
            fs::rename(&tmp, &chart_path).context(|| format!("writing {}", chart_path.display()))
        })
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
    say!(
        "wrote {}, {}, {}",
        model_path.display(),
        out.join("metrics.csv").display(),
        chart_path.display()
    );
    Ok(())
}
