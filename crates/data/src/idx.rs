//! The IDX file format (LeCun's MNIST container), raw or gzip-compressed, read without trusting the header.
//!
//! An IDX file is a header followed by a payload:
//!
//! | bytes | meaning |
//! |---|---|
//! | 0–1 | magic: two zero bytes |
//! | 2 | element type: `0x08` unsigned byte (the only one accepted here) |
//! | 3 | rank `r` (1 ..= [`MAX_RANK`]) |
//! | 4 .. 4+4r | `r` dimensions, big-endian `u32`, each nonzero |
//! | rest | the elements, row-major, exactly the product of the dimensions |
//!
//! Truncated payloads and trailing bytes are both errors. Gzip is recognised by its magic
//! bytes `1f 8b`, never by the file name, and is decompressed through a reader bounded by
//! what the header announces, so a small file claiming a huge payload (a "gzip bomb" or a
//! lying header) is refused without a matching allocation. A damaged or cut-short gzip
//! stream is reported as such ([`DataError::Gzip`]); every other message is the same for a
//! raw file and its gzip copy.

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use crate::DataError;

/// The largest rank accepted (MNIST uses 1 and 3; a colour image set `n × h × w × c` needs 4).
pub const MAX_RANK: usize = 4;

/// The element type code of unsigned bytes, the only one this reader accepts.
pub const TYPE_U8: u8 = 0x08;

/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// How many trailing bytes of a gzip stream are counted before giving up (raw files are
/// measured exactly, from their length).
pub const TRAILING_COUNT_MAX: usize = 1 << 20;

/// Deflate never expands more than about 1032:1; used only to cap the first allocation.
const MAX_DEFLATE_RATIO: usize = 1032;

/// A parsed IDX file: its dimensions and its unsigned-byte payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    /// The dimensions from the header, outermost first (`[n, h, w]` for MNIST images).
    pub dims: Vec<usize>,
    /// The payload, row-major; `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

/// What is wrong with IDX bytes. [`DataError::Idx`] adds the file name.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdxError {
    /// The data ends inside the header.
    HeaderTruncated {
        /// Header bytes needed (4 before the rank is known, then `4 + 4·rank`).
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// The first two bytes are not zero.
    BadMagic {
        /// The two bytes found.
        found: [u8; 2],
    },
    /// An element type other than unsigned byte (`0x08`).
    UnsupportedType {
        /// The type code found in byte 2.
        code: u8,
    },
    /// A rank of 0 or above [`MAX_RANK`].
    BadRank {
        /// The rank found in byte 3.
        rank: u8,
    },
    /// A dimension is zero.
    ZeroDim {
        /// Which dimension (0 = outermost).
        axis: usize,
        /// All dimensions from the header.
        dims: Vec<usize>,
    },
    /// The product of the dimensions does not fit in `usize`.
    TooLarge {
        /// All dimensions from the header.
        dims: Vec<usize>,
    },
    /// The payload is shorter than the header says.
    Truncated {
        /// All dimensions from the header.
        dims: Vec<usize>,
        /// Payload bytes the header announces.
        expected: usize,
        /// Payload bytes present.
        got: usize,
    },
    /// Bytes follow the payload the header announces.
    TrailingData {
        /// All dimensions from the header.
        dims: Vec<usize>,
        /// Payload bytes the header announces.
        expected: usize,
        /// How many extra bytes; `None` when a gzip stream holds more than
        /// [`TRAILING_COUNT_MAX`] of them (decompression stops counting there, so that a
        /// "gzip bomb" costs no more time than it must).
        extra: Option<usize>,
    },
}

/// Writes dimensions as `60000×28×28`.
pub(crate) struct Dims<'a>(pub(crate) &'a [usize]);

impl fmt::Display for Dims<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("×")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Name of an IDX element type code, for error messages.
fn type_name(code: u8) -> Option<&'static str> {
    match code {
        0x08 => Some("unsigned byte"),
        0x09 => Some("signed byte"),
        0x0B => Some("i16"),
        0x0C => Some("i32"),
        0x0D => Some("f32"),
        0x0E => Some("f64"),
        _ => None,
    }
}

