//! Just enough of the .npy format (version 1/2, little-endian, C order) to
//! read a model input and write outputs: float16, float32, float64 and the
//! small integer types. Anything else is refused, never guessed.

use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;

/// An array as f32 values plus its shape and numpy dtype string.
pub struct Npy {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

pub fn read(path: &Path) -> Result<Npy> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    parse(&bytes).with_context(|| format!("{}: not a supported .npy file", path.display()))
}

fn parse(b: &[u8]) -> Result<Npy> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        bail!("missing the NUMPY magic");
    }
    let (hlen, start): (usize, usize) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => bail!("format version {v} is not supported"),
    };
    let end = start.checked_add(hlen).filter(|&e| e <= b.len()).ok_or_else(|| anyhow!("truncated header"))?;
    let header = std::str::from_utf8(&b[start..end]).context("header is not text")?;
    let field = |key: &str| -> Result<&str> {
        let i = header.find(key).ok_or_else(|| anyhow!("header has no {key}"))?;
        Ok(header[i + key.len()..].trim_start_matches([' ', ':']))
    };
    let descr = field("'descr'")?;
    let descr = descr.trim_start_matches('\'').split('\'').next().unwrap_or("");
    if field("'fortran_order'")?.starts_with("True") {
        bail!("Fortran-ordered arrays are not supported; save with np.ascontiguousarray");
    }
    let shape_txt = field("'shape'")?;
    let inner = shape_txt.trim_start_matches('(').split(')').next().unwrap_or("");
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| anyhow!("bad dimension {s:?}")))
        .collect::<Result<_>>()?;
    let n: usize = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| anyhow!("shape overflows"))?;
    let body = &b[end..];
    let (size, conv): (usize, fn(&[u8]) -> f32) = match descr {
        "<f2" => (2, |c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        "<f4" => (4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        "<f8" => (8, |c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32),
        "|u1" => (1, |c| c[0] as f32),
        "|i1" => (1, |c| c[0] as i8 as f32),
        "<i2" => (2, |c| i16::from_le_bytes([c[0], c[1]]) as f32),
        "<u2" => (2, |c| u16::from_le_bytes([c[0], c[1]]) as f32),
        other => bail!("dtype {other:?} is not supported (use float16/32/64 or 8/16-bit integers)"),
    };
    if body.len() < n * size {
        bail!("data is truncated: {} bytes for {n} elements of {size} bytes", body.len());
    }
    Ok(Npy { shape, data: body[..n * size].chunks_exact(size).map(conv).collect() })
}

/// Writes float16 data (what the engine produces).
pub fn write_f16(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f2', 'fortran_order': False, 'shape': {tuple}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    for &v in data {
        out.extend(half::f16::from_f32(v).to_le_bytes());
    }
    std::fs::write(path, out).with_context(|| format!("{}: cannot write", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let dir = std::env::temp_dir().join(format!("af-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        write_f16(&p, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap();
        let a = read(&p).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        assert!(parse(b"not an npy").is_err());
        let mut truncated = std::fs::read(&p).unwrap();
        truncated.truncate(truncated.len() - 3);
        assert!(parse(&truncated).is_err());
    }
}
