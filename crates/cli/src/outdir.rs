//! `manabi train`'s output directory: checked writable before the data loads, stale temporaries of killed runs removed, and room for everything the run writes probed before the first step.

use crate::CliError;
use crate::error::Context;
use crate::model::{self, Elem};
use manabi_cli::checkpoint::{self, RunConfig};
use manabi_data::Sampling;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// Files this command writes into `--out`, whose temporary twins a killed run may leave behind.
const OUTPUTS: [&str; 5] = [
    "model.safetensors",
    "metrics.csv",
    checkpoint::CHECKPOINT_FILE,
    // The write probe's name starts with a dot already, so its twin starts with two.
    ".manabi-write-test",
    "manabi-space-probe",
];

/// Checks that `out` can be written before any time is spent, and removes the temporary
/// files a killed run left behind.
pub fn prepare_out(out: &Path) -> Result<(), CliError> {
    fs::create_dir_all(out).context(|| format!("creating output directory {}", out.display()))?;
    remove_stale_temporaries(out);
    let probe = out.join(".manabi-write-test");
    model::write_atomic(&probe, &[0u8; 4096]).map_err(|e| {
        CliError::Output(format!(
            "output directory {} is not writable: {e}",
            out.display()
        ))
    })?;
    fs::remove_file(&probe).context(|| format!("cleaning up {}", probe.display()))
}

/// Removes `.<output>.tmp-<pid>-…` files (and `.accuracy.tmp-<pid>.png`) whose writer is no
/// longer running. Where there is no `/proc` to ask, nothing is removed.
fn remove_stale_temporaries(out: &Path) {
    let Ok(entries) = fs::read_dir(out) else {
        return;
    };
    if !Path::new("/proc/self").exists() {
        return;
    }
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = OUTPUTS
            .iter()
            .find_map(|o| name.strip_prefix(&format!(".{o}.tmp-")))
            .or_else(|| {
                name.strip_prefix(".accuracy.tmp-")
                    .and_then(|r| r.strip_suffix(".png"))
            });
        // `write_atomic` names them `.<output>.tmp-<pid>-<random>`.
        let pid = pid.map(|p| p.split_once('-').map_or(p, |(pid, _)| pid));
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok())
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Bytes allowed for the chart: a PNG holds at most about its raw pixels (1000×420 RGB)
/// plus framing; the charts written are typically 240 KiB.
const CHART_BYTES: u64 = 1000 * 420 * 3 + (64 << 10);

/// Writes and removes a file as large as everything the run will write, so that a full disk
/// (or a file-size limit) is reported before training rather than after.
///
/// A probe beats asking for the free space: it needs no platform call, and it also meets
/// quotas and `ulimit -f`.
pub fn check_space(out: &Path, bytes: u64) -> Result<(), CliError> {
    let probe = out.join(format!(".manabi-space-probe.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&probe)?;
        let block = vec![0u8; 1 << 16];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n])?;
            left -= n as u64;
        }
        f.sync_all()
    })();
    let _ = fs::remove_file(&probe);
    result.map_err(|e| {
        CliError::Output(format!(
            "output directory {} has no room for the {:.1} MiB this run writes (weights, checkpoint, chart): {e}",
            out.display(),
            bytes as f64 / (1u64 << 20) as f64
        ))
    })
}

/// Slack for a safetensors file's header and metadata, beyond its tensors.
const HEADER_BYTES: u64 = 4096;
/// A checkpoint's fixed state, in `u64` words at most: the two generators (4 each), the
/// batch position, the iteration, the loss window and the elapsed time.
const STATE_WORDS: u64 = 10;
/// Bytes of one evaluation in a checkpoint's `metrics` tensor (six `f64`).
const METRIC_BYTES: u64 = 8 * checkpoint::METRIC_COLUMNS as u64;
/// Bytes of one `metrics.csv` line, at most.
const CSV_LINE_BYTES: u64 = 80;

/// What a run writes at most into `--out`: the weights, two checkpoints while one replaces
/// the other (weights, optimizer state, batcher permutation, metrics), the chart and the CSV.
/// `params` and `state` are element counts of `T::BYTES` each.
pub fn output_bytes<T: Elem>(
    config: &RunConfig,
    params: usize,
    state: usize,
    iter_per_epoch: u64,
) -> u64 {
    // The book's evaluation points, plus the first and the last.
    let evals = config.iters / iter_per_epoch + 2;
    let weights = (params * T::BYTES) as u64 + HEADER_BYTES;
    let permutation = match config.sampling {
        Sampling::EpochShuffle => config.train_len as u64,
        Sampling::Random => 0,
    };
    let checkpoint = if config.checkpoint_every.is_some() {
        weights + (state * T::BYTES) as u64 + 8 * (permutation + STATE_WORDS) + METRIC_BYTES * evals
    } else {
        0
    };
    weights + 2 * checkpoint + CHART_BYTES + CSV_LINE_BYTES * evals
}
