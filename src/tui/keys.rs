//! The key map as data: [`KEYMAP`] lists every help row with the chords it binds, its `:`
//! command and its letter in a pane, so the help overlay, [`action`] and [`pane_action`] read
//! the same table and cannot drift apart. A new binding is one row (or one chord in a row)
//! here; a new `:` command is parsed in [`commands`](super::commands).

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::panes::recipe::RecipeKnob;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ctrl-C: stop what runs; again, or when nothing runs, quit (saving the conversation).
    Interrupt,
    /// Esc: cancel the running answer or read, skip a comparison's recipe, close the help,
    /// leave a pane.
    Cancel,
    Help,
    Save,
    Send,
    Newline,
    Char(char),
    Backspace,
    Delete,
    DeleteWord,
    ClearInput,
    Left,
    Right,
    Home,
    End,
    Up,
    Down,
    PageUp,
    PageDown,
    FocusNext,
    /// F2–F7: one recipe control.
    Recipe(RecipeKnob),
    ThinkingBlocks,
    /// F9: the last question under every named preset, side by side.
    Compare,
    /// Ctrl-Y: the last answer to the terminal's clipboard (OSC 52).
    Copy,
    /// Ctrl-G: the document pane to the next page the last answer cites, highlighted.
    Cite,
}

/// Which modifiers a chord needs. Chords that need one are tried before those that do not,
/// so Alt-Enter is a new line and Ctrl-A a cursor move while plain Enter and A are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mods {
    /// Whatever is held (Ctrl-Left is Left).
    Any,
    Ctrl,
    AltOrShift,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chord {
    pub code: KeyCode,
    pub mods: Mods,
}

const fn key(code: KeyCode) -> Chord {
    Chord {
        code,
        mods: Mods::Any,
    }
}

const fn ctrl(c: char) -> Chord {
    Chord {
        code: KeyCode::Char(c),
        mods: Mods::Ctrl,
    }
}

/// One row of the help overlay: the keys as shown, what they do, and the chords bound to
/// actions (none where the row explains keys bound in another row, the mouse, or a setting
/// only a command reaches); the `:` command that does the same, and the letter that does it
/// while a pane (not the question) has the focus — terminals, tmux and macOS grab F-keys.
pub struct Binding {
    pub keys: &'static str,
    pub what: &'static str,
    pub chords: &'static [(Chord, Action)],
    pub command: &'static str,
    pub letter: Option<char>,
}

const fn row(
    keys: &'static str,
    what: &'static str,
    chords: &'static [(Chord, Action)],
) -> Binding {
    Binding {
        keys,
        what,
        chords,
        command: "",
        letter: None,
    }
}

impl Binding {
    const fn cmd(self, command: &'static str) -> Binding {
        Binding { command, ..self }
    }

    const fn letter(self, c: char) -> Binding {
        Binding {
            letter: Some(c),
            ..self
        }
    }
}

