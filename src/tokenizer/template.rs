//! Chat templates: a minijinja environment set up like transformers' (`trim_blocks`,
//! `lstrip_blocks`, `raise_exception`, `strftime_now`, a `tojson` that writes like Python's
//! `json.dumps`), so templates render as `apply_chat_template(tokenize=False)` would.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, Value as JinjaValue};
use minijinja::{Environment, ErrorKind};
use serde::Serialize;

use super::budget::OverBudget;

/// Instructions one render may run: a real chat template over a long conversation runs tens
/// of thousands; a template of nested `range(100000)` loops would run for hours.
const FUEL: u64 = 20_000_000;
/// Real chat templates are a few KiB (Qwen3's with tools ~4 KiB).
const MAX_TEMPLATE: usize = 256 << 10;
/// minijinja's parser recurses per nested expression (a 100,000-filter chain overflowed the
/// main thread's 8 MiB): templates compile on a thread with room for that.
const COMPILE_STACK: usize = 256 << 20;
/// Rendering recurses per nested macro call, up to minijinja's limit of 500.
const RENDER_STACK: usize = 64 << 20;
/// Heap a render may hold beyond a few copies of its messages: a real template's output is
/// its messages plus a few KiB of markup.
const RENDER_HEAP: usize = 256 << 20;
/// Real templates render in milliseconds; fuel does not count what a value's iteration does
/// (`{{ 1e9 * () }}` walks a billion empty sequences while it is printed).
const RENDER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// A compiled template, and why it cannot be rendered any more: a render that ran past its
/// heap budget or its deadline left a thread behind (stopped with that memory, or still
/// running), so it is not tried again.
pub(crate) struct Compiled {
    env: Environment<'static>,
    over_budget: OnceLock<String>,
}

/// Renders the template on a thread whose heap is bounded by [`super::budget`] (256 MiB plus
/// eight times the bytes of `input`, the messages) and its time by [`RENDER_DEADLINE`].
pub(crate) fn render(
    compiled: &Arc<Compiled>,
    ctx: BTreeMap<&'static str, JinjaValue>,
    input: usize,
) -> Result<String, minijinja::Error> {
    let failed = |msg: &str| minijinja::Error::new(ErrorKind::InvalidOperation, msg.to_string());
    if let Some(msg) = compiled.over_budget.get() {
        return Err(failed(msg));
    }
    let c = Arc::clone(compiled);
    let budget = RENDER_HEAP.saturating_add(input.saturating_mul(8));
    match super::budget::run(budget, RENDER_DEADLINE, RENDER_STACK, move || {
        c.env.get_template("chat")?.render(ctx)
    }) {
        Ok(Some(out)) => out,
        Ok(None) => Err(failed("the template renderer failed")),
        Err(over) => {
            let msg = match over {
                OverBudget::Heap { budget } => format!(
                    "the template built more than {} MiB of text (it doubles a string in a loop, or similar)",
                    budget >> 20
                ),
                OverBudget::Time { deadline } => format!(
                    "the template ran longer than {} s (it loops over a huge range, or similar)",
                    deadline.as_secs()
                ),
            };
            Err(failed(compiled.over_budget.get_or_init(|| msg)))
        }
    }
}

pub(crate) fn build_env(source: &str) -> Result<Compiled, minijinja::Error> {
    if source.len() > MAX_TEMPLATE {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "the template is {} KiB, more than the {} KiB any chat template needs",
                source.len() >> 10,
                MAX_TEMPLATE >> 10
            ),
        ));
    }
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("template".into())
            .stack_size(COMPILE_STACK)
            .spawn_scoped(scope, || build_env_here(source))
            .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?
            .join()
            .unwrap_or_else(|_| {
                Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "the template compiler failed",
                ))
            })
    })
}

