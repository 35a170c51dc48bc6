//! Weight files in coremltools' MILBlob storage format, version 2.
//!
//! Layout (all little-endian): a 64-byte header `{u32 count, u32 version = 2,
//! 56 zero bytes}`, then per blob, each starting at the next multiple of 64,
//! a 64-byte metadata record `{u32 0xDEADBEEF, u32 dtype code, u64 size,
//! u64 data offset, u64 padding bits, 32 zero bytes}` immediately followed by
//! the payload. The file is not padded after the last payload. MIL refers to
//! a blob by the offset of its *metadata* record, not of its data.
//!
//! The layout is a pure function of the payload sizes, so offsets can be
//! planned (for the text and the proto) without producing the bytes.

use crate::error::{Error, Result};
use crate::ir::Program;
use crate::types::{DType, Tensor};
use std::io::Write;
use std::path::Path;

/// Bytes in the file header and in each metadata record.
pub const HEADER_SIZE: u64 = 64;
/// Every metadata record starts at a multiple of this.
pub const ALIGNMENT: u64 = 64;
/// First four bytes of every metadata record.
pub const SENTINEL: u32 = 0xDEAD_BEEF;
/// The storage format version coremltools' reader accepts.
pub const STORAGE_VERSION: u32 = 2;

/// Appends blobs to one weight file, laid out exactly as coremltools'
/// `StorageWriter` does, so files can be compared byte for byte.
#[derive(Debug, Clone)]
pub struct BlobWriter {
    buf: Vec<u8>,
    count: u32,
}

impl Default for BlobWriter {
    fn default() -> Self {
        BlobWriter::new()
    }
}

impl BlobWriter {
    /// A writer holding just the (empty) header.
    pub fn new() -> Self {
        let mut w = BlobWriter {
            buf: vec![0; HEADER_SIZE as usize],
            count: 0,
        };
        w.write_header();
        w
    }

    /// Appends a tensor and returns the offset MIL must reference it by
    /// (the metadata record's offset).
    pub fn add(&mut self, tensor: &Tensor) -> Result<u64> {
        let payload = tensor.le_bytes()?;
        let n = tensor
            .ty()
            .num_elements()
            .ok_or_else(|| Error::invalid("tensor element count overflows"))?;
        self.add_raw(tensor.dtype(), &payload, n)
    }

    /// Appends an already encoded payload of `num_elements` values of
    /// `dtype` (sub-byte types packed LSB first).
    pub fn add_raw(&mut self, dtype: DType, payload: &[u8], num_elements: usize) -> Result<u64> {
        let meta = align(self.buf.len() as u64);
        let record = metadata(dtype, payload.len(), num_elements, meta + HEADER_SIZE)?;
        self.count = self
            .count
            .checked_add(1)
            .ok_or_else(|| Error::invalid("too many blobs for one file"))?;
        self.buf.resize(meta as usize, 0);
        self.buf.extend_from_slice(&record);
        self.buf.extend_from_slice(payload);
        self.write_header();
        Ok(meta)
    }

    /// Number of blobs written so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The finished file.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn write_header(&mut self) {
        self.buf[..HEADER_SIZE as usize].copy_from_slice(&file_header(self.count));
    }
}

/// The file header for `count` blobs.
fn file_header(count: u32) -> [u8; HEADER_SIZE as usize] {
    let mut h = [0u8; HEADER_SIZE as usize];
    h[0..4].copy_from_slice(&count.to_le_bytes());
    h[4..8].copy_from_slice(&STORAGE_VERSION.to_le_bytes());
    h
}

/// The metadata record of a payload of `len` bytes holding `num_elements`
/// values of `dtype`, its data at `data_offset`; refuses a payload whose
/// size does not match.
fn metadata(dtype: DType, len: usize, num_elements: usize, data_offset: u64) -> Result<[u8; HEADER_SIZE as usize]> {
    let code = dtype.blob_code().ok_or_else(|| {
        Error::unsupported(format!("weight blobs cannot hold {}", dtype.mil_name()))
    })?;
    let bits = u64::from(dtype.bit_width().unwrap_or(8));
    let total_bits = (num_elements as u64)
        .checked_mul(bits)
        .ok_or_else(|| Error::invalid("blob bit size overflows"))?;
    if total_bits.div_ceil(8) != len as u64 {
        return Err(Error::invalid(format!(
            "{num_elements} {} values need {} bytes, payload has {len}",
            dtype.mil_name(),
            total_bits.div_ceil(8),
        )));
    }
    let padding_bits = (8 - total_bits % 8) % 8;
    let mut r = [0u8; HEADER_SIZE as usize];
    r[0..4].copy_from_slice(&SENTINEL.to_le_bytes());
    r[4..8].copy_from_slice(&code.to_le_bytes());
    r[8..16].copy_from_slice(&(len as u64).to_le_bytes());
    r[16..24].copy_from_slice(&data_offset.to_le_bytes());
    r[24..32].copy_from_slice(&padding_bits.to_le_bytes());
    Ok(r)
}

