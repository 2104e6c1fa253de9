//! Weights on disk: safetensors files (`W1`, `b1`, …) written atomically, read with checks.

use crate::CliError;
use crate::error::Context;
use manabi_data::{Batcher, Dataset};
use manabi_layers::{Activation, MlpPlan};
use manabi_tensor::{Real, Rng};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// The format tag stored in the file's metadata.
const FORMAT: &str = "manabi-mlp";

/// The one metadata key: its value is `key=value` pairs joined by `;`, sorted by key.
pub const META_KEY: &str = "manabi";

/// An element type the CLI trains in: `f32` or `f64`, with its safetensors dtype.
pub trait Elem: Real {
    /// The safetensors dtype.
    const DTYPE: Dtype;
    /// Appends the little-endian bytes of `v`.
    fn put_le(v: &[Self], out: &mut Vec<u8>);
    /// The data set's `f32` samples as this type: borrowed for `f32`, converted for `f64`.
    fn from_f32s(v: &[f32]) -> Cow<'_, [Self]>;
    /// Fills `input` (the network's input rows) and `labels` with the next batch; `f32` is
    /// gathered in place, other types through the reused `scratch` buffer.
    fn next_batch(
        batcher: &mut Batcher,
        rng: &mut Rng,
        data: &Dataset,
        input: &mut [Self],
        labels: &mut [usize],
        scratch: &mut [f32],
    ) -> usize;
}

impl Elem for f32 {
    const DTYPE: Dtype = Dtype::F32;
    fn put_le(v: &[Self], out: &mut Vec<u8>) {
        v.iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    }
    fn from_f32s(v: &[f32]) -> Cow<'_, [Self]> {
        Cow::Borrowed(v)
    }
    fn next_batch(
        batcher: &mut Batcher,
        rng: &mut Rng,
        data: &Dataset,
        input: &mut [Self],
        labels: &mut [usize],
        _: &mut [f32],
    ) -> usize {
        batcher.next_batch(rng, data, input, labels)
    }
}

impl Elem for f64 {
    const DTYPE: Dtype = Dtype::F64;
    fn put_le(v: &[Self], out: &mut Vec<u8>) {
        v.iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    }
    fn from_f32s(v: &[f32]) -> Cow<'_, [Self]> {
        Cow::Owned(v.iter().map(|&x| f64::from(x)).collect())
    }
    fn next_batch(
        batcher: &mut Batcher,
        rng: &mut Rng,
        data: &Dataset,
        input: &mut [Self],
        labels: &mut [usize],
        scratch: &mut [f32],
    ) -> usize {
        let rows = batcher.next_batch(rng, data, scratch, labels);
        for (d, &s) in input.iter_mut().zip(scratch.iter()) {
            *d = f64::from(s);
        }
        rows
    }
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never a mix:
/// a temporary file in the same directory, fsync, rename over `path`, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable; directories can be opened read-only on Unix.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok::<(), std::io::Error>(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.context(|| format!("writing {}", path.display()))
}

fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::Relu => "relu",
        Activation::Sigmoid => "sigmoid",
    }
}

