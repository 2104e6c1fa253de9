//! The safetensors format without a heap: a writer into a caller's buffer and a reader over borrowed bytes.
//!
//! A file is an 8-byte little-endian header length, a JSON header (padded with spaces to a
//! multiple of 8 bytes) naming each tensor's dtype, shape and byte range, then the tensors'
//! bytes (little-endian, row-major). [`write()`] lays tensors out as the `safetensors` crate
//! does — sorted by dtype (widest first, in the crate's order) then name, the header compact
//! JSON — so a file written here has the same bytes as one the crate writes from the same
//! tensors and one metadata entry. [`SafeTensors::parse`] checks the header (its length, its
//! JSON, each tensor's dtype, shape and byte range against the file) before any tensor is
//! read, and never panics on hostile bytes.

use core::fmt::{self, Write as _};

/// Element types this module reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dtype {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary64.
    F64,
    /// Unsigned 64-bit integers (generator states, counters).
    U64,
}

impl Dtype {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 | Dtype::U64 => 8,
        }
    }

    /// The header's name for it.
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::U64 => "U64",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "F32" => Some(Dtype::F32),
            "F64" => Some(Dtype::F64),
            "U64" => Some(Dtype::U64),
            _ => None,
        }
    }
}

/// A tensor's values, borrowed.
#[derive(Clone, Copy, Debug)]
pub enum Data<'a> {
    /// `f32` values.
    F32(&'a [f32]),
    /// `f64` values.
    F64(&'a [f64]),
    /// `u64` values.
    U64(&'a [u64]),
}

impl Data<'_> {
    /// The element type.
    pub const fn dtype(&self) -> Dtype {
        match self {
            Data::F32(_) => Dtype::F32,
            Data::F64(_) => Dtype::F64,
            Data::U64(_) => Dtype::U64,
        }
    }

    /// Elements held.
    pub const fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::U64(v) => v.len(),
        }
    }

    /// Whether it holds no elements.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the values little-endian into `out` (exactly `len() · dtype().size()` bytes).
    fn write_le(&self, out: &mut [u8]) {
        match self {
            Data::F32(v) => le_into(v.iter().map(|x| x.to_le_bytes()), out),
            Data::F64(v) => le_into(v.iter().map(|x| x.to_le_bytes()), out),
            Data::U64(v) => le_into(v.iter().map(|x| x.to_le_bytes()), out),
        }
    }
}

fn le_into<const N: usize>(values: impl Iterator<Item = [u8; N]>, out: &mut [u8]) {
    for (chunk, bytes) in out.chunks_exact_mut(N).zip(values) {
        chunk.copy_from_slice(&bytes);
    }
}

/// A tensor's name: plain text, or a prefix and a number (`W` and 1 for `W1`), so that a
/// network's names need no heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name<'a> {
    /// The whole name.
    Text(&'a str),
    /// `prefix` followed by `number` in decimal.
    Numbered(&'a str, usize),
}

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Name::Text(t) => f.write_str(t),
            Name::Numbered(p, n) => write!(f, "{p}{n}"),
        }
    }
}

/// The longest name [`write()`] sorts by (longer names compare by this prefix, then length).
const NAME_ROOM: usize = 64;

impl Name<'_> {
    /// The name's bytes in a fixed buffer, and how many there are.
    fn bytes(&self) -> ([u8; NAME_ROOM], usize) {
        let mut out = Cursor::new_array();
        // A name longer than the buffer keeps its prefix (the cursor counts the rest).
        let _ = write!(out, "{self}");
        let len = out.written.min(NAME_ROOM);
        (out.buf, len)
    }

    fn cmp_bytes(&self, other: &Name<'_>) -> core::cmp::Ordering {
        let ((a, la), (b, lb)) = (self.bytes(), other.bytes());
        a[..la]
            .cmp(&b[..lb])
            .then(self.full_len().cmp(&other.full_len()))
    }

    fn full_len(&self) -> usize {
        let mut count = Counter(0);
        let _ = write!(count, "{self}");
        count.0
    }
}

