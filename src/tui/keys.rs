//! The key map as data: [`KEYMAP`] lists every help row with the chords it binds, so the
//! help overlay and [`action`] read the same table and cannot drift apart. A new binding is
//! one row (or one chord in a row) here.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::panes::recipe::RecipeKnob;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    /// Esc: cancel the running answer or read, close the help, leave a pane.
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
/// actions (none where the row explains keys bound in another row, or the mouse).
pub struct Binding {
    pub keys: &'static str,
    pub what: &'static str,
    pub chords: &'static [(Chord, Action)],
}

const fn row(
    keys: &'static str,
    what: &'static str,
    chords: &'static [(Chord, Action)],
) -> Binding {
    Binding { keys, what, chords }
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
    ),
    row(
        "F3",
        "sink tokens on/off",
        &[(key(KeyCode::F(3)), Action::Recipe(RecipeKnob::Sink))],
    ),
    row(
        "F4",
        "FA decode on/off (applies at once)",
        &[(key(KeyCode::F(4)), Action::Recipe(RecipeKnob::FaDecode))],
    ),
    row(
        "F5",
        "full layers: none → odd → every 4th",
        &[(key(KeyCode::F(5)), Action::Recipe(RecipeKnob::Interleave))],
    ),
    row(
        "F6",
        "thinking mode on/off",
        &[(key(KeyCode::F(6)), Action::Recipe(RecipeKnob::Think))],
    ),
    row(
        "F7",
        "next named preset",
        &[(key(KeyCode::F(7)), Action::Recipe(RecipeKnob::Preset))],
    ),
    row(
        "F8",
        "show/hide thinking blocks",
        &[(key(KeyCode::F(8)), Action::ThinkingBlocks)],
    ),
    row(
        "F9  :eval [question]",
        "compare: the last (or given) question under every preset",
        &[(key(KeyCode::F(9)), Action::Compare)],
    ),
    row(
        "Esc",
        "cancel the answer, read or comparison; close it",
        &[(key(KeyCode::Esc), Action::Cancel)],
    ),
    row(
        "Ctrl-S",
        "save the conversation as Markdown",
        &[(ctrl('s'), Action::Save)],
    ),
    row(
        "F1  ? (empty question)",
        "this help",
        &[(key(KeyCode::F(1)), Action::Help)],
    ),
    row("Ctrl-C", "quit", &[(ctrl('c'), Action::Quit)]),
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
