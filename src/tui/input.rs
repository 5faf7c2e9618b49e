//! The question box: a small multi-line editor (lines of text and a cursor), with history.
//! Written here rather than taken from a widget crate: the one well-kept crate lags ratatui's
//! releases, and this is all the editing a question needs.

/// Text as lines, the cursor as (line, char index). Always at least one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    lines: Vec<String>,
    row: usize,
    col: usize,
}

impl Default for Input {
    fn default() -> Self {
        Input {
            lines: vec![String::new()],
            row: 0,
            col: 0,
        }
    }
}

fn byte_at(s: &str, col: usize) -> usize {
    s.char_indices().nth(col).map_or(s.len(), |(i, _)| i)
}

fn char_len(s: &str) -> usize {
    s.chars().count()
}

impl Input {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// (line, char column) of the cursor.
    pub fn cursor(&self) -> (usize, usize) {
        (self.row, self.col)
    }

    pub fn is_empty(&self) -> bool {
        self.lines.len() == 1 && self.lines[0].is_empty()
    }

    /// Replaces the text; the cursor goes to its end.
    pub fn set_text(&mut self, text: &str) {
        self.lines = text.split('\n').map(str::to_string).collect();
        self.row = self.lines.len() - 1;
        self.col = char_len(&self.lines[self.row]);
    }

    pub fn clear(&mut self) {
        *self = Input::default();
    }

    pub fn insert_char(&mut self, c: char) {
        if c == '\n' {
            return self.newline();
        }
        let line = &mut self.lines[self.row];
        line.insert(byte_at(line, self.col), c);
        self.col += 1;
    }

    /// Pasted text: line breaks of any platform become new lines, tabs spaces, other control
    /// characters are dropped (they would garble the screen and the prompt).
    pub fn insert_str(&mut self, s: &str) {
        let s = s.replace("\r\n", "\n").replace('\r', "\n");
        for c in s.chars() {
            match c {
                '\n' => self.newline(),
                '\t' => self.insert_char(' '),
                c if c.is_control() => {}
                c => self.insert_char(c),
            }
        }
    }

    pub fn newline(&mut self) {
        let line = &mut self.lines[self.row];
        let rest = line.split_off(byte_at(line, self.col));
        self.lines.insert(self.row + 1, rest);
        self.row += 1;
        self.col = 0;
    }

    pub fn backspace(&mut self) {
        if self.col > 0 {
            let line = &mut self.lines[self.row];
            line.remove(byte_at(line, self.col - 1));
            self.col -= 1;
        } else if self.row > 0 {
            let line = self.lines.remove(self.row);
            self.row -= 1;
            self.col = char_len(&self.lines[self.row]);
            self.lines[self.row].push_str(&line);
        }
    }

    pub fn delete(&mut self) {
        let len = char_len(&self.lines[self.row]);
        if self.col < len {
            let line = &mut self.lines[self.row];
            line.remove(byte_at(line, self.col));
        } else if self.row + 1 < self.lines.len() {
            let next = self.lines.remove(self.row + 1);
            self.lines[self.row].push_str(&next);
        }
    }

    /// Deletes back to the start of the previous word (Ctrl-W in shells).
    pub fn delete_word(&mut self) {
        if self.col == 0 {
            return self.backspace();
        }
        let chars: Vec<char> = self.lines[self.row].chars().collect();
        let mut start = self.col;
        while start > 0 && chars[start - 1].is_whitespace() {
            start -= 1;
        }
        while start > 0 && !chars[start - 1].is_whitespace() {
            start -= 1;
        }
        let line = &mut self.lines[self.row];
        line.replace_range(byte_at(line, start)..byte_at(line, self.col), "");
        self.col = start;
    }

    pub fn left(&mut self) {
        if self.col > 0 {
            self.col -= 1;
        } else if self.row > 0 {
            self.row -= 1;
            self.col = char_len(&self.lines[self.row]);
        }
    }

    pub fn right(&mut self) {
        if self.col < char_len(&self.lines[self.row]) {
            self.col += 1;
        } else if self.row + 1 < self.lines.len() {
            self.row += 1;
            self.col = 0;
        }
    }

    pub fn home(&mut self) {
        self.col = 0;
    }

    pub fn end(&mut self) {
        self.col = char_len(&self.lines[self.row]);
    }

    /// Moves up a line; false on the first line (the caller then walks the history).
    pub fn up(&mut self) -> bool {
        if self.row == 0 {
            return false;
        }
        self.row -= 1;
        self.col = self.col.min(char_len(&self.lines[self.row]));
        true
    }

    /// Moves down a line; false on the last line.
    pub fn down(&mut self) -> bool {
        if self.row + 1 >= self.lines.len() {
            return false;
        }
        self.row += 1;
        self.col = self.col.min(char_len(&self.lines[self.row]));
        true
    }
}

/// Sent questions, newest last, and where Up/Down browsing stands.
#[derive(Debug, Clone, Default)]
pub struct History {
    entries: Vec<String>,
    /// Index into `entries` while browsing.
    pos: Option<usize>,
    /// What was being typed when browsing started, restored past the newest entry.
    draft: String,
}

impl History {
    pub fn push(&mut self, entry: &str) {
        if self.entries.last().map(String::as_str) != Some(entry) {
            self.entries.push(entry.to_string());
        }
        self.pos = None;
    }

    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    /// The entry before the one shown (or the newest), remembering `current` as the draft.
    pub fn older(&mut self, current: &str) -> Option<&str> {
        let pos = match self.pos {
            None if self.entries.is_empty() => return None,
            None => {
                self.draft = current.to_string();
                self.entries.len() - 1
            }
            Some(0) => 0,
            Some(p) => p - 1,
        };
        self.pos = Some(pos);
        Some(&self.entries[pos])
    }

    /// The entry after the one shown, or the draft past the newest; None when not browsing.
    pub fn newer(&mut self) -> Option<&str> {
        let p = self.pos?;
        if p + 1 < self.entries.len() {
            self.pos = Some(p + 1);
            Some(&self.entries[p + 1])
        } else {
            self.pos = None;
            Some(&self.draft)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editing_across_lines_keeps_text_and_cursor_consistent() {
        let mut i = Input::default();
        i.insert_str("héllo\r\nwörld");
        assert_eq!(i.text(), "héllo\nwörld");
        assert_eq!(i.cursor(), (1, 5));
        i.home();
        i.backspace();
        assert_eq!(i.text(), "héllowörld");
        assert_eq!(i.cursor(), (0, 5));
        i.newline();
        i.up();
        i.end();
        i.delete();
        assert_eq!(i.text(), "héllowörld");
        i.delete_word();
        assert_eq!(i.text(), "wörld");
        assert!(!i.up() && !i.down());
        i.insert_str("a\tb\u{7}");
        assert_eq!(i.text(), "a bwörld");
    }

    #[test]
    fn history_walks_back_and_returns_to_the_draft() {
        let mut h = History::default();
        assert_eq!(h.older("x"), None);
        h.push("one");
        h.push("two");
        h.push("two");
        assert_eq!(h.entries().len(), 2);
        assert_eq!(h.older("draft"), Some("two"));
        assert_eq!(h.older("two"), Some("one"));
        assert_eq!(h.older("one"), Some("one"));
        assert_eq!(h.newer(), Some("two"));
        assert_eq!(h.newer(), Some("draft"));
        assert_eq!(h.newer(), None);
    }
}
