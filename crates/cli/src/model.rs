//! Weights on disk: safetensors files (`W1`, `b1`, `gamma1`, `running_mean1`, …) written atomically, read with checks.

use crate::CliError;
use crate::error::Context;
use crate::stack::{Stack, activation_from_name};
use manabi_layers::{Plan, Region, Spec, Training};
use manabi_tensor::Real;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// The format tag of an MLP's file (affine layers and one activation), unchanged since the
/// first release so that an MLP's file is byte for byte what it was.
const FORMAT_MLP: &str = "manabi-mlp";

/// The format tag of any other stack's file: the layers are in the `net` field.
const FORMAT_NET: &str = "manabi-net";

/// The one metadata key: its value is `key=value` pairs joined by `;`, sorted by key.
///
/// Kept rather than a JSON object: every weights file and checkpoint written so far uses it
/// (and must keep loading), the default run's file is pinned byte for byte, the values are
/// all plain numbers and names (`Spec`'s text, `Sampling::name`, …) that hold no `;` or `=`,
/// and Python reads it with `dict(kv.split("=", 1) for kv in meta.split(";"))`.
pub const META_KEY: &str = "manabi";

/// An element type the CLI trains in: `f32` or `f64`, with its safetensors dtype.
pub trait Elem: Real {
    /// The safetensors dtype.
    const DTYPE: Dtype;
    /// Appends the little-endian bytes of `v`.
    fn put_le(v: &[Self], out: &mut Vec<u8>);
}

impl Elem for f32 {
    const DTYPE: Dtype = Dtype::F32;
    fn put_le(v: &[Self], out: &mut Vec<u8>) {
        v.iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    }
}

impl Elem for f64 {
    const DTYPE: Dtype = Dtype::F64;
    fn put_le(v: &[Self], out: &mut Vec<u8>) {
        v.iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    }
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never a mix:
/// a temporary file in the same directory, fsync, rename over `path`, fsync the directory.
///
/// The temporary file (`tempfile`'s, removed on any error) is named `.<name>.tmp-<pid>-…`,
/// so that a later run can tell the leftovers of a killed writer by its pid. It is created
/// with the permissions `File::create` gives (0666 less the umask), not `tempfile`'s
/// private 0600, since it becomes the output.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    write_atomic_or_pause(path, bytes, None)
}

/// [`write_atomic`], or with `midway` (for kill tests only) a writer that writes half of
/// `bytes`, syncs them and calls `midway`, which does not return: what a process killed
/// inside the write leaves behind.
pub fn write_atomic_or_pause(
    path: &Path,
    bytes: &[u8],
    midway: Option<fn(&Path) -> !>,
) -> Result<(), CliError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = (|| {
        let prefix = format!(".{name}.tmp-{}-", std::process::id());
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(fs::Permissions::from_mode(0o666));
        }
        let mut tmp = builder.tempfile_in(dir)?;
        if let Some(pause) = midway {
            tmp.write_all(&bytes[..bytes.len() / 2])?;
            tmp.as_file().sync_all()?;
            pause(path);
        }
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        // Make the rename itself durable; directories can be opened read-only on Unix.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok::<(), std::io::Error>(())
    })();
    result.context(|| format!("writing {}", path.display()))
}

/// Serialises the named tensors of a network planned by `plan` from `stack`: its parameters
/// (`W1`, `b1`, `gamma1`, `beta1`, …) and running statistics (`running_mean1`,
/// `running_var1`, …), with the stack and `extra` in the metadata.
///
/// # Errors
/// If the slices do not fit the plan, or serialisation fails.
pub fn to_safetensors<T: Elem>(
    stack: &Stack,
    plan: &Plan,
    params: &[T],
    stats: &[T],
    extra: &[(&str, String)],
) -> Result<Vec<u8>, CliError> {
    if params.len() != plan.param_len() || stats.len() != plan.stats_len() {
        return Err(CliError::BadFile(format!(
            "weights: {} parameters and {} statistics do not fit a network of {} and {}",
            params.len(),
            stats.len(),
            plan.param_len(),
            plan.stats_len()
        )));
    }
    let bytes = tensor_bytes(plan, params, stats);
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
    let format = if stack.as_mlp().is_some() {
        FORMAT_MLP
    } else {
        FORMAT_NET
    };
    fields.insert("format", format.to_string());
    stack.write_fields(&mut fields);
    for (k, v) in extra {
        fields.insert(k, v.clone());
    }
    let meta = HashMap::from([(META_KEY.to_string(), join_fields(&fields))]);
    safetensors::serialize(views, Some(meta)).context(|| "serialising weights".into())
}