/// One tensor to write: its name, its shape (`rank` dimensions; a scalar has none) and values.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// The name in the header.
    pub name: Name<'a>,
    /// Dimensions, padded with zeros after `rank`.
    pub shape: [usize; 4],
    /// Number of dimensions.
    pub rank: usize,
    /// The values (as many as the shape's product).
    pub data: Data<'a>,
}

impl<'a> Entry<'a> {
    /// A tensor of the given shape (at most 4 dimensions; more are cut).
    pub fn new(name: Name<'a>, dims: &[usize], data: Data<'a>) -> Self {
        let mut shape = [0; 4];
        let rank = dims.len().min(4);
        shape[..rank].copy_from_slice(&dims[..rank]);
        Self {
            name,
            shape,
            rank,
            data,
        }
    }

    /// A one-dimensional tensor of `data`'s length.
    pub fn vector(name: Name<'a>, data: Data<'a>) -> Self {
        Self::new(name, &[data.len()], data)
    }

    fn dims(&self) -> &[usize] {
        &self.shape[..self.rank]
    }

    fn byte_len(&self) -> usize {
        self.data.len() * self.data.dtype().size()
    }
}

/// Why a file cannot be written or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StError {
    /// The output buffer holds fewer bytes than the file needs.
    BufferTooSmall {
        /// Bytes the file needs.
        need: usize,
        /// Bytes the buffer holds.
        have: usize,
    },
    /// A tensor's values do not fill its shape.
    ShapeMismatch {
        /// Elements the shape needs.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// The file is shorter than its 8-byte header length, or than the header it announces.
    Truncated {
        /// Bytes the header says there are (or 8).
        need: u64,
        /// Bytes the file holds.
        have: usize,
    },
    /// The header is not JSON of the safetensors layout; `at` is the byte offset in it.
    BadHeader {
        /// What was expected.
        what: &'static str,
        /// Where in the header.
        at: usize,
    },
    /// A tensor's byte range does not match its dtype and shape, or the file's data.
    BadTensor {
        /// What is wrong.
        what: &'static str,
    },
}

impl fmt::Display for StError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StError::BufferTooSmall { need, have } => {
                write!(f, "the file needs {need} bytes, the buffer holds {have}")
            }
            StError::ShapeMismatch { expected, got } => {
                write!(f, "a tensor's shape needs {expected} values, {got} given")
            }
            StError::Truncated { need, have } => {
                write!(
                    f,
                    "the file is cut short: it needs {need} bytes, it holds {have}"
                )
            }
            StError::BadHeader { what, at } => {
                write!(f, "the header is not safetensors JSON at byte {at}: {what}")
            }
            StError::BadTensor { what } => write!(f, "{what}"),
        }
    }
}

impl core::error::Error for StError {}

/// Writes `&str`s into a byte buffer, counting what does not fit.
struct Cursor<'b> {
    buf: &'b mut [u8],
    written: usize,
}

impl Cursor<'static> {
    fn new_array() -> ArrayCursor {
        ArrayCursor {
            buf: [0; NAME_ROOM],
            written: 0,
        }
    }
}

/// A [`Cursor`] over its own small array (for names).
struct ArrayCursor {
    buf: [u8; NAME_ROOM],
    written: usize,
}

impl fmt::Write for ArrayCursor {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if let Some(slot) = self.buf.get_mut(self.written) {
                *slot = b;
            }
            self.written += 1;
        }
        Ok(())
    }
}

impl fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.written + s.len();
        if let Some(dst) = self.buf.get_mut(self.written..end) {
            dst.copy_from_slice(s.as_bytes());
        }
        self.written = end;
        Ok(())
    }
}

/// Counts the bytes written to it.
struct Counter(usize);

impl fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

