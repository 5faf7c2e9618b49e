//! Stored reads: the KV cache of a finished read, kept on disk per (model, runtime settings,
//! tokenizer, recipe, prompt tokens) so that opening the same book again restores instead of
//! reading. One file per read, `<key id>.read`:
//!
//! ```text
//! "SWAAREAD" · format version (u32 LE) · header length (u32 LE) · header (JSON)
//! · per layer: K bytes, V bytes ([1, kv_heads, n, head_dim], the model's dtype, LE)
//! · CRC-32 of everything after the version (u32 LE)
//! ```
//!
//! Files are written to a temporary name and renamed, so a reader never sees half a file;
//! anything that does not check out (magic, version, length, key, CRC) is ignored with a
//! one-line note and the caller reads again. Least recently used entries (file mtime, touched
//! on every restore) go first when the directory passes its byte budget.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{HeldLayer, KvCache};
use crate::recipe::Recipe;

/// Bumped whenever the layout or the meaning of a field changes: older files are ignored.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"SWAAREAD";
const EXT: &str = "read";
const TMP_EXT: &str = "tmp";
/// A header past this is not one of ours (it is a few KiB at most).
const MAX_HEADER: u32 = 16 << 20;
/// Temporary files older than this are left over from an interrupted write.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// Where stored reads live and how many bytes they may take together.
#[derive(Debug, Clone, PartialEq)]
pub struct Store {
    pub dir: PathBuf,
    pub budget_bytes: u64,
}

/// A session's read cache: the store, and the model the session runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadCache {
    pub store: Store,
    /// Identity of the model file(s) and how they run (weights mode, device), from the
    /// composition root (`open.rs`).
    pub model: String,
    /// The model's short name, for `cache list`.
    pub model_name: String,
}

/// The store's folder: `$SWAA_CHAT_READS`, else `reads/` in the cache dir (tests and scripts
/// point it at a folder of their own while models stay in the shared cache).
pub fn default_dir() -> Result<PathBuf, crate::hub::HubError> {
    if let Some(dir) = std::env::var_os("SWAA_CHAT_READS")
        && !dir.is_empty()
    {
        return Ok(PathBuf::from(dir));
    }
    Ok(crate::hub::cache_dir()?.join("reads"))
}

/// Everything a stored read must match to stand in for reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Key {
    pub model: String,
    /// The running model's shape, dtype and RoPE scaling (a `--ctx` past the trained one
    /// changes the scaling, so the same file computes other keys).
    pub runtime: String,
    /// SHA-256 of the tokenizer and its chat template.
    pub tokenizer: String,
    pub recipe: Recipe,
    /// Whether the cache drops what the recipe never reads again (tests turn it off).
    pub eviction: bool,
    /// SHA-256 of the prompt token ids that were read (document, title, template, any page
    /// range and truncation included).
    pub tokens: String,
}

impl Key {
    /// The file name's stem: a hash of the whole key.
    pub fn id(&self) -> String {
        let json = serde_json::to_vec(self).expect("a key serialises");
        sha256_hex(&json)[..32].to_string()
    }
}

/// What `cache list` shows about an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct About {
    pub title: String,
    pub model_name: String,
    pub recipe: String,
    pub tokens: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    key: Key,
    about: About,
    dtype: String,
    kv_heads: usize,
    head_dim: usize,
    next_pos: usize,
    layers: Vec<LayerMeta>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LayerMeta {
    sink: usize,
    start: usize,
    tokens: usize,
}

/// The outcome of looking a read up.
#[derive(Debug)]
pub enum Lookup {
    /// The cache now holds the stored read; the entry takes `bytes` on disk.
    Restored {
        bytes: u64,
    },
    Missing,
    /// There was an entry but it cannot be used: a one-line note saying why.
    Ignored(String),
}

/// A finished save.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    pub path: PathBuf,
    pub bytes: u64,
    /// Entries removed to stay within the budget.
    pub evicted: usize,
}