fn align(x: u64) -> u64 {
    x.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// How a program's blobs are spread over weight files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightLayout {
    /// All blobs in `weights/weight.bin`, what coremltools writes.
    #[default]
    SingleFile,
    /// One file per blob (`weights/w0.bin`, `weights/w1.bin`, ...), each blob
    /// at offset 64. Reported to be the portable choice for the ANE on M1,
    /// where several blobs in one file failed to load.
    FilePerBlob,
}

impl WeightLayout {
    fn file_name(self, index: usize) -> String {
        match self {
            WeightLayout::SingleFile => "weight.bin".to_string(),
            WeightLayout::FilePerBlob => format!("w{index}.bin"),
        }
    }
}

/// Where one blob lives: a file inside the package's `weights/` directory
/// and the metadata offset MIL references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobLocation {
    /// File name inside `weights/`, e.g. `weight.bin`.
    pub file: String,
    /// Offset of the blob's metadata record (what `BLOBFILE` / the proto's
    /// `BlobFileValue.offset` hold).
    pub offset: u64,
}

impl BlobLocation {
    /// The path MIL uses, `@model_path/weights/<file>`.
    pub fn mil_path(&self) -> String {
        format!("@model_path/weights/{}", self.file)
    }
}

/// The weight files of a program, ready to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    /// `(file name inside weights/, bytes)`, in file order.
    pub files: Vec<(String, Vec<u8>)>,
    /// Location of each blob, indexed like [`Program::blobs`].
    pub locations: Vec<BlobLocation>,
}

/// Plans where each blob of `program` goes, without encoding any payload.
pub fn plan_locations(program: &Program, layout: WeightLayout) -> Result<Vec<BlobLocation>> {
    let mut next = HEADER_SIZE;
    let mut out = Vec::with_capacity(program.blobs().len());
    for (i, t) in program.blobs().iter().enumerate() {
        let n = t
            .ty()
            .num_elements()
            .ok_or_else(|| Error::invalid("tensor element count overflows"))?;
        let bits = u64::from(t.dtype().bit_width().unwrap_or(8));
        let size = (n as u64 * bits).div_ceil(8);
        let offset = match layout {
            WeightLayout::SingleFile => {
                let meta = align(next);
                next = meta + HEADER_SIZE + size;
                meta
            }
            WeightLayout::FilePerBlob => HEADER_SIZE,
        };
        out.push(BlobLocation {
            file: layout.file_name(i),
            offset,
        });
    }
    Ok(out)
}

/// Encodes every blob of `program` into weight files.
pub fn write_weights(program: &Program, layout: WeightLayout) -> Result<Weights> {
    let locations = plan_locations(program, layout)?;
    let mut files = Vec::new();
    match layout {
        WeightLayout::SingleFile => {
            if !program.blobs().is_empty() {
                let mut w = BlobWriter::new();
                for (t, loc) in program.blobs().iter().zip(&locations) {
                    let off = w.add(t)?;
                    debug_assert_eq!(off, loc.offset);
                }
                files.push((layout.file_name(0), w.finish()));
            }
        }
        WeightLayout::FilePerBlob => {
            for (i, t) in program.blobs().iter().enumerate() {
                let mut w = BlobWriter::new();
                w.add(t)?;
                files.push((layout.file_name(i), w.finish()));
            }
        }
    }
    Ok(Weights { files, locations })
}

/// Writes one weight file at `path` holding `blobs`, byte for byte what
/// [`BlobWriter`] makes of them, straight from the tensors: ResNet-18's
/// 23 MB of weights were copied twice in memory (encoded, then appended to
/// a growing buffer) before a single byte reached the file.
fn stream_blob_file(path: &Path, blobs: &[&Tensor]) -> Result<()> {
    let io = |e| Error::io(path, e);
    let count = u32::try_from(blobs.len()).map_err(|_| Error::invalid("too many blobs for one file"))?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    out.write_all(&file_header(count)).map_err(io)?;
    let mut at = HEADER_SIZE;
    for t in blobs {
        let n = t
            .ty()
            .num_elements()
            .ok_or_else(|| Error::invalid("tensor element count overflows"))?;
        let payload = t.le_bytes()?;
        let meta = align(at);
        let record = metadata(t.dtype(), payload.len(), n, meta + HEADER_SIZE)?;
        out.write_all(&[0u8; ALIGNMENT as usize][..(meta - at) as usize]).map_err(io)?;
        out.write_all(&record).map_err(io)?;
        out.write_all(&payload).map_err(io)?;
        at = meta + HEADER_SIZE + payload.len() as u64;
    }
    out.flush().map_err(io)
}