/// Sorted `key=value` pairs joined by `;`.
pub(crate) fn join_fields(fields: &BTreeMap<&str, String>) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Each named tensor of the plan as (name, little-endian bytes, shape).
pub(crate) fn tensor_bytes<T: Elem>(
    plan: &Plan,
    params: &[T],
    stats: &[T],
) -> Vec<(String, Vec<u8>, Vec<usize>)> {
    plan.tensors()
        .map(|info| {
            let from = match info.region {
                Region::Params => params,
                Region::Stats => stats,
            };
            let mut b = Vec::with_capacity(info.span.len * T::BYTES);
            T::put_le(&from[info.span.start..info.span.end()], &mut b);
            (info.name.to_string(), b, info.dims().to_vec())
        })
        .collect()
}

/// A network read back from a weights file.
#[derive(Debug)]
pub struct Model {
    /// The layers and input width.
    pub stack: Stack,
    /// The dtype stored (`F32` or `F64`).
    pub dtype: Dtype,
    /// Parameters in the network's layout (`[W1 b1 W2 b2 …]` for an MLP), widened to f64
    /// (exactly).
    pub params: Vec<f64>,
    /// Running statistics in the network's layout (empty without BatchNorm), widened alike.
    pub stats: Vec<f64>,
}

impl Model {
    /// Checks the network against a data set of `features` inputs and `classes` labels and
    /// names the first tensor that does not fit: `W1` for the inputs, the last Affine weight
    /// for the outputs (a network with more outputs than the data has classes is accepted).
    ///
    /// # Errors
    /// A [`CliError`] naming `name`, the tensor, its shape and what the data needs.
    pub fn check_data(&self, name: &str, features: usize, classes: usize) -> Result<(), CliError> {
        let plan = self.stack.plan(1, 1, Training::Inference)?;
        let weights: Vec<_> = plan.tensors().filter(|t| t.name.prefix == "W").collect();
        let shape = |i: usize| {
            weights
                .get(i)
                .map(|t| t.dims().to_vec())
                .unwrap_or_default()
        };
        if self.stack.input_len() != features {
            return Err(CliError::BadFile(format!(
                "{name}: tensor W1 has shape {:?}, but the data has {features} input features",
                shape(0)
            )));
        }
        let outputs = plan.classes();
        if outputs < classes {
            let last = weights.len().saturating_sub(1);
            return Err(CliError::BadFile(format!(
                "{name}: tensor W{} has shape {:?} ({outputs} outputs), but the data has {classes} classes",
                last + 1,
                shape(last)
            )));
        }
        Ok(())
    }
}

/// Reads and checks a weights file written by [`to_safetensors`] (see [`parse`]).
///
/// # Errors
/// The file can't be read, or any error of [`parse`]; messages start with the path.
pub fn load(path: &Path) -> Result<Model, CliError> {
    let shown = path.display().to_string();
    let bytes = fs::read(path).context(|| format!("reading {shown}"))?;
    parse(&bytes, &shown)
}

/// Checks the bytes of a weights file written by [`to_safetensors`]; `name` (usually the
/// path) starts every message. A file with a `net` field holds exactly the tensors its
/// layers plan, with their shapes; an MLP's file (no `net` field, as every file before other
/// layers existed) holds a chain `W1 [d0,d1], b1 [d1], W2 [d1,d2], …` and nothing else. The
/// first mismatch is named.
///
/// # Errors
/// Not a safetensors file, a header declaring sizes larger than the file, an unknown
/// activation or layer, a missing or extra tensor, a dtype other than F32/F64 (or mixed), a
/// shape that does not fit, a zero dimension, or a value that is not finite.
pub fn parse(bytes: &[u8], name: &str) -> Result<Model, CliError> {
    let (st, fields) = open(bytes, name)?;
    if let Some(format) = fields.get("format")
        && format != FORMAT_MLP
        && format != FORMAT_NET
    {
        return Err(CliError::BadFile(format!(
            "{name}: this is a {format:?} file, not weights written by manabi train"
        )));
    }
    if let Some(stack) = Stack::from_net_fields(&fields, name)? {
        let plan = stack.plan(1, 1, Training::Inference)?;
        let found = read_tensors(&st, name, &plan, &stack.short(), &[])?;
        return Ok(Model {
            stack,
            dtype: found.dtype,
            params: found.params,
            stats: found.stats,
        });
    }
    let activation = match fields.get("activation").map(String::as_str) {
        None => Spec::Relu,
        Some(a) => activation_from_name(a)
            .ok_or_else(|| CliError::BadFile(format!("{name}: unknown activation {a:?}")))?,
    };
    let layers = (1..)
        .take_while(|l| st.tensor(&format!("W{l}")).is_ok())
        .count();
    if layers == 0 {
        return Err(CliError::BadFile(format!("{name}: no tensor named W1")));
    }
    if st.len() != 2 * layers {
        let mut names: Vec<String> = st.names().into_iter().map(|n| n.to_string()).collect();
        names.sort();
        return Err(CliError::BadFile(format!(
            "{name}: expected tensors W1..W{layers} and b1..b{layers}, found {names:?}"
        )));
    }
    let chain = read_chain(&st, name, layers)?;
    let sizes = chain.sizes;
    Ok(Model {
        stack: Stack::mlp(
            sizes[0],
            &sizes[1..sizes.len() - 1],
            sizes[sizes.len() - 1],
            activation,
        ),
        dtype: chain.dtype,
        params: chain.params,
        stats: Vec::new(),
    })
}