/// Serialises the parameters of a network planned by `plan` as safetensors bytes.
pub fn to_safetensors<T: Elem>(
    plan: &MlpPlan,
    params: &[T],
    extra: &[(&str, String)],
) -> Result<Vec<u8>, CliError> {
    let mut bytes: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    for info in plan.tensors() {
        let mut b = Vec::with_capacity(info.span.len * T::BYTES);
        T::put_le(&params[info.span.start..info.span.end()], &mut b);
        bytes.push((info.name.to_string(), b, info.dims().to_vec()));
    }
    let views = bytes
        .iter()
        .map(|(name, b, shape)| {
            TensorView::new(T::DTYPE, shape.clone(), b).map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .context(|| "building tensors".into())?;
    // safetensors keeps metadata in a HashMap, whose order changes from run to run; one key
    // holding sorted `key=value` pairs keeps the file byte-identical for identical runs.
    let mut fields = BTreeMap::new();
    fields.insert("format", FORMAT.to_string());
    fields.insert(
        "sizes",
        plan.sizes()
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    fields.insert("activation", activation_name(plan.activation()).to_string());
    for (k, v) in extra {
        fields.insert(k, v.clone());
    }
    let text = fields
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";");
    let meta = HashMap::from([(META_KEY.to_string(), text)]);
    safetensors::serialize(views, Some(meta)).context(|| "serialising weights".into())
}

/// A network read back from a weights file.
#[derive(Debug)]
pub struct Model {
    /// Layer widths, input first.
    pub sizes: Vec<usize>,
    /// Activation between layers.
    pub activation: Activation,
    /// The dtype stored (`F32` or `F64`).
    pub dtype: Dtype,
    /// Parameters in the network's layout `[W1 b1 W2 b2 …]`, widened to f64 (exactly).
    pub params: Vec<f64>,
}

/// Reads and checks a weights file written by [`to_safetensors`]: every tensor's name, dtype
/// and shape must form a chain `W1 [d0,d1], b1 [d1], W2 [d1,d2], …`; the first mismatch is named.
pub fn load(path: &Path) -> Result<Model, CliError> {
    let shown = path.display();
    let bytes = fs::read(path).context(|| format!("reading {shown}"))?;
    let st =
        SafeTensors::deserialize(&bytes).context(|| format!("{shown}: not a safetensors file"))?;
    let (_, meta) =
        SafeTensors::read_metadata(&bytes).context(|| format!("{shown}: bad header"))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let fields: HashMap<&str, &str> = meta
        .get(META_KEY)
        .map(|t| t.split(';').filter_map(|kv| kv.split_once('=')).collect())
        .unwrap_or_default();
    let activation = match fields.get("activation").copied() {
        Some("relu") | None => Activation::Relu,
        Some("sigmoid") => Activation::Sigmoid,
        Some(other) => return Err(CliError(format!("{shown}: unknown activation {other:?}"))),
    };
    let layers = (1..)
        .take_while(|l| st.tensor(&format!("W{l}")).is_ok())
        .count();
    if layers == 0 {
        return Err(CliError(format!("{shown}: no tensor named W1")));
    }
    let expected_tensors = 2 * layers;
    if st.len() != expected_tensors {
        let names: Vec<String> = st.names().into_iter().map(|n| n.to_string()).collect();
        return Err(CliError(format!(
            "{shown}: expected tensors W1..W{layers} and b1..b{layers}, found {names:?}"
        )));
    }
    let mut dtype = None;
    let mut sizes = Vec::new();
    let mut params = Vec::new();
    for l in 1..=layers {
        for name in [format!("W{l}"), format!("b{l}")] {
            let t = st
                .tensor(&name)
                .context(|| format!("{shown}: tensor {name}"))?;
            let d = t.dtype();
            if !matches!(d, Dtype::F32 | Dtype::F64) {
                return Err(CliError(format!(
                    "{shown}: tensor {name} has dtype {d:?}, expected F32 or F64"
                )));
            }
            if *dtype.get_or_insert(d) != d {
                return Err(CliError(format!(
                    "{shown}: tensor {name} has dtype {d:?}, the others {:?}",
                    dtype.unwrap_or(d)
                )));
            }
            let shape = t.shape();
            let ok = if name.starts_with('W') {
                if shape.len() == 2 && (sizes.is_empty() || sizes.last() == Some(&shape[0])) {
                    if sizes.is_empty() {
                        sizes.push(shape[0]);
                    }
                    sizes.push(shape[1]);
                    true
                } else {
                    false
                }
            } else {
                shape.len() == 1 && sizes.last() == Some(&shape[0])
            };
            if !ok || shape.contains(&0) {
                return Err(CliError(format!(
                    "{shown}: tensor {name} has shape {shape:?}, which does not fit the layers before it {sizes:?}"
                )));
            }
            match d {
                Dtype::F32 => params.extend(
                    t.data()
                        .chunks_exact(4)
                        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
                ),
                _ => params.extend(t.data().chunks_exact(8).map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    f64::from_le_bytes(b)
                })),
            }
        }
    }
    Ok(Model {
        sizes,
        activation,
        dtype: dtype.unwrap_or(Dtype::F32),
        params,
    })
}
