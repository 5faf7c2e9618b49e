//! Numbers as the reader shows them: one formatter per kind of figure, shared by every pane
//! and the saved transcript.

use std::time::Duration;

/// Counts ("12,345") and memory figures (MiB), as everywhere else.
pub use crate::units::{in_mib, int, mib};

/// Download sizes in MB (10⁶ bytes, as the hub reports them): "96.0".
pub fn mb(bytes: usize) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

/// "18.5 tok/s", or "–" before there is a rate.
pub fn rate(v: f64, unit: &str) -> String {
    if v > 0.0 {
        format!("{v:.1} {unit}")
    } else {
        "–".into()
    }
}

/// Seconds as a time figure: "0.04 s", "2.35 s", "12.3 s"; "–" before there is one.
pub fn seconds(v: f64) -> String {
    match v {
        v if v <= 0.0 => "–".into(),
        v if v < 10.0 => format!("{v:.2} s"),
        v => format!("{v:.1} s"),
    }
}

/// `bytes` as standard base64 (RFC 4648, padded), for the OSC 52 clipboard sequence.
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// "4:05", or "1:02:03" past an hour.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_the_screen_shows_them() {
        assert_eq!(int(0), "0");
        assert_eq!(int(999), "999");
        assert_eq!(int(1000), "1,000");
        assert_eq!(int(1234567), "1,234,567");
        assert_eq!(mib(3 << 19), "1.5 MiB");
        assert_eq!(mb(96_000_000), "96.0");
        assert_eq!(rate(0.0, "s"), "–");
        assert_eq!(rate(18.54, "tok/s"), "18.5 tok/s");
        assert_eq!(clock(Duration::from_secs(245)), "4:05");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
        assert_eq!(seconds(0.0), "–");
        assert_eq!(seconds(0.042), "0.04 s");
        assert_eq!(seconds(12.34), "12.3 s");
    }

    #[test]
    fn base64_is_rfc_4648() {
        // The RFC's test vectors.
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded, "{plain}");
        }
        assert_eq!(base64("é".as_bytes()), "w6k=");
    }
}