/// The tensors a plan names, read from a file and checked.
pub(crate) struct Found {
    /// The one float dtype of all of them.
    pub dtype: Dtype,
    /// The parameters in the plan's layout, widened to f64.
    pub params: Vec<f64>,
    /// The running statistics in the plan's layout, widened to f64.
    pub stats: Vec<f64>,
}

/// Reads every tensor `plan` names from `st`: each must be there with an F32 or F64 dtype
/// (the same for all), the plan's shape and finite values, and the file may hold nothing
/// else but `allowed` (a checkpoint's own tensors). `net` describes the network in messages.
pub(crate) fn read_tensors(
    st: &SafeTensors<'_>,
    name: &str,
    plan: &Plan,
    net: &str,
    allowed: &[&str],
) -> Result<Found, CliError> {
    let infos: Vec<_> = plan.tensors().collect();
    let mut extra: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| {
            let n: &str = n;
            !allowed.contains(&n) && !infos.iter().any(|t| t.name.to_string() == n)
        })
        .map(|n| n.to_string())
        .collect();
    if !extra.is_empty() {
        extra.sort();
        return Err(CliError::BadFile(format!(
            "{name}: unexpected tensor {:?} in a file of the network {net}",
            extra[0]
        )));
    }
    let mut dtype = None;
    let mut params = vec![0.0; plan.param_len()];
    let mut stats = vec![0.0; plan.stats_len()];
    for info in &infos {
        let tensor = info.name.to_string();
        let t = st
            .tensor(&tensor)
            .map_err(|_| CliError::BadFile(format!("{name}: tensor {tensor} is missing")))?;
        let d = t.dtype();
        if !matches!(d, Dtype::F32 | Dtype::F64) {
            return Err(CliError::BadFile(format!(
                "{name}: tensor {tensor} has dtype {d:?}, expected F32 or F64"
            )));
        }
        if *dtype.get_or_insert(d) != d {
            return Err(CliError::BadFile(format!(
                "{name}: tensor {tensor} has dtype {d:?}, the tensors before it {:?}",
                dtype.unwrap_or(d)
            )));
        }
        if t.shape() != info.dims() {
            return Err(CliError::BadFile(format!(
                "{name}: tensor {tensor} has shape {:?}, but the network {net} needs {:?}",
                t.shape(),
                info.dims()
            )));
        }
        let values = floats(d, t.data());
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(CliError::BadFile(format!(
                "{name}: tensor {tensor} holds {} at index {i}",
                values[i]
            )));
        }
        let into = match info.region {
            Region::Params => &mut params,
            Region::Stats => &mut stats,
        };
        into[info.span.start..info.span.end()].copy_from_slice(&values);
    }
    Ok(Found {
        dtype: dtype.unwrap_or(Dtype::F32),
        params,
        stats,
    })
}

/// The layer tensors `W1 b1 … WL bL` of an MLP's file, checked and flattened.
struct Chain {
    /// Layer widths, input first.
    pub sizes: Vec<usize>,
    /// The one float dtype of all of them.
    pub dtype: Dtype,
    /// `[W1 b1 W2 b2 …]` widened to f64.
    pub params: Vec<f64>,
}