/// `s` as a JSON string body, escaped as serde_json escapes it.
struct Escaped<'a, D: fmt::Display + ?Sized>(&'a D);

impl<D: fmt::Display + ?Sized> fmt::Display for Escaped<'_, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Esc<'f, 'g>(&'f mut fmt::Formatter<'g>);
        impl fmt::Write for Esc<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for c in s.chars() {
                    match c {
                        '"' => self.0.write_str("\\\"")?,
                        '\\' => self.0.write_str("\\\\")?,
                        '\n' => self.0.write_str("\\n")?,
                        '\r' => self.0.write_str("\\r")?,
                        '\t' => self.0.write_str("\\t")?,
                        '\u{8}' => self.0.write_str("\\b")?,
                        '\u{c}' => self.0.write_str("\\f")?,
                        c if (c as u32) < 0x20 => write!(self.0, "\\u{:04x}", c as u32)?,
                        c => self.0.write_char(c)?,
                    }
                }
                Ok(())
            }
        }
        write!(Esc(f), "{}", self.0)
    }
}

/// The header JSON, unpadded, for entries already in file order.
fn header(out: &mut impl fmt::Write, entries: &[Entry<'_>], meta: &[(&str, &str)]) -> fmt::Result {
    out.write_char('{')?;
    let mut first = true;
    if !meta.is_empty() {
        out.write_str("\"__metadata__\":{")?;
        for (i, (k, v)) in meta.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(out, "{sep}\"{}\":\"{}\"", Escaped(*k), Escaped(*v))?;
        }
        out.write_char('}')?;
        first = false;
    }
    let mut offset = 0;
    for e in entries {
        let sep = if first { "" } else { "," };
        first = false;
        write!(
            out,
            "{sep}\"{}\":{{\"dtype\":\"{}\",\"shape\":[",
            Escaped(&e.name),
            e.data.dtype().name()
        )?;
        for (i, d) in e.dims().iter().enumerate() {
            write!(out, "{}{d}", if i == 0 { "" } else { "," })?;
        }
        let end = offset + e.byte_len();
        write!(out, "],\"data_offsets\":[{offset},{end}]}}")?;
        offset = end;
    }
    out.write_char('}')
}