impl fmt::Display for IdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HeaderTruncated { need: 4, got: 0 } => {
                f.write_str("not an IDX file: it is empty, expected at least a 4-byte header")
            }
            Self::HeaderTruncated { need: 4, got } => write!(
                f,
                "not an IDX file: it ends after {got} bytes, expected at least a 4-byte header"
            ),
            Self::HeaderTruncated { need, got } => write!(
                f,
                "IDX header cut short: rank {} needs {need} header bytes (4, then 4 per dimension) \
                 but the file ends after {got}",
                need.saturating_sub(4) / 4
            ),
            Self::BadMagic { found } => write!(
                f,
                "not an IDX file: expected the magic bytes 00 00, found {:02x} {:02x}",
                found[0], found[1]
            ),
            Self::UnsupportedType { code } => match type_name(*code) {
                Some(name) => write!(
                    f,
                    "unsupported IDX element type: expected 0x08 (unsigned byte), found 0x{code:02X} ({name})"
                ),
                None => write!(
                    f,
                    "unknown IDX element type: expected 0x08 (unsigned byte), found 0x{code:02X}"
                ),
            },
            Self::BadRank { rank } => write!(
                f,
                "unsupported IDX rank: expected 1 to {MAX_RANK} dimensions, found {rank}"
            ),
            Self::ZeroDim { dims, .. } => write!(
                f,
                "IDX dimensions must all be at least 1, but the header has {}",
                Dims(dims)
            ),
            Self::TooLarge { dims } => write!(
                f,
                "IDX header has {}, more bytes of data than this machine can address",
                Dims(dims)
            ),
            Self::Truncated {
                dims,
                expected,
                got,
            } => write!(
                f,
                "IDX data cut short: header says {} = {expected} bytes of data, but the file holds {got}",
                Dims(dims)
            ),
            Self::TrailingData {
                dims,
                expected,
                extra: Some(extra),
            } => write!(
                f,
                "IDX data too long: header says {} = {expected} bytes of data, but {extra} more bytes follow them",
                Dims(dims)
            ),
            Self::TrailingData {
                dims,
                expected,
                extra: None,
            } => write!(
                f,
                "IDX data too long: header says {} = {expected} bytes of data, but more than \
                 {TRAILING_COUNT_MAX} more bytes follow them",
                Dims(dims)
            ),
        }
    }
}

impl core::error::Error for IdxError {}

/// A validated header.
#[derive(Debug)]
struct Header {
    dims: Vec<usize>,
    /// `4 + 4·rank`.
    header_len: usize,
    /// Product of the dimensions (one byte per element).
    payload_len: usize,
}

/// Checks the first four bytes and returns the rank.
fn parse_prefix(prefix: [u8; 4]) -> Result<usize, IdxError> {
    if prefix[0] != 0 || prefix[1] != 0 {
        return Err(IdxError::BadMagic {
            found: [prefix[0], prefix[1]],
        });
    }
    if prefix[2] != TYPE_U8 {
        return Err(IdxError::UnsupportedType { code: prefix[2] });
    }
    let rank = usize::from(prefix[3]);
    if rank == 0 || rank > MAX_RANK {
        return Err(IdxError::BadRank { rank: prefix[3] });
    }
    Ok(rank)
}

/// Parses a complete header from the start of `bytes` (which may hold more).
fn parse_header(bytes: &[u8]) -> Result<Header, IdxError> {
    let prefix: [u8; 4] = match bytes.get(..4) {
        Some(p) => [p[0], p[1], p[2], p[3]],
        None => {
            return Err(IdxError::HeaderTruncated {
                need: 4,
                got: bytes.len(),
            });
        }
    };
    let rank = parse_prefix(prefix)?;
    let header_len = 4 + 4 * rank;
    let Some(raw_dims) = bytes.get(4..header_len) else {
        return Err(IdxError::HeaderTruncated {
            need: header_len,
            got: bytes.len(),
        });
    };
    let mut dims = Vec::with_capacity(rank);
    for word in raw_dims.chunks_exact(4) {
        let d = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        // Only fails where usize is narrower than 32 bits; report it as too large.
        dims.push(usize::try_from(d).unwrap_or(usize::MAX));
    }
    if let Some(axis) = dims.iter().position(|&d| d == 0) {
        return Err(IdxError::ZeroDim { axis, dims });
    }
    let Some(payload_len) = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        // Leave room for the header and the one-byte probe past the payload.
        .filter(|&n| n.checked_add(header_len + 1).is_some())
    else {
        return Err(IdxError::TooLarge { dims });
    };
    Ok(Header {
        dims,
        header_len,
        payload_len,
    })
}

