//! GGUF checks around candle's reader. Before it: a walk over the header that bounds every
//! length by the file (candle turns a 160 MB byte array into 8.6 GB of values, and divides
//! by `general.alignment` unchecked). After it: the tensor index against the file, so a
//! wrong type or a shifted offset is refused instead of loading garbage.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};

use super::{ModelError, Result};

/// More entries than any tokenizer (vocabularies and merges are ≤ a few hundred thousand).
const MAX_ARRAY: u64 = 1 << 24;
const MAX_KEY: u64 = 1 << 16;

/// Walks the metadata of a GGUF v2/v3 file without keeping it.
pub(super) fn scan_header(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|source| ModelError::Io {
        path: path.into(),
        source,
    })?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = Walker {
        r: BufReader::new(file),
        len,
    };
    let corrupt = |detail: String| ModelError::Corrupt {
        path: path.into(),
        detail,
    };
    let (Ok(magic), Ok(version)) = (r.u32(), r.u32()) else {
        return Ok(()); // too short: candle's reader says so
    };
    // GGUF v1 (u32 counts) is rare and its reader is candle's alone.
    if magic != u32::from_le_bytes(*b"GGUF") || version < 2 {
        return Ok(());
    }
    let io = |e: std::io::Error| corrupt(format!("header ends early ({e})"));
    let _tensors = r.u64().map_err(io)?;
    let kvs = r.u64().map_err(io)?;
    if kvs > MAX_ARRAY {
        return Err(corrupt(format!("it declares {kvs} metadata entries")));
    }
    for _ in 0..kvs {
        let n = r.u64().map_err(io)?;
        if n > MAX_KEY.min(r.left()) {
            return Err(corrupt(format!("a metadata key of {n} bytes")));
        }
        let mut key = vec![0; n as usize];
        r.r.read_exact(&mut key).map_err(io)?;
        let key = String::from_utf8_lossy(&key).into_owned();
        let ty = r.u32().map_err(io)?;
        if key == "general.alignment" {
            let a = if ty == 4 { r.u32().map_err(io)? } else { 0 };
            if !a.is_power_of_two() {
                return Err(corrupt(format!(
                    "general.alignment must be a power of two, e.g. 32 (type {ty}, value {a})"
                )));
            }
            continue;
        }
        r.skip_value(ty, true)
            .map_err(|e| corrupt(format!("metadata {}: {e}", crate::units::printable(&key))))?;
    }
    Ok(())
}

struct Walker {
    r: BufReader<File>,
    len: u64,
}

impl Walker {
    fn u32(&mut self) -> std::io::Result<u32> {
        let mut b = [0; 4];
        self.r.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> std::io::Result<u64> {
        let mut b = [0; 8];
        self.r.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn left(&mut self) -> u64 {
        let pos = self.r.stream_position().unwrap_or(self.len);
        self.len.saturating_sub(pos)
    }
    fn skip(&mut self, n: u64) -> std::result::Result<(), String> {
        if n > self.left() {
            return Err(format!(
                "needs {n} bytes, the file has {} left",
                self.left()
            ));
        }
        self.r
            .seek(SeekFrom::Current(n as i64))
            .map(drop)
            .map_err(|e| e.to_string())
    }
    /// Skips one value of GGUF type `ty`; arrays of arrays are refused (no key uses them).
    fn skip_value(&mut self, ty: u32, outer: bool) -> std::result::Result<(), String> {
        let err = |e: std::io::Error| e.to_string();
        match ty {
            0 | 1 | 7 => self.skip(1),
            2 | 3 => self.skip(2),
            4..=6 => self.skip(4),
            10..=12 => self.skip(8),
            8 => {
                let n = self.u64().map_err(err)?;
                self.skip(n)
            }
            9 if outer => {
                let (elem, n) = (self.u32().map_err(err)?, self.u64().map_err(err)?);
                if n > MAX_ARRAY {
                    return Err(format!("an array of {n} entries (at most {MAX_ARRAY})"));
                }
                match elem {
                    0 | 1 | 7 => self.skip(n),
                    2 | 3 => self.skip(n * 2),
                    4..=6 => self.skip(n * 4),
                    10..=12 => self.skip(n * 8),
                    8 => (0..n).try_for_each(|_| self.skip_value(8, false)),
                    9 => Err("an array of arrays".into()),
                    t => Err(format!("an array of unknown type {t}")),
                }
            }
            t => Err(format!("unknown value type {t}")),
        }
    }
}

/// Every tensor's type, size and offset against the file: inside it, aligned, and tiling the
/// data section in order without overlaps or gaps (llama.cpp and candle write them so).
pub(super) fn check_layout(path: &Path, content: &Content, file_len: u64) -> Result<()> {
    let corrupt = |detail: String| ModelError::Corrupt {
        path: path.into(),
        detail,
    };
    let align = match content.metadata.get("general.alignment") {
        Some(Value::U32(a)) => u64::from(*a),
        _ => 32,
    };
    let mut spans = Vec::with_capacity(content.tensor_infos.len());
    for (name, info) in &content.tensor_infos {
        let name = crate::units::printable(name);
        let dt = info.ggml_dtype;
        let elems = info
            .shape
            .dims()
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .ok_or_else(|| corrupt(format!("tensor {name} has an impossible shape")))?;
        let block = dt.block_size() as u64;
        if elems % block != 0 {
            return Err(corrupt(format!(
                "tensor {name}: {elems} values are not whole {dt:?} blocks of {block}"
            )));
        }
        // Checked: a shape of many huge dims wraps the byte count (found by the gguf fuzzer).
        let bytes = (elems / block)
            .checked_mul(dt.type_size() as u64)
            .ok_or_else(|| corrupt(format!("tensor {name} has an impossible shape")))?;
        let start = content.tensor_data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(bytes));
        match (start, end) {
            _ if info.offset % align != 0 => {
                return Err(corrupt(format!(
                    "tensor {name} starts at offset {}, not a multiple of the alignment {align}",
                    info.offset
                )));
            }
            (Some(s), Some(e)) if e <= file_len => spans.push((s, e, name)),
            _ => {
                return Err(corrupt(format!(
                    "tensor {name} ({dt:?}, {bytes} bytes at offset {}) runs past the end of the file",
                    info.offset
                )));
            }
        }
    }
    spans.sort();
    for w in spans.windows(2) {
        let ((_, end, a), (start, _, b)) = (&w[0], &w[1]);
        if *end > *start {
            return Err(corrupt(format!(
                "tensors {a} and {b} overlap: a tensor's type, shape or offset is wrong"
            )));
        }
        if start - end >= align {
            return Err(corrupt(format!(
                "{} unused bytes before tensor {b}: a tensor's type, shape or offset is wrong",
                start - end
            )));
        }
    }
    Ok(())
}
