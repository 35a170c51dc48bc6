//! Just enough of .npz/.npy to read the MiniLM reference file: a zip whose
//! members are stored (numpy's `savez`, no compression, zip64 local headers),
//! each an .npy with a little-endian `<i8`, `<f4` or `<U<n>` C-order array.

use std::collections::HashMap;

/// One array: its shape and its elements in one of the supported kinds.
/// `embeddings` (F32) is read too, for the later cosine check of the encoder.
#[derive(Debug)]
#[allow(dead_code)]
pub enum Array {
    I64 {
        shape: Vec<usize>,
        data: Vec<i64>,
    },
    F32 {
        shape: Vec<usize>,
        data: Vec<f32>,
    },
    Str {
        shape: Vec<usize>,
        data: Vec<String>,
    },
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("short read at {at}"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    let s = b
        .get(at..at + 4)
        .ok_or_else(|| format!("short read at {at}"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, String> {
    let s = b
        .get(at..at + 8)
        .ok_or_else(|| format!("short read at {at}"))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

/// Walk the local file headers of a zip holding only stored members.
pub fn read_npz(bytes: &[u8]) -> Result<HashMap<String, Array>, String> {
    let mut out = HashMap::new();
    let mut at = 0usize;
    while u32_at(bytes, at).ok() == Some(0x0403_4b50) {
        let flags = u16_at(bytes, at + 6)?;
        let method = u16_at(bytes, at + 8)?;
        if method != 0 {
            return Err(format!(
                "member at {at} is compressed (method {method}); only stored members are read"
            ));
        }
        if flags & 0x8 != 0 {
            return Err("data descriptors are not supported".into());
        }
        let mut size = u64::from(u32_at(bytes, at + 18)?);
        let name_len = usize::from(u16_at(bytes, at + 26)?);
        let extra_len = usize::from(u16_at(bytes, at + 28)?);
        let name_start = at + 30;
        let name = bytes
            .get(name_start..name_start + name_len)
            .ok_or("short name")?;
        let name = String::from_utf8(name.to_vec()).map_err(|e| e.to_string())?;
        let extra = bytes
            .get(name_start + name_len..name_start + name_len + extra_len)
            .ok_or("short extra")?;
        if size == 0xFFFF_FFFF {
            // zip64 extended information: id 0x0001, then uncompressed size.
            let mut e = 0;
            while e + 4 <= extra.len() {
                let id = u16_at(extra, e)?;
                let len = usize::from(u16_at(extra, e + 2)?);
                if id == 1 {
                    size = u64_at(extra, e + 4)?;
                }
                e += 4 + len;
            }
        }
        let data_start = name_start + name_len + extra_len;
        let size = usize::try_from(size).map_err(|e| e.to_string())?;
        let data = bytes
            .get(data_start..data_start + size)
            .ok_or("member runs past the end")?;
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        out.insert(key, read_npy(data).map_err(|e| format!("{name}: {e}"))?);
        at = data_start + size;
    }
    Ok(out)
}

/// Parse one .npy (format 1.0 or 2.0).
pub fn read_npy(b: &[u8]) -> Result<Array, String> {
    if b.get(..6) != Some(b"\x93NUMPY") {
        return Err("not an .npy".into());
    }
    let major = *b.get(6).ok_or("short")?;
    let (header_len, header_start) = match major {
        1 => (usize::from(u16_at(b, 8)?), 10),
        2 | 3 => (u32_at(b, 8)? as usize, 12),
        v => return Err(format!("npy version {v}")),
    };
    let header = b
        .get(header_start..header_start + header_len)
        .ok_or("short header")?;
    let header = std::str::from_utf8(header).map_err(|e| e.to_string())?;
    let descr = field(header, "descr")?
        .trim_matches(|c| c == '\'' || c == '"')
        .to_string();
    if field(header, "fortran_order")?.trim() != "False" {
        return Err("fortran order".into());
    }
    let shape_txt = field(header, "shape")?;
    let shape: Vec<usize> = shape_txt
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let body = &b[header_start + header_len..];
    match descr.as_str() {
        "<i8" => {
            let data = body.get(..n * 8).ok_or("short data")?;
            let data = data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            Ok(Array::I64 { shape, data })
        }
        "<f4" => {
            let data = body.get(..n * 4).ok_or("short data")?;
            let data = data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
                .collect();
            Ok(Array::F32 { shape, data })
        }
        d if d.starts_with("<U") => {
            let width: usize = d[2..].parse().map_err(|_| format!("bad descr {d}"))?;
            let data = body.get(..n * width * 4).ok_or("short data")?;
            let mut strings = Vec::with_capacity(n);
            for item in data.chunks_exact(width * 4) {
                let mut s = String::new();
                for c in item.chunks_exact(4) {
                    let cp = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    if cp == 0 {
                        break;
                    }
                    s.push(char::from_u32(cp).ok_or(format!("bad code point {cp}"))?);
                }
                strings.push(s);
            }
            Ok(Array::Str {
                shape,
                data: strings,
            })
        }
        d => Err(format!("unsupported dtype {d}")),
    }
}

/// The text after `'key':` in the header dict, up to the next top-level comma.
fn field<'a>(header: &'a str, key: &str) -> Result<&'a str, String> {
    let pat = format!("'{key}':");
    let start = header.find(&pat).ok_or(format!("no {key} in header"))? + pat.len();
    let rest = &header[start..];
    let mut depth = 0i32;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Ok(rest[..i].trim()),
            _ => {}
        }
    }
    Err(format!("unterminated {key}"))
}
