//! `:` commands typed in the question box: everything the F-keys do, and the settings that
//! are otherwise launch flags (`:model`, `:device`, `:ctx`, `:pages`). The help lists them
//! from the key map ([`KEYMAP`](super::keys::KEYMAP)'s `command` column); this parses them.

use crate::document::SectionRange;
use crate::recipe::{LayerSet, Preset};
use crate::units::parse_length;

/// Which part of the document to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartArg {
    /// No argument: show the choices.
    Choices,
    Range(SectionRange),
    /// As much from the start (or the end) as fits the context.
    Head,
    Tail,
    /// The whole document.
    All,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cmd {
    /// `None`: full attention.
    Window(Option<usize>),
    Sink(usize),
    Preset(Preset),
    FaDecode(bool),
    FullLayers(LayerSet),
    Think(bool),
    Blocks,
    Eval(Option<String>),
    Save,
    Copy,
    Cite,
    Quit,
    Help,
    /// `None` toggles.
    Mouse(Option<bool>),
    Pages(PartArg),
    Model(String),
    Device(String),
    Ctx(usize),
}

fn on_off(name: &str, arg: &str) -> Result<bool, String> {
    match arg {
        "on" | "yes" | "true" | "1" => Ok(true),
        "off" | "no" | "false" | "0" => Ok(false),
        _ => Err(format!(":{name} takes on or off, e.g. :{name} on")),
    }
}

/// Parses `line` (starting with `:`); the error says what the command takes.
pub fn parse(line: &str) -> Result<Cmd, String> {
    let body = line.trim().trim_start_matches(':');
    let (name, arg) = match body.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (body, ""),
    };
    let need = |what: &str| -> Result<&str, String> {
        if arg.is_empty() {
            Err(format!(":{name} needs {what}"))
        } else {
            Ok(arg)
        }
    };
    Ok(match name {
        "window" | "w" => match need("a size or full, e.g. :window 4096")? {
            "full" | "off" | "none" => Cmd::Window(None),
            n => Cmd::Window(Some(parse_length(n)?)),
        },
        "sink" => match need("a token count or off, e.g. :sink 64")? {
            "off" | "none" => Cmd::Sink(0),
            n => Cmd::Sink(n.parse().map_err(|_| {
                format!("bad sink '{n}': use a number of tokens, e.g. :sink 64, or :sink off")
            })?),
        },
        "preset" | "recipe" => Cmd::Preset(need("a preset name, e.g. :preset swaa")?.parse()?),
        "fa-decode" | "fadec" => Cmd::FaDecode(on_off(name, need("on or off")?)?),
        "full-layers" | "layers" => {
            Cmd::FullLayers(need("none, odd, every:N or a list like 1,5,9")?.parse()?)
        }
        "think" | "thinking" => Cmd::Think(on_off(name, need("on or off")?)?),
        "blocks" => Cmd::Blocks,
        "eval" | "compare" => Cmd::Eval((!arg.is_empty()).then(|| arg.to_string())),
        "save" => Cmd::Save,
        "copy" => Cmd::Copy,
        "cite" | "cites" | "evidence" => Cmd::Cite,
        "quit" | "q" => Cmd::Quit,
        "help" | "h" | "keys" => Cmd::Help,
        "mouse" => Cmd::Mouse(if arg.is_empty() {
            None
        } else {
            Some(on_off(name, arg)?)
        }),
        "pages" | "chapters" | "sections" | "part" => Cmd::Pages(match arg {
            "" => PartArg::Choices,
            "head" | "start" | "beginning" => PartArg::Head,
            "tail" | "end" => PartArg::Tail,
            "all" | "whole" => PartArg::All,
            r => PartArg::Range(r.parse()?),
        }),
        "model" => Cmd::Model(need("a preset name or a path, e.g. :model smollm2-135m")?.into()),
        "device" => match need("cpu or cuda")? {
            d @ ("cpu" | "cuda" | "metal") => Cmd::Device(d.into()),
            d if d.starts_with("cuda:") => Cmd::Device(d.into()),
            d => return Err(format!("unknown device '{d}': use cpu or cuda (cuda:N)")),
        },
        "ctx" | "context" => Cmd::Ctx(parse_length(need("a context length, e.g. :ctx 65536")?)?),
        "" => return Err("a command after ':' — :help lists them".into()),
        other => {
            return Err(format!(
                "unknown command ':{other}': :help lists the commands"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_as_the_help_writes_them() {
        let p = |s: &str| parse(s);
        assert_eq!(p(":window 4096"), Ok(Cmd::Window(Some(4096))));
        assert_eq!(p(":window 2k"), Ok(Cmd::Window(Some(2048))));
        assert_eq!(p(":window full"), Ok(Cmd::Window(None)));
        assert_eq!(p(":sink 64"), Ok(Cmd::Sink(64)));
        assert_eq!(p(":sink off"), Ok(Cmd::Sink(0)));
        assert_eq!(p(":preset swaa"), Ok(Cmd::Preset(Preset::Swaa)));
        assert_eq!(p(":fa-decode on"), Ok(Cmd::FaDecode(true)));
        assert_eq!(
            p(":full-layers odd"),
            Ok(Cmd::FullLayers(LayerSet::Every(2)))
        );
        assert_eq!(p(":think off"), Ok(Cmd::Think(false)));
        assert_eq!(
            p(":model smollm2-135m"),
            Ok(Cmd::Model("smollm2-135m".into()))
        );
        assert_eq!(p(":device cuda"), Ok(Cmd::Device("cuda".into())));
        assert_eq!(p(":ctx 65536"), Ok(Cmd::Ctx(65536)));
        assert_eq!(
            p(":pages 40-120"),
            Ok(Cmd::Pages(PartArg::Range(SectionRange {
                first: 40,
                last: Some(120)
            })))
        );
        assert_eq!(p(":pages"), Ok(Cmd::Pages(PartArg::Choices)));
        assert_eq!(p(":pages tail"), Ok(Cmd::Pages(PartArg::Tail)));
        assert_eq!(p(":eval  Who?"), Ok(Cmd::Eval(Some("Who?".into()))));
        assert_eq!(p(":eval"), Ok(Cmd::Eval(None)));
        assert_eq!(p(":mouse"), Ok(Cmd::Mouse(None)));
        assert_eq!(p(":help"), Ok(Cmd::Help));
    }

    #[test]
    fn bad_commands_say_what_they_take() {
        let e = |s: &str| parse(s).unwrap_err();
        assert!(e(":window").contains(":window 4096"), "{}", e(":window"));
        assert!(e(":window big").contains("2k"));
        assert!(e(":fa-decode maybe").contains("on or off"));
        assert!(e(":preset fast").contains("swaa"));
        assert!(e(":pages 9-3").contains("first number"));
        assert!(e(":device tpu").contains("cpu or cuda"));
        assert!(e(":frobnicate").contains(":help"));
    }
}