/// One entry, as `cache list` shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub path: PathBuf,
    pub bytes: u64,
    pub last_used: SystemTime,
    /// What the entry holds, or why its header cannot be read.
    pub about: Result<About, String>,
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// SHA-256 of token ids (as little-endian u32s).
pub fn tokens_hash(tokens: &[u32]) -> String {
    let mut h = Sha256::new();
    for t in tokens {
        h.update(t.to_le_bytes());
    }
    format!("{:x}", h.finalize())
}

fn dtype_name(d: DType) -> &'static str {
    d.as_str()
}

impl Store {
    fn path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{}.{EXT}", key.id()))
    }

    /// Fills `cache` (shaped for the model) from the entry for `key`, giving each layer room
    /// for `capacity[l]` tokens. On anything but `Restored` the cache is left empty.
    pub fn load(&self, key: &Key, cache: &mut KvCache, capacity: &[usize]) -> Lookup {
        let path = self.path(key);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Missing,
            Err(e) => return Lookup::Ignored(note(&path, &format!("cannot be opened ({e})"))),
        };
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        match read_entry(file, bytes, key, cache, capacity) {
            Ok(()) => {
                // Least recently *used*: a restore counts as a use.
                if let Ok(f) = File::options().append(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Lookup::Restored { bytes }
            }
            Err(problem) => {
                cache.clear();
                Lookup::Ignored(note(&path, &problem))
            }
        }
    }

    /// Writes `layers` (from [`KvCache::export`]) as the entry for `key`, then evicts least
    /// recently used entries beyond the budget. Errors are one-line notes: a read that could
    /// not be stored is still a read.
    pub fn save(
        &self,
        key: &Key,
        about: About,
        layers: &[HeldLayer],
        next_pos: usize,
    ) -> Result<Saved, String> {
        let first = layers.first().ok_or("an empty read is not stored")?;
        let dims = first.k.dims().to_vec();
        let dtype = first.k.dtype();
        let payload: u64 = layers
            .iter()
            .map(|l| 2 * (l.k.elem_count() * dtype.size_in_bytes()) as u64)
            .sum();
        if payload > self.budget_bytes {
            return Err(format!(
                "this read takes {} but the read cache's budget is {}: not stored (raise read_cache.budget_mib in config.toml)",
                crate::units::mib(payload as usize),
                crate::units::mib(self.budget_bytes as usize)
            ));
        }
        let header = Header {
            key: key.clone(),
            about,
            dtype: dtype_name(dtype).into(),
            kv_heads: dims[1],
            head_dim: dims[3],
            next_pos,
            layers: layers
                .iter()
                .map(|l| LayerMeta {
                    sink: l.sink,
                    start: l.start,
                    tokens: l.k.dims()[2],
                })
                .collect(),
        };
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            format!(
                "could not store the read in {} ({what}: {e}); the next open reads again",
                self.dir.display()
            )
        };
        fs::create_dir_all(&self.dir).map_err(|e| fail("creating the folder", &e))?;
        let path = self.path(key);
        let tmp = self
            .dir
            .join(format!("{}.{}.{TMP_EXT}", key.id(), std::process::id()));
        let written = write_entry(&tmp, &header, layers).and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(fail("writing", &e));
        }
        let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(payload);
        let evicted = self.evict(Some(&path));
        Ok(Saved {
            path,
            bytes,
            evicted,
        })
    }

    /// Removes least recently used entries until the rest fit the budget (`keep` stays), and
    /// temporary files an interrupted write left behind. Returns how many entries went.
    pub fn evict(&self, keep: Option<&Path>) -> usize {
        let now = SystemTime::now();
        for (path, _, modified) in files(&self.dir, TMP_EXT) {
            if now.duration_since(modified).unwrap_or_default() > STALE_TMP {
                let _ = fs::remove_file(path);
            }
        }
        let mut entries = files(&self.dir, EXT);
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort_by_key(|e| e.2);
        let mut removed = 0;
        for (path, bytes, _) in entries {
            if total <= self.budget_bytes {
                break;
            }
            if Some(path.as_path()) == keep {
                continue;
            }
            if fs::remove_file(&path).is_ok() {
                total -= bytes;
                removed += 1;
            }
        }
        removed
    }

    /// Every entry, most recently used first.
    pub fn list(&self) -> Vec<Listed> {
        let mut out: Vec<Listed> = files(&self.dir, EXT)
            .into_iter()
            .map(|(path, bytes, last_used)| Listed {
                about: File::open(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|f| read_header(&mut BufReader::new(f)).map(|(h, _)| h.about)),
                path,
                bytes,
                last_used,
            })
            .collect();
        out.sort_by_key(|l| std::cmp::Reverse(l.last_used));
        out
    }

    /// Removes every entry and temporary file; returns how many files and bytes went.
    pub fn clear(&self) -> io::Result<(usize, u64)> {
        let mut n = 0;
        let mut bytes = 0;
        for (path, size, _) in files(&self.dir, EXT)
            .into_iter()
            .chain(files(&self.dir, TMP_EXT))
        {
            fs::remove_file(&path)?;
            n += 1;
            bytes += size;
        }
        Ok((n, bytes))
    }
}

