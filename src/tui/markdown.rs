//! Markdown-lite for answers (headings, lists, quotes, code blocks, bold/italic/code spans,
//! a `<think>` block) and the word wrapping that both the chat and the document pane use.

use std::ops::Range;

use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use unicode_width::UnicodeWidthChar;

use super::theme::Theme;

/// Cells a character takes; control characters are drawn as one space.
pub fn char_width(c: char) -> usize {
    if c.is_control() {
        1
    } else {
        c.width().unwrap_or(1)
    }
}

pub fn str_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// Word-wraps one line (no `\n`) to `width` cells: byte ranges of `s`, one per screen line.
/// Breaks after a space when it can, inside a word when the word alone is too long; spaces at
/// a break stay on the line they end (so every byte belongs to exactly one line).
pub fn wrap_ranges(s: &str, width: usize) -> Vec<Range<usize>> {
    let width = width.max(1);
    let mut out = Vec::new();
    let (mut start, mut w) = (0, 0);
    let mut after_space: Option<usize> = None;
    for (i, c) in s.char_indices() {
        let cw = char_width(c);
        if c == ' ' && w + cw > width {
            // A space that does not fit hangs past the edge instead of starting the next line.
            after_space = Some(i + 1);
            continue;
        }
        if w + cw > width && w > 0 {
            let cut = after_space.filter(|&b| b > start).unwrap_or(i);
            out.push(start..cut);
            start = cut;
            w = str_width(&s[cut..i]);
            after_space = None;
        }
        w += cw;
        if c == ' ' {
            after_space = Some(i + 1);
        }
    }
    out.push(start..s.len());
    out
}

/// Text for one screen line: control characters (tabs, stray escapes) and line breaks drawn
/// as spaces ([`crate::units::printable`]).
pub fn printable(s: &str) -> String {
    crate::units::printable(s).replace('\n', " ")
}

/// Wraps styled text behind a first-line prefix and a continuation prefix of the same width.
fn wrap_styled(
    first: Span<'static>,
    cont: Span<'static>,
    spans: &[(String, Style)],
    width: usize,
    out: &mut Vec<Line<'static>>,
) {
    let text: String = spans.iter().map(|(t, _)| t.as_str()).collect();
    let avail = width.saturating_sub(first.width()).max(1);
    let mut bounds = Vec::with_capacity(spans.len());
    let mut at = 0;
    for (t, s) in spans {
        bounds.push((at..at + t.len(), *s));
        at += t.len();
    }
    for (n, r) in wrap_ranges(&text, avail).into_iter().enumerate() {
        let mut line = vec![if n == 0 { first.clone() } else { cont.clone() }];
        for (b, style) in &bounds {
            let (lo, hi) = (b.start.max(r.start), b.end.min(r.end));
            if lo < hi {
                line.push(Span::styled(printable(&text[lo..hi]), *style));
            }
        }
        out.push(Line::from(line));
    }
}

