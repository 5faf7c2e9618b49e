//! The Hugging Face source (sync `hf-hub`): its local cache first, then a download, checked
//! against the pin and linked (or copied) into our cache.

use std::fs;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use tracing::info;

use super::cache::{RemoveOnDrop, hash_file, install, with_suffix};
use super::fetch::SourceError;
use super::progress::Meter;
use super::{FetchOptions, FetchStage, HubError, Preset, io_err};

/// Adapts a [`Meter`] to hf-hub's progress callback.
struct HfProgress(Meter);

impl hf_hub::api::Progress for HfProgress {
    fn init(&mut self, size: usize, _filename: &str) {
        self.0.set_length(size as u64);
    }
    fn update(&mut self, size: usize) {
        self.0.inc(size as u64);
    }
    fn finish(&mut self) {
        self.0.finish();
    }
}

/// Installs the preset's Hub file at `dest` once it matches the pin.
pub(super) fn fetch(p: &Preset, dest: &Path, opts: &FetchOptions) -> Result<(), SourceError> {
    if p.hf_repo.is_empty() || p.hf_file.is_empty() {
        return Err(SourceError::Failed("no Hub source for this preset".into()));
    }
    // hf-hub panics (`expect`) when it finds neither HF_HOME nor a home folder: check first.
    if std::env::var_os("HF_HOME").is_none() && directories::BaseDirs::new().is_none() {
        return Err(SourceError::Failed(
            "no home folder for the Hugging Face cache (set HF_HOME)".into(),
        ));
    }
    let endpoint = std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".into());
    let repo = hf_hub::Repo::model(p.hf_repo.to_string());
    let origin = format!(
        "{}/{}/{}",
        endpoint.trim_end_matches('/'),
        p.hf_repo,
        p.hf_file
    );
    // The Hub cache (HF_HOME) may already hold the file, e.g. from another tool.
    let src = match hf_hub::Cache::from_env().repo(repo.clone()).get(p.hf_file) {
        Some(path) => {
            info!(
                "{}: found {} in the Hugging Face cache",
                p.name,
                path.display()
            );
            path
        }
        None if opts.hf_offline() => {
            return Err(SourceError::Failed(
                "offline (HF_HUB_OFFLINE=1) and not in the Hugging Face cache".into(),
            ));
        }
        None => {
            // hf-hub's agent has a 30 s connect timeout and no knob: probe quickly first.
            probe(&endpoint, Duration::from_secs(5)).map_err(SourceError::Failed)?;
            let api = hf_hub::api::sync::ApiBuilder::from_env()
                .with_progress(false)
                .build()
                .map_err(|e| SourceError::Failed(e.to_string()))?;
            info!("{}: downloading {origin}", p.name);
            let progress = HfProgress(Meter::new(p, FetchStage::Downloading, p.size_bytes, opts));
            api.repo(repo)
                .download_with_progress(p.hf_file, progress)
                .map_err(|e| SourceError::Failed(format!("{origin}: {e}")))?
        }
    };

    let mut meter = Meter::new(p, FetchStage::Verifying, p.size_bytes, opts);
    let actual = hash_file(&src, &mut |n| meter.inc(n))
        .map_err(|e| SourceError::Failed(format!("cannot read {}: {e}", src.display())))?;
    meter.finish();
    if !actual.eq_ignore_ascii_case(p.sha256) {
        return Err(SourceError::Mismatch(HubError::ChecksumMismatch {
            expected: p.sha256.to_string(),
            actual,
            origin: format!("{origin} (cached at {}; delete it)", src.display()),
        }));
    }

    // Share the blob's disk space when possible (same filesystem), else copy it.
    let partial = with_suffix(dest, ".partial");
    let mut guard = RemoveOnDrop(Some(partial.clone()));
    let _ = fs::remove_file(&partial);
    let blob = fs::canonicalize(&src).unwrap_or(src);
    if fs::hard_link(&blob, &partial).is_err() {
        fs::copy(&blob, &partial)
            .map_err(io_err("cannot copy the download to", &partial))
            .map_err(SourceError::Fatal)?;
    }
    install(&partial, dest, p.sha256).map_err(SourceError::Fatal)?;
    guard.disarm();
    Ok(())
}

/// Fails fast (DNS or TCP) when the endpoint is unreachable. Skipped behind a proxy, whose
/// reachability is the proxy's business.
fn probe(endpoint: &str, timeout: Duration) -> Result<(), String> {
    let proxied = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()));
    if proxied {
        return Ok(());
    }
    let (rest, default_port) = match endpoint.split_once("://") {
        Some(("http", rest)) => (rest, 80),
        Some((_, rest)) => (rest, 443),
        None => (endpoint, 443),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(':') && port.parse::<u16>().is_ok() => {
            (h, port.parse().unwrap_or(default_port))
        }
        _ => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    for addr in addrs {
        if TcpStream::connect_timeout(&addr, timeout).is_ok() {
            return Ok(());
        }
    }
    Err(format!(
        "cannot connect to {host}:{port} within {timeout:?}"
    ))
}