/// A file's SHA-256 as remembered for its (path, size, mtime): hashing a 1 GB model on every
/// open would cost seconds, and a changed file has another size or mtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Remembered {
    path: PathBuf,
    size: u64,
    mtime_nanos: u128,
    sha256: String,
}

/// One identity for a model's files: their SHA-256s, each hashed once and remembered in
/// `dir/file-hashes.json` (a failure to remember only costs hashing again next time).
pub fn files_identity(paths: &[PathBuf], dir: &Path) -> io::Result<String> {
    let memo_path = dir.join("file-hashes.json");
    let mut memo: Vec<Remembered> = fs::read(&memo_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut changed = false;
    let mut parts = Vec::new();
    for p in paths {
        let path = fs::canonicalize(p)?;
        let meta = fs::metadata(&path)?;
        let mtime_nanos = meta
            .modified()?
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let now =
            |r: &Remembered| r.path == path && r.size == meta.len() && r.mtime_nanos == mtime_nanos;
        let sha = match memo.iter().find(|r| now(r)) {
            Some(r) => r.sha256.clone(),
            None => {
                let sha = crate::hub::sha256_file(&path).map_err(io::Error::other)?;
                memo.retain(|r| r.path != path);
                memo.push(Remembered {
                    path: path.clone(),
                    size: meta.len(),
                    mtime_nanos,
                    sha256: sha.clone(),
                });
                changed = true;
                sha
            }
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        parts.push(format!("{}={sha}", name.unwrap_or_default()));
    }
    if changed {
        let written = fs::create_dir_all(dir).and_then(|()| {
            let tmp = dir.join(format!("file-hashes.{}.{TMP_EXT}", std::process::id()));
            fs::write(&tmp, serde_json::to_vec(&memo).map_err(io::Error::other)?)?;
            fs::rename(&tmp, &memo_path)
        });
        if let Err(e) = written {
            tracing::warn!(
                "could not remember model file hashes in {}: {e}",
                dir.display()
            );
        }
    }
    Ok(match parts.as_slice() {
        [one] => one.clone(),
        _ => sha256_hex(parts.join(",").as_bytes()),
    })
}

fn note(path: &Path, problem: &str) -> String {
    format!(
        "stored read {} {problem}: ignored, reading the document again",
        path.display()
    )
}

/// Files in `dir` ending in `.ext`: path, size, last modified.
fn files(dir: &Path, ext: &str) -> Vec<(PathBuf, u64, SystemTime)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == ext))
        .filter_map(|e| {
            let m = e.metadata().ok().filter(|m| m.is_file())?;
            Some((
                e.path(),
                m.len(),
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            ))
        })
        .collect()
}

fn write_entry(tmp: &Path, header: &Header, layers: &[HeldLayer]) -> io::Result<()> {
    let json = serde_json::to_vec(header).map_err(io::Error::other)?;
    let mut w = BufWriter::with_capacity(1 << 20, File::create(tmp)?);
    let mut crc = crc32fast::Hasher::new();
    let mut put = |w: &mut BufWriter<File>, b: &[u8]| -> io::Result<()> {
        crc.update(b);
        w.write_all(b)
    };
    w.write_all(MAGIC)?;
    w.write_all(&FORMAT_VERSION.to_le_bytes())?;
    put(&mut w, &(json.len() as u32).to_le_bytes())?;
    put(&mut w, &json)?;
    for l in layers {
        for t in [&l.k, &l.v] {
            // One layer's bytes at a time (a host copy for a device tensor).
            put(&mut w, &tensor_bytes(t).map_err(io::Error::other)?)?;
        }
    }
    w.write_all(&crc.finalize().to_le_bytes())?;
    let f = w.into_inner().map_err(|e| e.into_error())?;
    // On disk before the rename makes it an entry: a crash leaves no entry half written.
    f.sync_all()
}