/// Sorts `entries` into the order of the file: by dtype, widest first (the `safetensors`
/// crate's order: U64, F64, F32), then by name.
fn sort(entries: &mut [Entry<'_>]) {
    entries.sort_unstable_by(|a, b| {
        b.data
            .dtype()
            .cmp(&a.data.dtype())
            .then_with(|| a.name.cmp_bytes(&b.name))
    });
}

fn check_shapes(entries: &[Entry<'_>]) -> Result<(), StError> {
    for e in entries {
        let expected = e.dims().iter().product::<usize>();
        if expected != e.data.len() {
            return Err(StError::ShapeMismatch {
                expected,
                got: e.data.len(),
            });
        }
    }
    Ok(())
}

/// The padded header's length and the whole file's, for `entries` in file order.
fn lengths(entries: &[Entry<'_>], meta: &[(&str, &str)]) -> (usize, usize) {
    let mut count = Counter(0);
    // Counting never fails.
    let _ = header(&mut count, entries, meta);
    let padded = count.0.next_multiple_of(8);
    let data: usize = entries.iter().map(Entry::byte_len).sum();
    (padded, 8 + padded + data)
}

/// Bytes a file of `entries` and `meta` takes (the buffer [`write()`] needs); sorts `entries`
/// into file order, as [`write()`] does (the header's offsets depend on it).
pub fn file_len(entries: &mut [Entry<'_>], meta: &[(&str, &str)]) -> usize {
    sort(entries);
    lengths(entries, meta).1
}

/// Writes a safetensors file of `entries` (sorted into file order in place) with the metadata
/// pairs `meta` (in the order given) into the front of `out`; returns its length.
///
/// # Errors
/// [`StError::ShapeMismatch`] if an entry's values do not fill its shape;
/// [`StError::BufferTooSmall`] if `out` is shorter than [`file_len`].
pub fn write(
    entries: &mut [Entry<'_>],
    meta: &[(&str, &str)],
    out: &mut [u8],
) -> Result<usize, StError> {
    check_shapes(entries)?;
    sort(entries);
    let (padded, total) = lengths(entries, meta);
    if out.len() < total {
        return Err(StError::BufferTooSmall {
            need: total,
            have: out.len(),
        });
    }
    out[..8].copy_from_slice(&(padded as u64).to_le_bytes());
    let (head, body) = out[8..total].split_at_mut(padded);
    let mut cursor = Cursor {
        buf: head,
        written: 0,
    };
    let _ = header(&mut cursor, entries, meta);
    let written = cursor.written;
    head[written..].fill(b' ');
    let mut at = 0;
    for e in entries.iter() {
        let n = e.byte_len();
        e.data.write_le(&mut body[at..at + n]);
        at += n;
    }
    Ok(total)
}

/// A tensor in a parsed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View<'a> {
    /// The element type.
    pub dtype: Dtype,
    /// Dimensions, padded with zeros after `rank`.
    pub shape: [usize; 4],
    /// Number of dimensions.
    pub rank: usize,
    /// The values' bytes, little-endian.
    pub bytes: &'a [u8],
}

impl View<'_> {
    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.shape[..self.rank]
    }

    /// Elements held.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }

    /// Whether it holds no elements.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Copies the values into `out` if the dtype is F32 and the lengths agree.
    ///
    /// # Errors
    /// [`StError::BadTensor`] for another dtype or length.
    pub fn read_f32(&self, out: &mut [f32]) -> Result<(), StError> {
        self.read(Dtype::F32, out, |b| {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })
    }

    /// Copies the values into `out` if the dtype is F64 and the lengths agree.
    ///
    /// # Errors
    /// [`StError::BadTensor`] for another dtype or length.
    pub fn read_f64(&self, out: &mut [f64]) -> Result<(), StError> {
        self.read(Dtype::F64, out, |b| {
            f64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
        })
    }

    /// Copies the values into `out` if the dtype is U64 and the lengths agree.
    ///
    /// # Errors
    /// [`StError::BadTensor`] for another dtype or length.
    pub fn read_u64(&self, out: &mut [u64]) -> Result<(), StError> {
        self.read(Dtype::U64, out, |b| {
            u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
        })
    }

    fn read<V>(&self, dtype: Dtype, out: &mut [V], f: impl Fn(&[u8]) -> V) -> Result<(), StError> {
        if self.dtype != dtype {
            return Err(StError::BadTensor {
                what: "a tensor has another dtype than the one asked for",
            });
        }
        if self.len() != out.len() {
            return Err(StError::BadTensor {
                what: "a tensor holds another number of values than the one asked for",
            });
        }
        for (o, b) in out.iter_mut().zip(self.bytes.chunks_exact(dtype.size())) {
            *o = f(b);
        }
        Ok(())
    }
}

/// The largest header [`SafeTensors::parse`] reads: 100 MB, as the `safetensors` crate.
pub const MAX_HEADER: u64 = 100_000_000;

/// A parsed file: its header (checked whole) and its data, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct SafeTensors<'a> {
    header: &'a str,
    data: &'a [u8],
}

impl<'a> SafeTensors<'a> {
    /// Checks `bytes` as a safetensors file: the header's length and JSON, every tensor's
    /// dtype, shape and byte range (contiguous from 0, inside the data, matching the shape),
    /// and that the data ends where the last tensor does.
    ///
    /// # Errors
    /// The first problem found, as a [`StError`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, StError> {
        let Some(len) = bytes.get(..8) else {
            return Err(StError::Truncated {
                need: 8,
                have: bytes.len(),
            });
        };
        let n = u64::from_le_bytes(len.try_into().unwrap_or([0; 8]));
        if n > MAX_HEADER || n > (bytes.len() - 8) as u64 {
            return Err(StError::Truncated {
                need: n.saturating_add(8),
                have: bytes.len(),
            });
        }
        let (head, data) = bytes[8..].split_at(n as usize);
        let header = core::str::from_utf8(head).map_err(|e| StError::BadHeader {
            what: "not UTF-8",
            at: e.valid_up_to(),
        })?;
        let file = Self { header, data };
        let mut end = 0;
        for item in file.items() {
            match item? {
                Item::Metadata(_) => {}
                Item::Tensor(_, v, (start, stop)) => {
                    if start != end {
                        return Err(StError::BadTensor {
                            what: "tensors are not laid out one after another from the start of the data",
                        });
                    }
                    end = stop;
                    let _ = v;
                }
            }
        }
        if end != data.len() {
            return Err(StError::BadTensor {
                what: "the data is longer than its tensors",
            });
        }
        Ok(file)
    }

    /// The tensors in file order, with their names as they appear in the header.
    pub fn tensors(&self) -> impl Iterator<Item = (JsonStr<'a>, View<'a>)> + 'a {
        let items = self.items();
        items.filter_map(|i| match i {
            Ok(Item::Tensor(name, view, _)) => Some((name, view)),
            _ => None,
        })
    }

    /// The tensor named `name`, if the file has it.
    pub fn get(&self, name: &Name<'_>) -> Option<View<'a>> {
        self.tensors().find(|(n, _)| n.equals(name)).map(|(_, v)| v)
    }

    /// The metadata value under `key`, if any.
    pub fn metadata(&self, key: &str) -> Option<JsonStr<'a>> {
        let items = self.items();
        items
            .filter_map(|i| match i {
                Ok(Item::Metadata(m)) => Some(m),
                _ => None,
            })
            .flat_map(|m| m.pairs())
            .find(|(k, _)| k.equals(&Name::Text(key)))
            .map(|(_, v)| v)
    }

    fn items(&self) -> Items<'a> {
        Items {
            json: Json::new(self.header),
            data: self.data,
            state: ItemsState::Start,
        }
    }
}