fn build_env_here(source: &str) -> Result<Compiled, minijinja::Error> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    // Python string/dict methods (.strip(), .startswith(), .items(), ...) used by HF templates.
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<JinjaValue, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        },
    );
    env.add_function("strftime_now", |fmt: String| {
        strftime(&fmt, SystemTime::now())
    });
    env.add_filter("tojson", tojson);
    env.add_template_owned("chat", source.to_string())?;
    Ok(Compiled {
        env,
        over_budget: OnceLock::new(),
    })
}

/// `json.dumps(value, ensure_ascii=False, indent=indent)`, as transformers' `tojson`:
/// minijinja's own escapes `<`, `>`, `&` and `'`, and drops Python's spaces after `,` and `:`.
fn tojson(value: JinjaValue, kwargs: Kwargs) -> Result<JinjaValue, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    // Maps here already iterate in key order, and custom separators are not worth supporting.
    let _: Option<JinjaValue> = kwargs.get("sort_keys")?;
    let _: Option<JinjaValue> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let res = match indent {
        Some(n) => {
            let pad = vec![b' '; n];
            let mut ser = serde_json::Serializer::with_formatter(
                &mut out,
                serde_json::ser::PrettyFormatter::with_indent(&pad),
            );
            value.serialize(&mut ser)
        }
        None => {
            let mut ser = serde_json::Serializer::with_formatter(&mut out, PyJsonFormatter);
            value.serialize(&mut ser)
        }
    };
    res.map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut s = String::from_utf8(out)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    if ensure_ascii == Some(true) && !s.is_ascii() {
        s = s
            .chars()
            .map(|c| {
                if c.is_ascii() {
                    return c.to_string();
                }
                let mut units = [0u16; 2];
                c.encode_utf16(&mut units)
                    .iter()
                    .map(|u| format!("\\u{u:04x}"))
                    .collect()
            })
            .collect();
    }
    Ok(JinjaValue::from_safe_string(s))
}

/// Python's default `json.dumps` separators: `", "` and `": "`.
struct PyJsonFormatter;

impl serde_json::ser::Formatter for PyJsonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// A small `strftime` for `strftime_now` (Llama 3 templates print today's date), in UTC; the
/// reader names saved conversations with it too.
pub fn strftime(fmt: &str, now: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - days_from_civil(y, 1, 1) + 1;
    let (hh, mm, ss) = (sod / 3600, sod / 60 % 60, sod % 60);

    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:>2}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('b') | Some('h') => out.push_str(&MONTHS[m as usize - 1][..3]),
            Some('B') => out.push_str(MONTHS[m as usize - 1]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('H') => out.push_str(&format!("{hh:02}")),
            Some('I') => out.push_str(&format!("{:02}", (hh + 11) % 12 + 1)),
            Some('p') => out.push_str(if hh < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{mm:02}")),
            Some('S') => out.push_str(&format!("{ss:02}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn strftime_formats() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        let t = UNIX_EPOCH
            + Duration::from_secs(1_722_000_000 - 1_722_000_000 % 86_400 + 13 * 3600 + 5 * 60 + 9);
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %j %H:%M:%S %I%p %%", t),
            "Friday July 208 13:05:09 01PM %"
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn tojson_like_python() {
        let env = build_env(
            "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ 'é😀' | tojson(ensure_ascii=true) }}",
        )
        .unwrap();
        let x = serde_json::json!({"a": [1, "<b>"], "é": null});
        let out = env
            .env
            .get_template("chat")
            .unwrap()
            .render(minijinja::context! { x => x })
            .unwrap();
        assert_eq!(
            out,
            "{\"a\": [1, \"<b>\"], \"é\": null}|{\n  \"a\": [\n    1,\n    \"<b>\"\n  ],\n  \"é\": null\n}|\"\\u00e9\\ud83d\\ude00\""
        );
    }

    #[test]
    fn template_errors_are_deferred_and_raise_exception_works() {
        let env = build_env("{{ raise_exception('no system role') }}").unwrap();
        let err = env
            .env
            .get_template("chat")
            .unwrap()
            .render(())
            .unwrap_err();
        assert!(format!("{err:#}").contains("no system role"));
        assert!(build_env("{% for %}").is_err());
    }
}