/// Every binding, in the order the help shows them. Plain characters type into the question
/// (and `?` on an empty question opens the help); those need no row.
pub const KEYMAP: &[Binding] = &[
    row(
        "Enter",
        "send the question",
        &[(key(KeyCode::Enter), Action::Send)],
    ),
    row(
        "Alt-Enter Shift-Enter Ctrl-J",
        "new line in the question",
        &[
            (
                Chord {
                    code: KeyCode::Enter,
                    mods: Mods::AltOrShift,
                },
                Action::Newline,
            ),
            (ctrl('j'), Action::Newline),
        ],
    ),
    row(
        "Up Down",
        "move between lines; past the ends: question history",
        &[
            (key(KeyCode::Up), Action::Up),
            (key(KeyCode::Down), Action::Down),
        ],
    ),
    row(
        "Left Right Home End",
        "move the cursor (Ctrl-A/Ctrl-E: line start/end)",
        &[
            (key(KeyCode::Left), Action::Left),
            (key(KeyCode::Right), Action::Right),
            (key(KeyCode::Home), Action::Home),
            (key(KeyCode::End), Action::End),
            (ctrl('a'), Action::Home),
            (ctrl('e'), Action::End),
        ],
    ),
    row(
        "Backspace Del Ctrl-W Ctrl-U",
        "delete a character, a word, the question",
        &[
            (key(KeyCode::Backspace), Action::Backspace),
            (key(KeyCode::Delete), Action::Delete),
            (ctrl('w'), Action::DeleteWord),
            (ctrl('u'), Action::ClearInput),
        ],
    ),
    row(
        "PgUp PgDn",
        "scroll the chat (or the focused pane)",
        &[
            (key(KeyCode::PageUp), Action::PageUp),
            (key(KeyCode::PageDown), Action::PageDown),
        ],
    ),
    row(
        "Tab",
        "focus: question → document → chat",
        &[
            (key(KeyCode::Tab), Action::FocusNext),
            (key(KeyCode::BackTab), Action::FocusNext),
        ],
    ),
    row(
        "Up Down Home End",
        "in a pane: scroll, top, follow reading / newest",
        &[],
    ),
    row("mouse wheel", "scroll the pane under the pointer", &[]),
    row(
        "F2",
        "window: ¼×, ½×, 1×, 2×, 4× the default, full",
        &[(key(KeyCode::F(2)), Action::Recipe(RecipeKnob::Window))],
    )
    .cmd(":window N|full")
    .letter('w'),
    row(
        "F3",
        "sink tokens on/off",
        &[(key(KeyCode::F(3)), Action::Recipe(RecipeKnob::Sink))],
    )
    .cmd(":sink N|off")
    .letter('k'),
    row(
        "F4",
        "FA decode on/off (applies at once)",
        &[(key(KeyCode::F(4)), Action::Recipe(RecipeKnob::FaDecode))],
    )
    .cmd(":fa-decode on|off")
    .letter('f'),
    row(
        "F5",
        "full layers: none → odd → every 4th",
        &[(key(KeyCode::F(5)), Action::Recipe(RecipeKnob::Interleave))],
    )
    .cmd(":full-layers none|odd|every:N|1,5,9")
    .letter('l'),
    row(
        "F6",
        "thinking mode on/off",
        &[(key(KeyCode::F(6)), Action::Recipe(RecipeKnob::Think))],
    )
    .cmd(":think on|off")
    .letter('t'),
    row(
        "F7",
        "next named preset",
        &[(key(KeyCode::F(7)), Action::Recipe(RecipeKnob::Preset))],
    )
    .cmd(":preset NAME")
    .letter('p'),
    row(
        "F8",
        "show/hide thinking blocks",
        &[(key(KeyCode::F(8)), Action::ThinkingBlocks)],
    )
    .cmd(":blocks")
    .letter('b'),
    row(
        "F9",
        "compare: the last (or given) question under every preset",
        &[(key(KeyCode::F(9)), Action::Compare)],
    )
    .cmd(":eval [question]")
    .letter('e'),
    row(
        "Esc",
        "cancel the answer or read; skip a comparison's recipe; close",
        &[(key(KeyCode::Esc), Action::Cancel)],
    ),
    row(
        "Ctrl-C",
        "stop the answer, read or comparison; again (or idle) quit, saving",
        &[(ctrl('c'), Action::Interrupt)],
    )
    .cmd(":quit"),
    row(
        "Ctrl-S",
        "save the conversation (and comparisons) as Markdown",
        &[(ctrl('s'), Action::Save)],
    )
    .cmd(":save"),
    row(
        "Ctrl-Y",
        "copy the last answer to the clipboard (OSC 52)",
        &[(ctrl('y'), Action::Copy)],
    )
    .cmd(":copy")
    .letter('y'),
    row(
        "Ctrl-G",
        "show the next page the last answer cites (book mode), highlighted",
        &[(ctrl('g'), Action::Cite)],
    )
    .cmd(":cite")
    .letter('g'),
    row("", "read part of the document (no range: the choices)", &[])
        .cmd(":pages A-B|head|tail|all"),
    row("", "reopen on another model (the document stays)", &[]).cmd(":model NAME"),
    row("", "reopen on another device", &[]).cmd(":device cpu|cuda"),
    row("", "reopen with another context length (RoPE scaling)", &[]).cmd(":ctx N"),
    row("", "mouse capture for the wheel (off: select text)", &[]).cmd(":mouse [on|off]"),
    row(
        "F1  ? (empty question)",
        "this help (Up/Down scroll it)",
        &[(key(KeyCode::F(1)), Action::Help)],
    )
    .cmd(":help")
    .letter('?'),
];