/// A JSON string of the header, still escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonStr<'a> {
    raw: &'a str,
}

impl<'a> JsonStr<'a> {
    /// The text, if it has no escapes (the names and metadata manabi writes have none).
    pub fn as_plain(&self) -> Option<&'a str> {
        (!self.raw.contains('\\')).then_some(self.raw)
    }

    /// The characters, unescaped.
    pub fn chars(&self) -> impl Iterator<Item = char> + 'a {
        Unescape {
            rest: self.raw.chars(),
        }
    }

    /// Whether it reads as `name`.
    pub fn equals(&self, name: &Name<'_>) -> bool {
        let mut want = ArrayCursor {
            buf: [0; NAME_ROOM],
            written: 0,
        };
        let _ = write!(want, "{name}");
        if want.written > NAME_ROOM {
            // Longer than any name compared here: compare by formatting the other way.
            return false;
        }
        let Ok(want) = core::str::from_utf8(&want.buf[..want.written]) else {
            return false;
        };
        self.chars().eq(want.chars())
    }
}

impl fmt::Display for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.chars().try_for_each(|c| f.write_char(c))
    }
}

struct Unescape<'a> {
    rest: core::str::Chars<'a>,
}

impl Iterator for Unescape<'_> {
    type Item = char;
    fn next(&mut self) -> Option<char> {
        let c = self.rest.next()?;
        if c != '\\' {
            return Some(c);
        }
        Some(match self.rest.next()? {
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'u' => {
                let hex: [char; 4] = core::array::from_fn(|_| self.rest.next().unwrap_or('0'));
                let v = hex
                    .iter()
                    .fold(0u32, |a, c| a * 16 + c.to_digit(16).unwrap_or(0));
                char::from_u32(v).unwrap_or('\u{fffd}')
            }
            other => other,
        })
    }
}

