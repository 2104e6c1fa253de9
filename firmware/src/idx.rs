//! Streaming reader for raw (uncompressed) IDX files on the host, one record at a time.
//!
//! An IDX file is a 4-byte magic (`0, 0, type, rank`), `rank` big-endian `u32` dimensions and
//! the data. Only unsigned bytes (type `0x08`) are read here, which is all MNIST holds. The
//! header is checked against the file's length, so a truncated file fails at open.

use crate::{Error, HostFile};

/// Type code of unsigned bytes.
const UBYTE: u8 = 0x08;

/// An open IDX file of unsigned bytes, positioned at its next record.
#[derive(Debug)]
pub struct IdxReader {
    file: HostFile,
    name: &'static str,
    count: usize,
    record_len: usize,
    next: usize,
}

impl IdxReader {
    /// Opens `dir/name` and checks that it holds `rank` dimensions of unsigned bytes and
    /// exactly the bytes its header announces.
    pub fn open(dir: &str, name: &'static str, rank: u8) -> Result<Self, Error> {
        let mut file = HostFile::open(dir, name)?;
        let bad = |what| Error::Idx { name, what };
        let mut magic = [0u8; 4];
        file.read_exact(&mut magic)?;
        if magic[..2] != [0, 0] || magic[2] != UBYTE {
            return Err(bad(
                "not an IDX file of unsigned bytes (gzip? pass the raw file)",
            ));
        }
        if magic[3] != rank {
            return Err(bad("unexpected rank"));
        }
        let mut count = 0;
        let mut record_len = 1usize;
        for d in 0..rank {
            let mut b = [0u8; 4];
            file.read_exact(&mut b)?;
            let dim = u32::from_be_bytes(b) as usize;
            if d == 0 {
                count = dim;
            } else {
                record_len = record_len
                    .checked_mul(dim)
                    .ok_or(bad("dimensions overflow"))?;
            }
        }
        let header = 4 + 4 * usize::from(rank);
        let expected = count
            .checked_mul(record_len)
            .and_then(|n| n.checked_add(header))
            .ok_or(bad("dimensions overflow"))?;
        if file.len()? != expected {
            return Err(bad("file length differs from its header"));
        }
        Ok(Self {
            file,
            name,
            count,
            record_len,
            next: 0,
        })
    }

    /// Records in the file.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Bytes per record (784 for a 28×28 image, 1 for a label).
    pub fn record_len(&self) -> usize {
        self.record_len
    }

    /// Reads the next `out.len() / record_len` records into `out`.
    pub fn read(&mut self, out: &mut [u8]) -> Result<(), Error> {
        let records = out.len() / self.record_len;
        if out.len() % self.record_len != 0 || self.next + records > self.count {
            return Err(Error::Read { name: self.name });
        }
        self.file.read_exact(out)?;
        self.next += records;
        Ok(())
    }
}