/// Parses IDX bytes already in memory (not gzip: see [`read_idx`] for files).
///
/// # Errors
/// Any [`IdxError`]: bad magic, element type other than `0x08`, rank outside
/// 1 ..= [`MAX_RANK`], a zero dimension, a size overflow, or a payload whose length is not
/// exactly the product of the dimensions. The payload is copied only after its length
/// has been checked.
///
/// # Example
/// ```
/// // Magic, type 0x08, rank 2, dimensions 2 and 1, then two bytes.
/// let bytes = [0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 1, 10, 20];
/// let idx = manabi_data::parse_idx(&bytes)?;
/// assert_eq!(idx.dims, [2, 1]);
/// assert_eq!(idx.data, [10, 20]);
/// assert!(manabi_data::parse_idx(&bytes[..13]).is_err()); // truncated
/// # Ok::<(), manabi_data::IdxError>(())
/// ```
pub fn parse_idx(bytes: &[u8]) -> Result<Idx, IdxError> {
    let h = parse_header(bytes)?;
    let got = bytes.len() - h.header_len;
    if got < h.payload_len {
        return Err(IdxError::Truncated {
            dims: h.dims,
            expected: h.payload_len,
            got,
        });
    }
    if got > h.payload_len {
        return Err(IdxError::TrailingData {
            dims: h.dims,
            expected: h.payload_len,
            extra: Some(got - h.payload_len),
        });
    }
    Ok(Idx {
        data: bytes[h.header_len..].to_vec(),
        dims: h.dims,
    })
}

/// Reads an IDX file, raw or gzip (told apart by the first two bytes, not the name).
///
/// # Errors
/// [`DataError::Io`] when the file can't be read, [`DataError::Gzip`] when its gzip stream
/// is damaged or cut short, [`DataError::Idx`] when the contents are not a valid IDX file
/// (see [`parse_idx`]). All name the file.
pub fn read_idx(path: &Path) -> Result<Idx, DataError> {
    read_idx_digest(path, Role::Any, false).map(|(idx, _)| idx)
}

/// What an IDX file is read for: its rank is checked against it as soon as the header has
/// been read, before the payload is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Any rank (`read_idx`).
    Any,
    /// Samples: `count × rows × columns`, `count × features` or `count × rows × columns × channels`.
    Images,
    /// One label per sample: `count`.
    Labels,
}

impl Role {
    /// `Err(what was expected)` when `dims` has the wrong rank for this role.
    pub(crate) fn check(self, dims: &[usize]) -> Result<(), &'static str> {
        match self {
            Self::Images if dims.len() < 2 => {
                Err("an image file needs 3 dimensions, count × rows × columns \
                 (or 2, count × features; or 4, with channels last)")
            }
            Self::Labels if dims.len() != 1 => Err("a label file needs exactly 1 dimension, count"),
            _ => Ok(()),
        }
    }
}

/// Why a stream could not be decoded.
enum StreamError {
    /// Reading the file failed.
    Io(io::Error),
    /// The gzip decoder refused the stream (damaged or cut short).
    Gzip(io::Error),
    /// The bytes are not a valid IDX file.
    Idx(IdxError),
    /// A valid header with the wrong rank for the file's [`Role`].
    Shape {
        dims: Vec<usize>,
        expected: &'static str,
    },
}

impl StreamError {
    fn at(self, path: &Path) -> DataError {
        let path = path.to_path_buf();
        match self {
            Self::Io(source) => DataError::Io { path, source },
            Self::Gzip(source) => DataError::Gzip { path, source },
            Self::Idx(source) => DataError::Idx { path, source },
            Self::Shape { dims, expected } => DataError::BadShape {
                path,
                dims,
                expected,
            },
        }
    }
}

impl From<io::Error> for StreamError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<IdxError> for StreamError {
    fn from(e: IdxError) -> Self {
        Self::Idx(e)
    }
}

/// Passes reads through and remembers whether the file itself failed, so that the gzip
/// decoder's own errors (a damaged or cut-short stream) are told apart from I/O errors.
struct Watched<'a, R> {
    inner: R,
    failed: &'a Cell<bool>,
}

impl<R: Read> Read for Watched<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.failed.set(true);
            }
        })
    }
}

