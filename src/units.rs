//! Sizes and lengths as people read and type them, in one place for every output.

/// Bytes in MiB, the unit of every memory figure (screen, tables, reports).
pub fn in_mib(bytes: usize) -> f64 {
    bytes as f64 / 1048576.0
}

/// `bytes` in MiB with one decimal: "12.3 MiB".
pub fn mib(bytes: usize) -> String {
    format!("{} MiB", mib_number(bytes))
}

/// `bytes` in MiB with one decimal, without the unit (table columns).
pub fn mib_number(bytes: usize) -> String {
    format!("{:.1}", in_mib(bytes))
}

/// A count with thousands separators: "12,345".
pub fn int(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `s` with every control character but the line break shown as a space: text from a document,
/// a file name or a model cannot move the cursor, recolour or retitle the terminal (ESC, CSI,
/// OSC and BEL are control characters). Widths stay: a space is as wide as nothing a control
/// would have drawn.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(|c| c.is_control() && c != '\n') {
        s.chars()
            .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
            .collect::<String>()
            .into()
    } else {
        s.into()
    }
}

/// JSON text with the control characters that serde_json leaves raw (DEL and the C1 range,
/// which a terminal may take as CSI) written as `\u` escapes: same JSON, safe on a terminal.
pub fn json_escape_controls(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses a token count as the command line writes it: `1500`, `2k` (k = 1024).
pub fn parse_length(s: &str) -> std::result::Result<usize, String> {
    let t = s.trim().to_lowercase();
    let (num, mul) = match t.strip_suffix('k') {
        Some(n) => (n, 1024),
        None => (t.as_str(), 1),
    };
    num.parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| {
            format!("bad length '{s}': use a positive number of tokens like 1500 or 2k (= 2048)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mib_rounds_to_one_decimal() {
        assert_eq!(mib(0), "0.0 MiB");
        assert_eq!(mib(1048576 * 3 / 2), "1.5 MiB");
        assert_eq!(mib_number(10 * 1048576), "10.0");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let hostile = "red\x1b[31m bell\x07 osc\x1b]0;title\x07 csi\u{9b}2J cr\rline\nnext\tend";
        let p = printable(hostile);
        assert!(!p.chars().any(|c| c.is_control() && c != '\n'), "{p:?}");
        assert_eq!(p.lines().count(), 2, "line breaks stay");
        assert!(p.contains("red [31m") && p.ends_with("next end"), "{p:?}");
        assert!(matches!(printable("plain"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn lengths_parse_with_clear_errors() {
        assert_eq!(parse_length("2k"), Ok(2048));
        assert_eq!(parse_length(" 1500 "), Ok(1500));
        assert!(parse_length("0").unwrap_err().contains("2k"));
        assert!(parse_length("two").is_err());
        assert!(parse_length(&format!("{}k", usize::MAX)).is_err());
    }
}