/// Inline spans: `**bold**`, `*italic*` / `_italic_`, `` `code` ``; unmatched markers stay text.
pub fn inline(s: &str, base: Style, theme: &Theme) -> Vec<(String, Style)> {
    let mut out: Vec<(String, Style)> = Vec::new();
    let mut plain = String::new();
    let mut rest = s;
    let flush = |plain: &mut String, out: &mut Vec<(String, Style)>| {
        if !plain.is_empty() {
            out.push((std::mem::take(plain), base));
        }
    };
    while let Some(c) = rest.chars().next() {
        let found = match c {
            '`' => rest[1..]
                .find('`')
                .map(|e| (1, e + 1, 1, theme.code.patch(base))),
            '*' if rest.starts_with("**") => rest[2..]
                .find("**")
                .filter(|&e| e > 0)
                .map(|e| (2, e + 2, 2, base.add_modifier(Modifier::BOLD))),
            '*' | '_' => {
                let word_start =
                    plain.is_empty() || plain.ends_with(|p: char| !p.is_alphanumeric());
                let next_ok = rest[1..].starts_with(|n: char| !n.is_whitespace());
                rest[1..]
                    .find(c)
                    .filter(|&e| e > 0 && word_start && next_ok)
                    .map(|e| (1, e + 1, 1, base.add_modifier(Modifier::ITALIC)))
            }
            _ => None,
        };
        match found {
            Some((open, end, close, style)) => {
                flush(&mut plain, &mut out);
                out.push((rest[open..end].to_string(), style));
                rest = &rest[end + close..];
            }
            None => {
                plain.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    flush(&mut plain, &mut out);
    out
}

/// Splits an answer into (thinking, answer). The thinking part is `Some` once `<think>`
/// appeared, even while it is still streaming without its closing tag.
pub fn split_thinking(text: &str) -> (Option<&str>, &str) {
    let trimmed = text.trim_start();
    let Some(after) = trimmed.strip_prefix("<think>") else {
        return (None, text);
    };
    match after.find("</think>") {
        Some(end) => (Some(&after[..end]), &after[end + "</think>".len()..]),
        None => (Some(after), ""),
    }
}

/// An answer as screen lines of at most `width` cells.
pub fn render(text: &str, width: usize, show_thinking: bool, theme: &Theme) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    let (thinking, answer) = split_thinking(text);
    if let Some(t) = thinking {
        let words = t.split_whitespace().count();
        if show_thinking {
            out.push(Line::styled("▾ thinking", theme.thinking));
            for l in t.trim().lines() {
                let spans = vec![(l.to_string(), theme.thinking)];
                let bar = Span::styled("│ ", theme.thinking);
                wrap_styled(bar.clone(), bar, &spans, width, &mut out);
            }
        } else {
            out.push(Line::styled(
                format!("▸ thinking ({words} words, F8 shows)"),
                theme.thinking,
            ));
        }
    }
    blocks(answer.trim_start_matches('\n'), width, theme, &mut out);
    out
}

fn blocks(text: &str, width: usize, theme: &Theme, out: &mut Vec<Line<'static>>) {
    let mut in_code = false;
    for raw in text.lines() {
        let line = raw.trim_end();
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            let pad = Span::styled("  ", theme.code);
            wrap_styled(
                pad.clone(),
                pad,
                &[(line.to_string(), theme.code)],
                width,
                out,
            );
            continue;
        }
        let body = line.trim_start();
        let indent = " ".repeat((line.len() - body.len()).min(8));
        if body.is_empty() {
            out.push(Line::default());
        } else if let Some((level, title)) = heading(body) {
            let style = if level == 1 {
                theme.heading.add_modifier(Modifier::UNDERLINED)
            } else {
                theme.heading
            };
            wrap_styled(
                Span::raw(""),
                Span::raw(""),
                &inline(title, style, theme),
                width,
                out,
            );
        } else if let Some(item) = ["- ", "* ", "+ "].iter().find_map(|b| body.strip_prefix(b)) {
            let first = Span::styled(format!("{indent}• "), theme.accent);
            let cont = Span::raw(" ".repeat(indent.len() + 2));
            wrap_styled(
                first,
                cont,
                &inline(item, Style::default(), theme),
                width,
                out,
            );
        } else if let Some((num, item)) = numbered(body) {
            let first = Span::styled(format!("{indent}{num} "), theme.accent);
            let cont = Span::raw(" ".repeat(indent.len() + num.len() + 1));
            wrap_styled(
                first,
                cont,
                &inline(item, Style::default(), theme),
                width,
                out,
            );
        } else if let Some(q) = body.strip_prefix('>') {
            let bar = Span::styled("│ ", theme.thinking);
            wrap_styled(
                bar.clone(),
                bar,
                &inline(q.trim_start(), theme.thinking, theme),
                width,
                out,
            );
        } else {
            let pre = Span::raw(indent.clone());
            wrap_styled(
                pre.clone(),
                pre,
                &inline(body, Style::default(), theme),
                width,
                out,
            );
        }
    }
}

fn heading(s: &str) -> Option<(usize, &str)> {
    let level = s.chars().take_while(|&c| c == '#').count();
    (1..=6)
        .contains(&level)
        .then(|| s[level..].strip_prefix(' '))
        .flatten()
        .map(|t| (level, t.trim()))
}

fn numbered(s: &str) -> Option<(&str, &str)> {
    let digits = s.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 || digits > 3 {
        return None;
    }
    let rest = &s[digits..];
    let item = rest
        .strip_prefix(". ")
        .or_else(|| rest.strip_prefix(") "))?;
    Some((&s[..digits + 1], item))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
            .collect()
    }

    #[test]
    fn wrap_breaks_at_spaces_and_inside_long_words() {
        let s = "the quick brown fox";
        let lines: Vec<&str> = wrap_ranges(s, 10).into_iter().map(|r| &s[r]).collect();
        assert_eq!(lines, ["the quick ", "brown fox"]);
        let lines: Vec<&str> = wrap_ranges("abcdefghij", 4)
            .into_iter()
            .map(|r| &"abcdefghij"[r])
            .collect();
        assert_eq!(lines, ["abcd", "efgh", "ij"]);
        assert_eq!(wrap_ranges("", 5), vec![0..0]);
        // Wide characters count two cells.
        assert_eq!(wrap_ranges("日本語", 4).len(), 2);
    }

    #[test]
    fn markdown_blocks_and_inline_styles() {
        let t = Theme::default();
        let md = "# Title\n\nSome **bold** and *it* and `x*y`.\n- one\n- two that wraps around\n2. second\n```\nlet a = 1;\n```";
        let lines = render(md, 20, false, &t);
        let text = plain(&lines);
        assert_eq!(text[0], "Title");
        assert!(
            lines[0].spans[1]
                .style
                .add_modifier
                .contains(Modifier::BOLD)
        );
        assert_eq!(text[2], "Some bold and it and ");
        let bold = lines[2].spans.iter().find(|s| s.content == "bold").unwrap();
        assert!(bold.style.add_modifier.contains(Modifier::BOLD));
        let it = lines[2].spans.iter().find(|s| s.content == "it").unwrap();
        assert!(it.style.add_modifier.contains(Modifier::ITALIC));
        assert_eq!(text[3], "x*y.");
        assert_eq!(text[4], "• one");
        assert_eq!(text[5], "• two that wraps ");
        assert_eq!(text[6], "  around");
        assert_eq!(text[7], "2. second");
        assert_eq!(text[8], "  let a = 1;");
        assert_eq!(text.len(), 9);
        // Unmatched markers are text, and snake_case stays intact.
        assert_eq!(
            plain(&render("2 * 3 and a_b_c", 40, false, &t)),
            ["2 * 3 and a_b_c"]
        );
    }

    #[test]
    fn thinking_is_collapsible_and_may_be_unterminated() {
        let t = Theme::default();
        assert_eq!(
            split_thinking("<think>hmm, well</think>\n52 metres"),
            (Some("hmm, well"), "\n52 metres")
        );
        assert_eq!(
            split_thinking("<think>still going"),
            (Some("still going"), "")
        );
        assert_eq!(split_thinking("no tags"), (None, "no tags"));
        let shut = plain(&render("<think>a b c</think>\nAnswer", 40, false, &t));
        assert_eq!(shut, ["▸ thinking (3 words, F8 shows)", "Answer"]);
        let open = plain(&render("<think>a b c</think>\nAnswer", 40, true, &t));
        assert_eq!(open, ["▾ thinking", "│ a b c", "Answer"]);
    }
}
