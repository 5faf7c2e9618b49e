//! Plain text and Markdown: decoding, and Markdown's sections (one per `#`/`##` heading).

use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};

use super::{Parsed, Part};

/// Text from bytes: UTF-8 or UTF-16 by BOM, else UTF-8, else the legacy encoding chardetng
/// guesses (Windows-1252, a superset of Latin-1's printable range, for most Western text).
/// CRLF and lone CR become LF. `None` for binary data.
pub(super) fn decode(bytes: &[u8]) -> Option<String> {
    let text = if let Some((enc, bom)) = encoding_rs::Encoding::for_bom(bytes) {
        if let Some(t) = utf32(&bytes[..4.min(bytes.len())], bytes) {
            t
        } else {
            enc.decode_without_bom_handling(&bytes[bom..])
                .0
                .into_owned()
        }
    } else if let Some(t) = utf32(&[], bytes).or_else(|| utf16_without_bom(bytes)) {
        t
    } else if let Ok(s) = std::str::from_utf8(bytes) {
        s.to_owned()
    } else {
        let mut detector = EncodingDetector::new(Iso2022JpDetection::Deny);
        detector.feed(bytes, true);
        let enc = detector.guess(None, Utf8Detection::Deny);
        tracing::info!("text is not UTF-8: decoding it as {}", enc.name());
        enc.decode_without_bom_handling(bytes).0.into_owned()
    };
    if looks_binary(&text) {
        return None;
    }
    Some(text.replace("\r\n", "\n").replace('\r', "\n"))
}

/// Text has almost no NULs or control characters; binary data decoded as a single-byte
/// encoding has plenty (an eighth of random bytes are below 0x20). Terminal controls (ESC,
/// BEL, BS, C1: logs and typescripts are full of them) and vertical tabs count as text; they
/// are neutralised when the document is assembled.
fn looks_binary(text: &str) -> bool {
    let (mut chars, mut controls, mut nuls) = (0usize, 0usize, 0usize);
    for c in text.chars() {
        chars += 1;
        nuls += usize::from(c == '\0');
        let terminal = matches!(c, '\x1b' | '\x07' | '\x08' | '\u{80}'..='\u{9f}');
        if c.is_control() && !terminal && !matches!(c, '\n' | '\r' | '\t' | '\x0b' | '\x0c') {
            controls += 1;
        }
    }
    nuls * 100 > chars || controls * 100 > chars
}

/// UTF-16 without a BOM, told by its NULs: in ASCII-heavy text every other byte is 0, on
/// the odd bytes for little-endian and the even ones for big-endian.
fn utf16_without_bom(bytes: &[u8]) -> Option<String> {
    let n = bytes.len().min(4096) & !1;
    if n < 8 {
        return None;
    }
    let zeros = |parity: usize| {
        bytes[..n]
            .iter()
            .skip(parity)
            .step_by(2)
            .filter(|&&b| b == 0)
            .count()
    };
    let (even, odd) = (zeros(0), zeros(1));
    let half = n / 2;
    let enc = if odd * 10 > half * 4 && even * 10 < half {
        encoding_rs::UTF_16LE
    } else if even * 10 > half * 4 && odd * 10 < half {
        encoding_rs::UTF_16BE
    } else {
        return None;
    };
    let (text, bad) = enc.decode_without_bom_handling(bytes);
    (!bad).then(|| text.into_owned())
}

/// UTF-32 (by its BOM, `bom` being the first four bytes, or by three NULs in every four
/// bytes), which encoding_rs does not decode.
fn utf32(bom: &[u8], bytes: &[u8]) -> Option<String> {
    let (le, skip) = match bom {
        [0xff, 0xfe, 0, 0] => (true, 4),
        [0, 0, 0xfe, 0xff] => (false, 4),
        [_, _, _, _] => return None,
        _ => {
            let n = bytes.len().min(4096) & !3;
            if n < 8 || !bytes.len().is_multiple_of(4) {
                return None;
            }
            let words = bytes[..n].chunks_exact(4);
            let le = words.clone().all(|w| w[3] == 0 && w[2] <= 0x10);
            let be = words.clone().all(|w| w[0] == 0 && w[1] <= 0x10);
            match (le, be) {
                (true, false) => (true, 0),
                (false, true) => (false, 0),
                _ => return None,
            }
        }
    };
    bytes[skip..]
        .chunks_exact(4)
        .map(|w| {
            let v = if le {
                u32::from_le_bytes([w[0], w[1], w[2], w[3]])
            } else {
                u32::from_be_bytes([w[0], w[1], w[2], w[3]])
            };
            char::from_u32(v)
        })
        .collect()
}

/// Plain text is one section; its title is the file name.
pub(super) fn plain(text: &str) -> Parsed {
    Parsed {
        title: None,
        parts: vec![Part {
            number: 1,
            title: None,
            text: text.to_string(),
        }],
    }
}

/// Markdown: a section per level-1 or level-2 heading (ATX `#`/`##` or setext `===`/`---`
/// underlines), outside fenced code; the first level-1 heading is the title.
pub(super) fn markdown(text: &str) -> Parsed {
    // Level-1 and level-2 headings: (byte offset where the heading starts, level, title).
    let mut heads: Vec<(usize, usize, String)> = Vec::new();
    let mut fence: Option<&str> = None;
    let mut prev: Option<(usize, &str)> = None; // previous line, if it can be a setext title
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let at = offset;
        offset += line.len();
        let l = line.trim_end();
        let t = l.trim_start();
        let indent = l.len() - t.len();
        if let Some(f) = fence {
            if t.starts_with(f) {
                fence = None;
            }
            prev = None;
            continue;
        }
        if indent < 4 && (t.starts_with("```") || t.starts_with("~~~")) {
            fence = Some(&t[..3]);
            prev = None;
            continue;
        }
        if indent < 4 {
            if let Some((level, title)) = atx_heading(t) {
                if level <= 2 {
                    heads.push((at, level, title));
                }
                prev = None;
                continue;
            }
            let underline = |c: char| t.len() >= 2 && t.chars().all(|x| x == c);
            if let Some((p_at, p_text)) = prev
                && (underline('=') || underline('-'))
            {
                let level = if underline('=') { 1 } else { 2 };
                heads.push((p_at, level, p_text.trim().to_string()));
                prev = None;
                continue;
            }
        }
        prev = (!t.is_empty() && indent < 4 && !t.starts_with(['-', '*', '>', '|']))
            .then_some((at, l));
    }
    let title = heads
        .iter()
        .find(|h| h.1 == 1)
        .map(|h| h.2.clone())
        .filter(|t| !t.is_empty());
    let mut parts = Vec::new();
    let mut cut = |start: usize, end: usize, title: Option<String>| {
        parts.push(Part {
            number: parts.len() + 1,
            title,
            text: text[start..end].to_string(),
        });
    };
    let first = heads.first().map_or(text.len(), |h| h.0);
    if !text[..first].trim().is_empty() {
        cut(0, first, None);
    }
    for (i, h) in heads.iter().enumerate() {
        let end = heads.get(i + 1).map_or(text.len(), |n| n.0);
        cut(h.0, end, Some(h.2.clone()).filter(|t| !t.is_empty()));
    }
    Parsed { title, parts }
}

/// `# Title` (levels 1–6; a closing run of `#` is dropped) → (level, title).
fn atx_heading(t: &str) -> Option<(usize, String)> {
    let level = t.bytes().take_while(|&b| b == b'#').count();
    let rest = &t[level..];
    if !(1..=6).contains(&level) || !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let title = rest.trim().trim_end_matches('#').trim_end();
    Some((level, title.to_string()))
}
