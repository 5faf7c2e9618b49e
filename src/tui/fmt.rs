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
    }
}