/// Opens safetensors bytes after [`check_header`] and returns the `manabi` metadata fields.
pub(crate) fn open<'a>(
    bytes: &'a [u8],
    name: &str,
) -> Result<(SafeTensors<'a>, BTreeMap<String, String>), CliError> {
    check_header(bytes, name)?;
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| CliError::BadFile(format!("{name}: not a safetensors file: {e}")))?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| CliError::BadFile(format!("{name}: not a safetensors file: {e}")))?;
    let fields = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .map(|t| {
            t.split(';')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    Ok((st, fields))
}

/// Reads an MLP's `W1 b1 … WL bL`, whose shapes must chain.
fn read_chain(st: &SafeTensors<'_>, name: &str, layers: usize) -> Result<Chain, CliError> {
    let mut dtype = None;
    let mut sizes: Vec<usize> = Vec::new();
    let mut params = Vec::new();
    for l in 1..=layers {
        for tensor in [format!("W{l}"), format!("b{l}")] {
            let t = st
                .tensor(&tensor)
                .map_err(|_| CliError::BadFile(format!("{name}: tensor {tensor} is missing")))?;
            let d = t.dtype();
            if !matches!(d, Dtype::F32 | Dtype::F64) {
                return Err(CliError::BadFile(format!(
                    "{name}: tensor {tensor} has dtype {d:?}, expected F32 or F64"
                )));
            }
            if *dtype.get_or_insert(d) != d {
                return Err(CliError::BadFile(format!(
                    "{name}: tensor {tensor} has dtype {d:?}, the tensors before it {:?}",
                    dtype.unwrap_or(d)
                )));
            }
            let shape = t.shape();
            let is_weight = tensor.starts_with('W');
            let ok = if is_weight {
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
                return Err(CliError::BadFile(format!(
                    "{name}: tensor {tensor} has shape {shape:?}, which does not fit the layers before it {sizes:?}"
                )));
            }
            let values = floats(d, t.data());
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(CliError::BadFile(format!(
                    "{name}: tensor {tensor} holds {} at index {i}",
                    values[i]
                )));
            }
            params.extend(values);
        }
    }
    Ok(Chain {
        sizes,
        dtype: dtype.unwrap_or(Dtype::F32),
        params,
    })
}

/// Little-endian F32 or F64 bytes as f64 values (F32 widened exactly); empty for other dtypes.
pub(crate) fn floats(dtype: Dtype, data: &[u8]) -> Vec<f64> {
    match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Refuses a safetensors header that declares any number (a data offset or a dimension)
/// larger than the whole file, before the safetensors crate does arithmetic with it.
///
/// No valid file holds such a number: offsets end inside the file and, for the F32/F64/U64
/// tensors written here, every dimension is at most the number of elements stored. Checking
/// first keeps the offset arithmetic far from overflow (the crate adds offsets with `+`,
/// which panics in builds with overflow checks) and bounds every size derived from the
/// header by the input's length. The scan is a JSON lexer reduced to strings and digits.
///
/// # Errors
/// A [`CliError`] naming `name`, the number and the file size.
pub fn check_header(bytes: &[u8], name: &str) -> Result<(), CliError> {
    let Some(len_bytes) = bytes.get(..8) else {
        // Too short to hold the header length: safetensors reports it.
        return Ok(());
    };
    let mut word = [0u8; 8];
    word.copy_from_slice(len_bytes);
    let header_len = u64::from_le_bytes(word);
    let Some(header) = usize::try_from(header_len)
        .ok()
        .and_then(|n| bytes.get(8..8usize.checked_add(n)?))
    else {
        return Err(CliError::BadFile(format!(
            "{name}: not a safetensors file: its header length {header_len} exceeds the file's {} bytes",
            bytes.len()
        )));
    };
    let limit = bytes.len() as u128;
    let (mut in_string, mut escaped) = (false, false);
    let mut number: Option<u128> = None;
    for &b in header.iter().chain([b' '].iter()) {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if b.is_ascii_digit() {
            let n = number
                .unwrap_or(0)
                .saturating_mul(10)
                .saturating_add(u128::from(b - b'0'));
            number = Some(n);
            continue;
        }
        if let Some(n) = number.take()
            && n > limit
        {
            return Err(CliError::BadFile(format!(
                "{name}: the header declares a size of {n}, more than the whole file ({} bytes)",
                bytes.len()
            )));
        }
        if b == b'"' {
            in_string = true;
        }
    }
    Ok(())
}