/// A JSON object of string values (the `__metadata__` entry), unparsed.
#[derive(Clone, Copy, Debug)]
struct MetaObject<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> MetaObject<'a> {
    fn pairs(self) -> impl Iterator<Item = (JsonStr<'a>, JsonStr<'a>)> {
        let mut json = Json {
            text: self.text,
            at: self.at,
        };
        // The object was checked whole when the file was parsed.
        let opened = json.expect(b'{').is_ok();
        let mut first = true;
        core::iter::from_fn(move || {
            if !opened {
                return None;
            }
            let more = json.next_member(&mut first, b'}').ok()??;
            let key = more;
            json.expect(b':').ok()?;
            let value = json.string().ok()?;
            Some((key, value))
        })
    }
}

enum Item<'a> {
    Metadata(MetaObject<'a>),
    Tensor(JsonStr<'a>, View<'a>, (usize, usize)),
}

enum ItemsState {
    Start,
    Members(bool),
    Done,
}

struct Items<'a> {
    json: Json<'a>,
    data: &'a [u8],
    state: ItemsState,
}

impl<'a> Iterator for Items<'a> {
    type Item = Result<Item<'a>, StError>;
    fn next(&mut self) -> Option<Self::Item> {
        let result = self.step();
        if !matches!(result, Some(Ok(_))) {
            self.state = ItemsState::Done;
        }
        result
    }
}

impl<'a> Items<'a> {
    fn step(&mut self) -> Option<Result<Item<'a>, StError>> {
        let mut first = match self.state {
            ItemsState::Done => return None,
            ItemsState::Start => {
                if let Err(e) = self.json.expect(b'{') {
                    return Some(Err(e));
                }
                true
            }
            ItemsState::Members(first) => first,
        };
        let key = match self.json.next_member(&mut first, b'}') {
            Ok(Some(k)) => k,
            Ok(None) => {
                return match self.json.end() {
                    Ok(()) => None,
                    Err(e) => Some(Err(e)),
                };
            }
            Err(e) => return Some(Err(e)),
        };
        self.state = ItemsState::Members(first);
        Some(self.member(key))
    }

    fn member(&mut self, key: JsonStr<'a>) -> Result<Item<'a>, StError> {
        self.json.expect(b':')?;
        if key.raw == "__metadata__" {
            let at = self.json.at;
            self.json.skip_string_object()?;
            return Ok(Item::Metadata(MetaObject {
                text: self.json.text,
                at,
            }));
        }
        let (dtype, shape, rank, (start, stop)) = self.json.tensor_info()?;
        let elements = shape[..rank]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.size()));
        if elements != Some(stop.wrapping_sub(start)) || stop < start {
            return Err(StError::BadTensor {
                what: "a tensor's byte range does not match its dtype and shape",
            });
        }
        let bytes = self.data.get(start..stop).ok_or(StError::BadTensor {
            what: "a tensor's byte range reaches past the end of the file",
        })?;
        let view = View {
            dtype,
            shape,
            rank,
            bytes,
        };
        Ok(Item::Tensor(key, view, (start, stop)))
    }
}