/// Writes the weight files of `program` into the directory `dir` (which
/// exists), with the same names and bytes as [`write_weights`] returns.
pub fn write_weight_files(program: &Program, layout: WeightLayout, dir: &Path) -> Result<()> {
    let blobs: Vec<&Tensor> = program.blobs().iter().collect();
    match layout {
        WeightLayout::SingleFile if blobs.is_empty() => Ok(()),
        WeightLayout::SingleFile => stream_blob_file(&dir.join(layout.file_name(0)), &blobs),
        WeightLayout::FilePerBlob => blobs
            .iter()
            .enumerate()
            .try_for_each(|(i, t)| stream_blob_file(&dir.join(layout.file_name(i)), std::slice::from_ref(t))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::TensorData;

    fn u64_at(b: &[u8], at: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(a)
    }

    #[test]
    fn matches_the_documented_four_blob_file() {
        // The hexdump in research/mil-oracle.md §2f, produced by
        // coremltools' own _BlobStorageWriter.
        let mut w = BlobWriter::new();
        let a = Tensor::fp32([3], vec![1.0, 2.0, -0.5]).unwrap();
        let b = Tensor::new(DType::Uint4, [5], TensorData::U8(vec![1, 2, 3, 4, 5])).unwrap();
        let c = Tensor::new(DType::Uint3, [5], TensorData::U8(vec![1, 2, 3, 4, 7])).unwrap();
        let d = Tensor::new(DType::Int4, [3], TensorData::I8(vec![-1, 2, -8])).unwrap();
        let offs: Vec<u64> = [&a, &b, &c, &d].iter().map(|t| w.add(t).unwrap()).collect();
        assert_eq!(offs, vec![64, 192, 320, 448]);
        let f = w.finish();
        assert_eq!(&f[0..8], &[4, 0, 0, 0, 2, 0, 0, 0]);
        assert!(f[8..64].iter().all(|&x| x == 0));
        assert_eq!(&f[64..72], &[0xEF, 0xBE, 0xAD, 0xDE, 2, 0, 0, 0]);
        assert_eq!(u64_at(&f, 72), 12);
        assert_eq!(u64_at(&f, 80), 128);
        assert_eq!(
            &f[128..140],
            &[0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0, 0, 0, 0xbf]
        );
        assert_eq!(u64_at(&f, 192 + 8), 3);
        assert_eq!(u64_at(&f, 192 + 24), 4, "uint4 x5 leaves 4 padding bits");
        assert_eq!(&f[256..259], &[0x21, 0x43, 0x05]);
        assert_eq!(&f[384..386], &[0xD1, 0x78]);
        assert_eq!(&f[512..514], &[0x2F, 0x08]);
        assert_eq!(f.len(), 514, "the last payload is not padded");
    }

    /// The streaming writer makes the same files as the in-memory one
    /// (itself checked against coremltools' bytes above), for both layouts
    /// and for payloads that leave gaps to the next 64-byte boundary.
    #[test]
    fn streamed_weight_files_equal_the_encoded_ones() {
        let mut p = Program::new(crate::Opset::Ios18);
        p.add_blob(Tensor::fp32([3], vec![1.0, 2.0, -0.5]).unwrap()).unwrap();
        p.add_blob(Tensor::new(DType::Uint4, [5], TensorData::U8(vec![1, 2, 3, 4, 5])).unwrap()).unwrap();
        p.add_blob(Tensor::new(DType::Int4, [3], TensorData::I8(vec![-1, 2, -8])).unwrap()).unwrap();
        p.add_blob(Tensor::fp16([33], (0..33).map(|i| half::f16::from_f32(i as f32)).collect()).unwrap()).unwrap();
        let dir = std::env::temp_dir().join(format!("aneforge-mil-stream-{}", std::process::id()));
        for layout in [WeightLayout::SingleFile, WeightLayout::FilePerBlob] {
            std::fs::create_dir_all(&dir).unwrap();
            write_weight_files(&p, layout, &dir).unwrap();
            let want = write_weights(&p, layout).unwrap().files;
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), want.len(), "{layout:?}");
            for (name, bytes) in want {
                assert_eq!(std::fs::read(dir.join(&name)).unwrap(), bytes, "{layout:?} {name}");
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn planned_offsets_equal_written_offsets() {
        let mut p = Program::new(crate::Opset::Ios18);
        for n in [1usize, 31, 32, 33, 100] {
            p.add_blob(Tensor::fp16([n], vec![half::f16::ONE; n]).unwrap())
                .unwrap();
        }
        let w = write_weights(&p, WeightLayout::SingleFile).unwrap();
        let mut bw = BlobWriter::new();
        let offs: Vec<u64> = p.blobs().iter().map(|t| bw.add(t).unwrap()).collect();
        let planned: Vec<u64> = w.locations.iter().map(|l| l.offset).collect();
        assert_eq!(planned, offs);
        assert_eq!(planned, vec![64, 192, 320, 448, 640]);
        assert_eq!(w.files.len(), 1);
        assert_eq!(w.files[0].1, bw.finish());

        let per = write_weights(&p, WeightLayout::FilePerBlob).unwrap();
        assert_eq!(per.files.len(), 5);
        assert!(per.locations.iter().all(|l| l.offset == 64));
        assert_eq!(per.locations[3].mil_path(), "@model_path/weights/w3.bin");
    }

    #[test]
    fn rejects_payload_size_mismatch() {
        let mut w = BlobWriter::new();
        assert!(w.add_raw(DType::Fp16, &[0, 0, 0], 2).is_err());
        assert!(w.add_raw(DType::Bool, &[0], 1).is_err());
        assert_eq!(w.count(), 0);
    }
}
