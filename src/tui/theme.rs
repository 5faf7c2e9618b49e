//! Colours and styles of the reader, read once from `[tui]` in config.toml; the panes and the
//! Markdown renderer draw with them.

use ratatui::style::{Color, Modifier, Style};

use crate::config::TuiConfig;

/// Colours and styles, from `[tui]` in config.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub accent: Style,
    pub window: Style,
    pub sink: Style,
    pub unread: Style,
    pub heading: Style,
    pub code: Style,
    pub thinking: Style,
    pub dim: Style,
    pub error: Style,
}

impl Default for Theme {
    fn default() -> Self {
        Theme::from_config(&TuiConfig::default()).expect("default colours parse")
    }
}

impl Theme {
    pub fn from_config(c: &TuiConfig) -> Result<Self, String> {
        let color = |key: &str, v: &str| {
            v.parse::<Color>().map_err(|_| {
                format!("config: tui.{key} = \"{v}\" is not a colour: use a name such as cyan, an index 0-255 or #rrggbb")
            })
        };
        let accent = color("accent_color", &c.accent_color)?;
        let dim = Style::default().fg(color("unread_color", &c.unread_color)?);
        Ok(Theme {
            accent: Style::default().fg(accent),
            window: Style::default()
                .bg(color("window_color", &c.window_color)?)
                .fg(Color::White),
            sink: Style::default()
                .bg(color("sink_color", &c.sink_color)?)
                .fg(Color::White),
            unread: dim,
            heading: Style::default().fg(accent).add_modifier(Modifier::BOLD),
            code: Style::default().fg(Color::Yellow),
            thinking: dim.add_modifier(Modifier::ITALIC),
            dim,
            error: Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        })
    }
}
