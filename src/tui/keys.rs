//! The key map: terminal keys to [`Action`]s, and the help text that lists every binding.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::app::RecipeKnob;

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

/// Every binding as shown in the help overlay: keys, then what they do.
pub const HELP: &[(&str, &str)] = &[
    ("Enter", "send the question"),
    ("Alt-Enter Shift-Enter Ctrl-J", "new line in the question"),
    (
        "Up Down",
        "move between lines; past the ends: question history",
    ),
    (
        "Left Right Home End",
        "move the cursor (Ctrl-A/Ctrl-E: line start/end)",
    ),
    (
        "Backspace Del Ctrl-W Ctrl-U",
        "delete a character, a word, the question",
    ),
    ("PgUp PgDn", "scroll the chat (or the focused pane)"),
    ("Tab", "focus: question → document → chat"),
    (
        "Up Down Home End",
        "in a pane: scroll, top, follow reading / newest",
    ),
    ("mouse wheel", "scroll the pane under the pointer"),
    ("F2", "window: ¼×, ½×, 1×, 2×, 4× the default, full"),
    ("F3", "sink tokens on/off"),
    ("F4", "FA decode on/off (applies at once)"),
    ("F5", "full layers: none → odd → every 4th"),
    ("F6", "thinking mode on/off"),
    ("F7", "next named preset"),
    ("F8", "show/hide thinking blocks"),
    (
        "F9  :eval [question]",
        "compare: the last (or given) question under every preset",
    ),
    ("Esc", "cancel the answer, read or comparison; close it"),
    ("Ctrl-S", "save the conversation as Markdown"),
    ("F1  ? (empty question)", "this help"),
    ("Ctrl-C", "quit"),
];

/// The action for a key press; None for keys without a binding (and for releases).
pub fn action(key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let alt = key.modifiers.contains(KeyModifiers::ALT);
    let shift = key.modifiers.contains(KeyModifiers::SHIFT);
    Some(match key.code {
        KeyCode::Char('c') if ctrl => Action::Quit,
        KeyCode::Char('s') if ctrl => Action::Save,
        KeyCode::Char('j') if ctrl => Action::Newline,
        KeyCode::Char('w') if ctrl => Action::DeleteWord,
        KeyCode::Char('u') if ctrl => Action::ClearInput,
        KeyCode::Char('a') if ctrl => Action::Home,
        KeyCode::Char('e') if ctrl => Action::End,
        KeyCode::Char(_) if ctrl => return None,
        KeyCode::Char(c) => Action::Char(c),
        KeyCode::Enter if alt || shift => Action::Newline,
        KeyCode::Enter => Action::Send,
        KeyCode::Esc => Action::Cancel,
        KeyCode::Backspace => Action::Backspace,
        KeyCode::Delete => Action::Delete,
        KeyCode::Left => Action::Left,
        KeyCode::Right => Action::Right,
        KeyCode::Home => Action::Home,
        KeyCode::End => Action::End,
        KeyCode::Up => Action::Up,
        KeyCode::Down => Action::Down,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Tab | KeyCode::BackTab => Action::FocusNext,
        KeyCode::F(1) => Action::Help,
        KeyCode::F(2) => Action::Recipe(RecipeKnob::Window),
        KeyCode::F(3) => Action::Recipe(RecipeKnob::Sink),
        KeyCode::F(4) => Action::Recipe(RecipeKnob::FaDecode),
        KeyCode::F(5) => Action::Recipe(RecipeKnob::Interleave),
        KeyCode::F(6) => Action::Recipe(RecipeKnob::Think),
        KeyCode::F(7) => Action::Recipe(RecipeKnob::Preset),
        KeyCode::F(8) => Action::ThinkingBlocks,
        KeyCode::F(9) => Action::Compare,
        _ => return None,
    })
}