/// A cursor over the header's JSON.
#[derive(Clone, Copy, Debug)]
struct Json<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Json<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, at: 0 }
    }

    fn bad(&self, what: &'static str) -> StError {
        StError::BadHeader { what, at: self.at }
    }

    fn peek(&mut self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        while let Some(&b) = bytes.get(self.at) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    fn expect(&mut self, b: u8) -> Result<(), StError> {
        if self.peek() == Some(b) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.bad(match b {
                b'{' => "expected `{`",
                b'}' => "expected `}`",
                b'[' => "expected `[`",
                b']' => "expected `]`",
                b':' => "expected `:`",
                b',' => "expected `,`",
                _ => "unexpected character",
            }))
        }
    }

    /// Nothing but whitespace left.
    fn end(&mut self) -> Result<(), StError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.bad("text after the header's object")),
        }
    }

    /// The next key of an object (after `{` or a value), or `None` at its `close`.
    fn next_member(&mut self, first: &mut bool, close: u8) -> Result<Option<JsonStr<'a>>, StError> {
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(None);
        }
        if !*first {
            self.expect(b',')?;
        }
        *first = false;
        self.string().map(Some)
    }

    fn string(&mut self) -> Result<JsonStr<'a>, StError> {
        self.expect(b'"')
            .map_err(|_| self.bad("expected a string"))?;
        let start = self.at;
        let bytes = self.text.as_bytes();
        loop {
            match bytes.get(self.at) {
                None => return Err(self.bad("a string does not end")),
                Some(b'"') => break,
                Some(b'\\') => self.at += 2,
                Some(&b) if b < 0x20 => return Err(self.bad("a control character in a string")),
                Some(_) => self.at += 1,
            }
        }
        let raw = self
            .text
            .get(start..self.at)
            .ok_or(self.bad("a broken escape"))?;
        self.at += 1;
        Ok(JsonStr { raw })
    }

    fn number(&mut self) -> Result<usize, StError> {
        self.peek();
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut v: usize = 0;
        while let Some(&b) = bytes.get(self.at).filter(|b| b.is_ascii_digit()) {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(usize::from(b - b'0')))
                .ok_or(StError::BadHeader {
                    what: "a number too large",
                    at: start,
                })?;
            self.at += 1;
        }
        if self.at == start {
            return Err(self.bad("expected a whole number"));
        }
        Ok(v)
    }

    /// `[n, n, …]` into `out`; returns the count.
    fn numbers(&mut self, out: &mut [usize]) -> Result<usize, StError> {
        self.expect(b'[')?;
        let mut n = 0;
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(0);
        }
        loop {
            let v = self.number()?;
            *out.get_mut(n).ok_or(self.bad("too many dimensions"))? = v;
            n += 1;
            if self.peek() == Some(b']') {
                self.at += 1;
                return Ok(n);
            }
            self.expect(b',')?;
        }
    }

    /// `{"k":"v", …}` of strings, skipped.
    fn skip_string_object(&mut self) -> Result<(), StError> {
        self.expect(b'{')?;
        let mut first = true;
        while self.next_member(&mut first, b'}')?.is_some() {
            self.expect(b':')?;
            self.string()?;
        }
        Ok(())
    }

    /// `{"dtype":…,"shape":[…],"data_offsets":[a,b]}` in any order.
    #[allow(clippy::type_complexity)]
    fn tensor_info(&mut self) -> Result<(Dtype, [usize; 4], usize, (usize, usize)), StError> {
        self.expect(b'{')?;
        let (mut dtype, mut shape, mut rank, mut offsets) = (None, [0; 4], None, None);
        let mut first = true;
        while let Some(key) = self.next_member(&mut first, b'}')? {
            self.expect(b':')?;
            match key.raw {
                "dtype" => {
                    self.peek();
                    let at = self.at;
                    let name = self.string()?;
                    dtype = Some(Dtype::from_name(name.raw).ok_or(StError::BadHeader {
                        what: "a dtype other than F32, F64 or U64",
                        at,
                    })?);
                }
                "shape" => rank = Some(self.numbers(&mut shape)?),
                "data_offsets" => {
                    let mut pair = [0; 2];
                    if self.numbers(&mut pair)? != 2 {
                        return Err(self.bad("data_offsets needs two numbers"));
                    }
                    offsets = Some((pair[0], pair[1]));
                }
                _ => return Err(self.bad("an unknown field in a tensor's entry")),
            }
        }
        match (dtype, rank, offsets) {
            (Some(d), Some(r), Some(o)) => Ok((d, shape, r, o)),
            _ => Err(self.bad("a tensor's entry lacks dtype, shape or data_offsets")),
        }
    }
}