fn tensor_bytes(t: &Tensor) -> candle_core::Result<Vec<u8>> {
    use safetensors::View;
    let t = t.to_device(&Device::Cpu)?;
    Ok(t.data().into_owned())
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Magic, version and header (parsed, and its bytes as stored); the reader is left at the
/// first layer.
fn read_header(r: &mut impl Read) -> Result<(Header, Vec<u8>), String> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|_| "is truncated (no header)".to_string())?;
    if &magic != MAGIC {
        return Err("is not a stored read (bad magic)".into());
    }
    let version = read_u32(r).map_err(|_| "is truncated (no version)".to_string())?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "was written by another version of swaa-chat (format {version}, this one reads {FORMAT_VERSION})"
        ));
    }
    let len = read_u32(r).map_err(|_| "is truncated (no header)".to_string())?;
    if len > MAX_HEADER {
        return Err("is corrupt (header length)".into());
    }
    let mut json = vec![0u8; len as usize];
    r.read_exact(&mut json)
        .map_err(|_| "is truncated (in the header)".to_string())?;
    let h = serde_json::from_slice(&json).map_err(|e| format!("is corrupt (header: {e})"))?;
    Ok((h, json))
}

fn read_entry(
    file: File,
    file_len: u64,
    key: &Key,
    cache: &mut KvCache,
    capacity: &[usize],
) -> Result<(), String> {
    let mut r = BufReader::with_capacity(1 << 20, file);
    let (h, json) = read_header(&mut r)?;
    if h.key != *key {
        return Err("is for another model, recipe or document (its key differs)".into());
    }
    let dtype = cache.dtype();
    if h.dtype != dtype_name(dtype)
        || h.kv_heads != cache.kv_heads()
        || h.head_dim != cache.head_dim()
        || h.layers.len() != cache.layers()
    {
        return Err("does not fit this model's cache (shape or dtype differs)".into());
    }
    let token_bytes = (h.kv_heads * h.head_dim * dtype.size_in_bytes()) as u64;
    let payload: u64 = h
        .layers
        .iter()
        .map(|l| 2 * l.tokens as u64 * token_bytes)
        .sum();
    // Magic, version, header length, header, payload, CRC: any other length is damage.
    let expected = 8 + 4 + 4 + json.len() as u64 + payload + 4;
    if file_len < expected {
        return Err(format!("is truncated ({file_len} of {expected} bytes)"));
    }
    if file_len > expected {
        return Err(format!(
            "is corrupt ({file_len} bytes, {expected} expected)"
        ));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&(json.len() as u32).to_le_bytes());
    crc.update(&json);
    let device = cache.device().clone();
    let mut layers = Vec::with_capacity(h.layers.len());
    for m in &h.layers {
        let shape = [1, h.kv_heads, m.tokens, h.head_dim];
        let mut next = || -> Result<Tensor, String> {
            let mut buf = vec![0u8; (m.tokens as u64 * token_bytes) as usize];
            r.read_exact(&mut buf)
                .map_err(|e| format!("is truncated ({e})"))?;
            crc.update(&buf);
            Tensor::from_raw_buffer(&buf, dtype, &shape, &device)
                .map_err(|e| format!("cannot be loaded ({e})"))
        };
        let k = next()?;
        let v = next()?;
        layers.push(HeldLayer {
            sink: m.sink,
            start: m.start,
            k,
            v,
        });
    }
    let stored = read_u32(&mut r).map_err(|_| "is truncated (no checksum)".to_string())?;
    if stored != crc.finalize() {
        return Err("is corrupt (checksum mismatch)".into());
    }
    cache
        .import(layers, h.next_pos, capacity)
        .map_err(|e| format!("does not fit this model's cache ({e})"))
}