/// Reads an IDX file for `role` and, if asked, the SHA-256 of its decompressed bytes.
pub(crate) fn read_idx_digest(
    path: &Path,
    role: Role,
    digest: bool,
) -> Result<(Idx, Option<[u8; 32]>), DataError> {
    let io_err = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    // A file larger than the address space can't be a valid payload either.
    let file_len = usize::try_from(file_len).unwrap_or(usize::MAX);
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let gzip = {
        let head = reader.fill_buf().map_err(io_err)?;
        // A single available byte is never a gzip stream (and fill_buf on a
        // regular file returns at least two bytes whenever the file has them).
        head.starts_with(&GZIP_MAGIC)
    };
    let mut hasher = digest.then(Sha256::new);
    let idx = if gzip {
        let cap = file_len.saturating_mul(MAX_DEFLATE_RATIO);
        let failed = Cell::new(false);
        let watched = Watched {
            inner: reader,
            failed: &failed,
        };
        match decode_stream(
            MultiGzDecoder::new(watched),
            role,
            cap,
            None,
            hasher.as_mut(),
        ) {
            Err(StreamError::Io(e)) if !failed.get() => Err(StreamError::Gzip(e)),
            other => other,
        }
    } else {
        decode_stream(reader, role, file_len, Some(file_len), hasher.as_mut())
    }
    .map_err(|e| e.at(path))?;
    Ok((idx, hasher.map(|h| h.finalize().into())))
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Decodes one IDX stream read for `role`.
///
/// `cap` bounds the first allocation (the payload buffer never grows past what the header
/// announces, because reading goes through `take`); `total`, when the stream length is
/// known in advance (a raw file), lets a wrong length be reported before reading the payload.
/// The header is judged whole (format, then rank for the role) before the payload is.
fn decode_stream(
    mut r: impl Read,
    role: Role,
    cap: usize,
    total: Option<usize>,
    mut hasher: Option<&mut Sha256>,
) -> Result<Idx, StreamError> {
    let mut head = [0u8; 4 + 4 * MAX_RANK];
    let got = read_full(&mut r, &mut head[..4])?;
    if got < 4 {
        return Err(IdxError::HeaderTruncated { need: 4, got }.into());
    }
    let rank = parse_prefix([head[0], head[1], head[2], head[3]])?;
    let header_len = 4 + 4 * rank;
    let got = 4 + read_full(&mut r, &mut head[4..header_len])?;
    let h = parse_header(&head[..got])?;
    if let Err(expected) = role.check(&h.dims) {
        return Err(StreamError::Shape {
            dims: h.dims,
            expected,
        });
    }
    if let Some(total) = total {
        let got = total.saturating_sub(h.header_len);
        if got < h.payload_len {
            return Err(IdxError::Truncated {
                dims: h.dims,
                expected: h.payload_len,
                got,
            }
            .into());
        }
        if got > h.payload_len {
            return Err(IdxError::TrailingData {
                dims: h.dims,
                expected: h.payload_len,
                extra: Some(got - h.payload_len),
            }
            .into());
        }
    }
    if let Some(hasher) = hasher.as_deref_mut() {
        hasher.update(&head[..h.header_len]);
    }
    let mut data = Vec::with_capacity(h.payload_len.min(cap));
    // `payload_len` fits in u64 because it fits in usize (at most 64 bits).
    let limit = u64::try_from(h.payload_len).unwrap_or(u64::MAX);
    (&mut r).take(limit).read_to_end(&mut data)?;
    if data.len() < h.payload_len {
        return Err(IdxError::Truncated {
            dims: h.dims,
            expected: h.payload_len,
            got: data.len(),
        }
        .into());
    }
    // One more byte tells a clean end from trailing data; for gzip this read also
    // makes the decoder check the stream's CRC and length trailer.
    let mut probe = [0u8; 1];
    if read_full(&mut r, &mut probe)? != 0 {
        // Only a stream of unknown length gets here (a raw file's length was checked
        // above): count what follows, up to a bound, without keeping it.
        let bound = u64::try_from(TRAILING_COUNT_MAX).unwrap_or(u64::MAX);
        let more = io::copy(&mut (&mut r).take(bound), &mut io::sink())?;
        let extra = usize::try_from(more)
            .ok()
            .filter(|&m| m < TRAILING_COUNT_MAX)
            .map(|m| m + 1);
        return Err(IdxError::TrailingData {
            dims: h.dims,
            expected: h.payload_len,
            extra,
        }
        .into());
    }
    if let Some(hasher) = hasher {
        hasher.update(&data);
    }
    Ok(Idx { dims: h.dims, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_bytes(dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, TYPE_U8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn parses_a_small_valid_file() {
        let idx = parse_idx(&idx_bytes(&[2, 3], &[1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!(idx.dims, vec![2, 3]);
        assert_eq!(idx.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn messages_name_the_sizes() {
        let e = parse_idx(&idx_bytes(&[60000, 28, 28], &[0; 1000])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "IDX data cut short: header says 60000×28×28 = 47040000 bytes of data, but the file holds 1000"
        );
        let e = parse_idx(&[0, 0, 0x0D, 1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported IDX element type: expected 0x08 (unsigned byte), found 0x0D (f32)"
        );
    }

    #[test]
    fn stream_and_slice_agree_on_a_truncated_header() {
        let bytes = [0u8, 0, 8, 3, 0, 0];
        let slice = parse_idx(&bytes).unwrap_err();
        assert_eq!(slice, IdxError::HeaderTruncated { need: 16, got: 6 });
        let Err(StreamError::Idx(stream)) = decode_stream(&bytes[..], Role::Any, 16, None, None)
        else {
            panic!("stream decoding must fail with an IDX error");
        };
        assert_eq!(stream, slice);
    }
}