impl Mods {
    fn held(self, m: KeyModifiers) -> bool {
        match self {
            Mods::Any => true,
            Mods::Ctrl => m.contains(KeyModifiers::CONTROL),
            Mods::AltOrShift => m.intersects(KeyModifiers::ALT | KeyModifiers::SHIFT),
        }
    }
}

/// The action for a key press; None for keys without a binding (and for releases).
pub fn action(key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let chords = || KEYMAP.iter().flat_map(|b| b.chords);
    let bound = |c: &Chord| c.code == key.code && c.mods.held(key.modifiers);
    let found = chords()
        .find(|(c, _)| c.mods != Mods::Any && bound(c))
        .or_else(|| chords().find(|(c, _)| c.mods == Mods::Any && bound(c)));
    if let Some((_, a)) = found {
        return Some(*a);
    }
    match key.code {
        KeyCode::Char(_) if key.modifiers.contains(KeyModifiers::CONTROL) => None,
        KeyCode::Char(c) => Some(Action::Char(c)),
        _ => None,
    }
}

/// The action of a letter while a pane has the focus (the row's first chord), if a row binds it.
pub fn pane_action(c: char) -> Option<Action> {
    KEYMAP
        .iter()
        .find(|b| b.letter == Some(c))
        .and_then(|b| b.chords.first())
        .map(|(_, a)| *a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(c: &Chord) -> KeyEvent {
        let mods = match c.mods {
            Mods::Any => KeyModifiers::NONE,
            Mods::Ctrl => KeyModifiers::CONTROL,
            Mods::AltOrShift => KeyModifiers::ALT,
        };
        KeyEvent::new(c.code, mods)
    }

    #[test]
    fn every_chord_in_the_table_reaches_its_own_action() {
        // A chord shadowed by an earlier row would do something other than its help says.
        for b in KEYMAP {
            for (c, a) in b.chords {
                assert_eq!(action(press(c)), Some(*a), "{} ({c:?})", b.keys);
            }
        }
    }

    #[test]
    fn every_letter_is_bound_once_and_does_what_its_row_does() {
        let letters: Vec<char> = KEYMAP.iter().filter_map(|b| b.letter).collect();
        let mut unique = letters.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), letters.len(), "{letters:?}");
        for b in KEYMAP.iter().filter(|b| b.letter.is_some()) {
            assert_eq!(
                pane_action(b.letter.unwrap()),
                Some(b.chords[0].1),
                "{}",
                b.keys
            );
            assert!(
                !b.command.is_empty(),
                "{}: a letter row has a command too",
                b.keys
            );
        }
        assert_eq!(pane_action('z'), None);
    }

    #[test]
    fn modifiers_pick_the_binding_and_plain_characters_type() {
        let k = |code, m| action(KeyEvent::new(code, m));
        assert_eq!(
            k(KeyCode::Enter, KeyModifiers::SHIFT),
            Some(Action::Newline)
        );
        assert_eq!(k(KeyCode::Enter, KeyModifiers::CONTROL), Some(Action::Send));
        assert_eq!(k(KeyCode::Left, KeyModifiers::CONTROL), Some(Action::Left));
        assert_eq!(
            k(KeyCode::Char('a'), KeyModifiers::NONE),
            Some(Action::Char('a'))
        );
        assert_eq!(
            k(KeyCode::Char('A'), KeyModifiers::SHIFT),
            Some(Action::Char('A'))
        );
        assert_eq!(k(KeyCode::Char('x'), KeyModifiers::CONTROL), None);
        assert_eq!(k(KeyCode::F(12), KeyModifiers::NONE), None);
        let release = KeyEvent {
            kind: KeyEventKind::Release,
            ..KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)
        };
        assert_eq!(action(release), None);
    }
}
