//! A loaded PDF made safe for pdf-extract, which trusts its input: it follows `/Parent`
//! until it finds a key (a page that is its own parent loops forever), draws form XObjects
//! recursively (one that draws itself overflows the stack, which no `catch_unwind` catches),
//! inflates every stream whole (a 1 KB stream can inflate to gigabytes), and expands
//! ToUnicode ranges code by code (a range over 2^32 codes). Each pass below bounds one of
//! these by editing the document before any page is extracted; what it changed is logged.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use lopdf::content::Content;
use lopdf::{Dictionary, Document, Object, ObjectId};

/// The most one stream may inflate to; a page's text is kilobytes.
pub(super) const MAX_STREAM: u64 = 64 << 20;
/// The most all streams together may inflate to.
pub(super) const MAX_DOCUMENT: u64 = 512 << 20;
/// Forms drawn inside forms deeper than this are not drawn (real files nest a few levels).
const MAX_FORM_DEPTH: usize = 32;
/// Page-tree levels above a page; real trees are a handful deep.
const MAX_TREE_DEPTH: usize = 256;
/// ToUnicode codes a font may map; a full 2-byte code space is 65,536.
const MAX_CMAP_CODES: u64 = 1 << 17;
/// Bytes of one predictor row (Columns × Colors × bits / 8).
const MAX_PREDICTOR_ROW: i64 = 1 << 20;

/// What the passes changed: how many objects, and the first limit that cost content (what
/// to tell the user if no text is left).
#[derive(Debug, Default)]
pub(super) struct Guarded {
    pub changed: usize,
    pub limit: Option<String>,
}

/// Runs every pass.
pub(super) fn guard(doc: &mut Document) -> Guarded {
    let pages: Vec<ObjectId> = doc.page_iter().collect();
    let mut g = Guarded {
        changed: fix_page_tree(doc, &pages),
        limit: None,
    };
    bound_streams(doc, &mut g);
    g.changed += drop_wide_cmaps(doc);
    let cut = break_form_cycles(doc, &pages);
    if cut > 0 {
        g.changed += cut;
        g.limit.get_or_insert_with(|| {
            format!("its forms draw themselves or nest deeper than {MAX_FORM_DEPTH} levels")
        });
    }
    g
}

/// Cuts `/Parent` loops and over-deep chains, and gives a page without a MediaBox anywhere
/// above it US Letter (pdf-extract insists on one).
fn fix_page_tree(doc: &mut Document, pages: &[ObjectId]) -> usize {
    let mut changed = 0;
    for &page in pages {
        let mut seen = HashSet::from([page]);
        let mut node = page;
        let mut has_box = false;
        while let Ok(dict) = doc.get_dictionary(node) {
            has_box |= dict.has(b"MediaBox");
            let Ok(parent) = dict.get(b"Parent").and_then(Object::as_reference) else {
                break;
            };
            if !seen.insert(parent) || seen.len() > MAX_TREE_DEPTH {
                tracing::warn!("PDF page tree: {node:?} has a looping or too deep /Parent; cut");
                if let Ok(d) = doc.get_dictionary_mut(node) {
                    d.remove(b"Parent");
                }
                changed += 1;
                break;
            }
            node = parent;
        }
        if !has_box && let Ok(d) = doc.get_dictionary_mut(page) {
            let letter = [0, 0, 612, 792].map(Object::Integer).to_vec();
            d.set("MediaBox", Object::Array(letter));
            changed += 1;
        }
    }
    changed
}

/// Empties streams pdf-extract must not decode: images (it never needs their pixels, yet a
/// `Do` of one would parse them as content), streams inflating past [`MAX_STREAM`] or the
/// document past [`MAX_DOCUMENT`], and predictors with absurd rows.
fn bound_streams(doc: &mut Document, g: &mut Guarded) {
    let mut total = 0u64;
    for (id, obj) in doc.objects.iter_mut() {
        let Object::Stream(s) = obj else { continue };
        let image = s
            .dict
            .get(b"Subtype")
            .and_then(Object::as_name)
            .is_ok_and(|n| n == b"Image");
        let filters: Vec<Vec<u8>> = s
            .filters()
            .map(|f| f.iter().map(|n| n.to_vec()).collect())
            .unwrap_or_default();
        let verdict = if image {
            Some("an image".to_string())
        } else if !predictor_ok(&s.dict) {
            Some(format!(
                "a stream's predictor rows pass {} MiB",
                MAX_PREDICTOR_ROW >> 20
            ))
        } else if filters.first().is_some_and(|f| f == b"FlateDecode") {
            let n = inflated_len(&s.content, MAX_STREAM + 1);
            total += n;
            if n > MAX_STREAM {
                Some(format!("a stream inflates past {} MiB", MAX_STREAM >> 20))
            } else if total > MAX_DOCUMENT {
                Some(format!(
                    "the document's streams inflate past {} MiB",
                    MAX_DOCUMENT >> 20
                ))
            } else {
                None
            }
        } else {
            None
        };
        if let Some(why) = verdict {
            if !image {
                tracing::warn!("PDF stream {id:?} emptied: {why}");
                g.limit.get_or_insert(why);
            }
            s.set_plain_content(Vec::new());
            g.changed += 1;
        }
    }
}

/// Bytes a zlib stream inflates to, counted up to `cap` without keeping them (raw deflate
/// after a bad header, as lopdf falls back).
fn inflated_len(data: &[u8], cap: u64) -> u64 {
    let mut sink = std::io::sink();
    let n = std::io::copy(
        &mut flate2::read::ZlibDecoder::new(data).take(cap),
        &mut sink,
    )
    .unwrap_or(0);
    if n == 0 && data.len() > 2 {
        let raw = flate2::read::DeflateDecoder::new(&data[2..]).take(cap);
        return std::io::copy(&mut { raw }, &mut sink).unwrap_or(0);
    }
    n
}

fn predictor_ok(dict: &Dictionary) -> bool {
    let Ok(params) = dict.get(b"DecodeParms").and_then(Object::as_dict) else {
        return true;
    };
    let int = |k: &[u8], default: i64| params.get(k).and_then(Object::as_i64).unwrap_or(default);
    let (columns, colors, bits) = (
        int(b"Columns", 1),
        int(b"Colors", 1),
        int(b"BitsPerComponent", 8),
    );
    let row = columns
        .max(1)
        .saturating_mul(colors.max(1))
        .saturating_mul(bits.max(8))
        / 8;
    (0..=MAX_PREDICTOR_ROW).contains(&row)
}

/// The file's bytes with every `/Columns N` above a predictor row's bound rewritten as
/// `/Columns 1` padded to the same length (offsets stay valid). lopdf decodes cross-reference
/// streams while it loads, before the passes above can see them: a `startxref` pointing at a
/// stream of 3e9 columns took 4.7 GB and 20 s in a 750-byte file (found by the pdf fuzzer).
/// Real images and xref streams have a few thousand columns at most.
pub(super) fn clamp_columns(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    const KEY: &[u8] = b"/Columns";
    let mut out = std::borrow::Cow::Borrowed(bytes);
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(KEY.len()).position(|w| w == KEY) {
        let mut start = at + i + KEY.len();
        while start < bytes.len() && bytes[start].is_ascii_whitespace() {
            start += 1;
        }
        let end = start
            + bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
        // Digits past 18 exceed any i64: too large as well.
        let digits = &bytes[start..end];
        let too_large = digits.len() > 18
            || std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse::<i64>().ok())
                .is_some_and(|n| n > MAX_PREDICTOR_ROW);
        if too_large {
            let o = out.to_mut();
            o[start] = b'1';
            o[start + 1..end].fill(b' ');
        }
        at = end.max(at + i + 1);
    }
    out
}

/// Drops a ToUnicode map whose ranges span more than [`MAX_CMAP_CODES`] codes: pdf-extract
/// would insert every code (the font's own encoding still decodes its text).
fn drop_wide_cmaps(doc: &mut Document) -> usize {
    let mut wide = Vec::new();
    for (id, obj) in &doc.objects {
        let Ok(font) = obj.as_dict() else { continue };
        let Ok(cmap) = font.get(b"ToUnicode").and_then(Object::as_reference) else {
            continue;
        };
        let Ok(stream) = doc.get_object(cmap).and_then(Object::as_stream) else {
            continue;
        };
        let bytes = stream
            .decompressed_content()
            .unwrap_or_else(|_| stream.content.clone());
        if cmap_span(&bytes) > MAX_CMAP_CODES {
            wide.push(*id);
        }
    }
    for id in &wide {
        tracing::warn!("PDF font {id:?}: ToUnicode ranges span too many codes; ignored");
        if let Ok(d) = doc.get_dictionary_mut(*id) {
            d.remove(b"ToUnicode");
        }
    }
    wide.len()
}

/// Codes covered by a CMap's `bfrange`/`cidrange` sections: the sum of hi − lo + 1 over
/// its ranges (`<lo> <hi>` then a destination: a string, a CID or an array of strings).
fn cmap_span(cmap: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(cmap);
    let mut total = 0u64;
    for (begin, end) in [
        ("beginbfrange", "endbfrange"),
        ("begincidrange", "endcidrange"),
    ] {
        for section in text.split(begin).skip(1) {
            let body = section.split(end).next().unwrap_or_default();
            let mut tokens = body
                .split(|c: char| c == '<' || c == '>' || c.is_whitespace())
                .filter(|t| !t.is_empty())
                .flat_map(|t| {
                    // Brackets may touch their neighbours: "[<0041>" splits to "[" here.
                    t.split_inclusive(['[', ']'])
                });
            let hex = |t: &str| u64::from_str_radix(&t[..t.len().min(16)], 16).ok();
            while let Some(lo) = tokens.next() {
                let (Some(lo), Some(hi)) = (hex(lo), tokens.next().and_then(hex)) else {
                    continue;
                };
                total = total.saturating_add(hi.saturating_sub(lo) + 1);
                if tokens.next().is_some_and(|d| d.starts_with('[')) {
                    for t in tokens.by_ref() {
                        if t.ends_with(']') {
                            break;
                        }
                    }
                }
            }
        }
    }
    total
}

/// Removes the `Do` operations that would draw a form inside itself (directly or through
/// others) or nest forms deeper than [`MAX_FORM_DEPTH`]. Walks what each page actually
/// draws, resolving names in each form's own resources or, lacking them, the caller's.
fn break_form_cycles(doc: &mut Document, pages: &[ObjectId]) -> usize {
    let mut walk = FormWalk {
        doc,
        names: HashMap::new(),
        done: HashSet::new(),
        cuts: HashMap::new(),
    };
    for &page in pages {
        let Some(resources) = page_resources(walk.doc, page) else {
            continue;
        };
        let content = walk.doc.get_page_content(page).unwrap_or_default();
        for name in do_names(&content) {
            if let Some(form) = xobject_form(walk.doc, resources, &name) {
                walk.visit(form, resources, &mut Vec::new());
            }
        }
    }
    let cuts = std::mem::take(&mut walk.cuts);
    for (form, names) in &cuts {
        tracing::warn!(
            "PDF form {form:?} draws itself or nests too deep: {} draw(s) removed",
            names.len()
        );
        let Ok(s) = doc.get_object_mut(*form).and_then(Object::as_stream_mut) else {
            continue;
        };
        let Ok(mut content) = s.decode_content() else {
            continue;
        };
        content.operations.retain(|op| {
            op.operator != "Do"
                || !op
                    .operands
                    .first()
                    .and_then(|o| o.as_name().ok())
                    .is_some_and(|n| names.contains(n))
        });
        if let Ok(bytes) = content.encode() {
            s.set_plain_content(bytes);
        }
    }
    cuts.len()
}

struct FormWalk<'d> {
    doc: &'d Document,
    /// The names each form draws (`/Name Do`), parsed once.
    names: HashMap<ObjectId, Vec<Vec<u8>>>,
    /// (form, resources it was drawn with) already walked completely.
    done: HashSet<(ObjectId, *const Dictionary)>,
    /// Per form, the names whose drawing must go.
    cuts: HashMap<ObjectId, HashSet<Vec<u8>>>,
}

impl<'d> FormWalk<'d> {
    fn visit(&mut self, form: ObjectId, inherited: &'d Dictionary, path: &mut Vec<ObjectId>) {
        let Ok(stream) = self.doc.get_object(form).and_then(Object::as_stream) else {
            return;
        };
        let own = stream
            .dict
            .get(b"Resources")
            .ok()
            .and_then(|r| deref_dict(self.doc, r));
        let resources = own.unwrap_or(inherited);
        if !self.done.insert((form, resources as *const _)) {
            return;
        }
        let names = self
            .names
            .entry(form)
            .or_insert_with(|| {
                let bytes = stream
                    .decompressed_content()
                    .unwrap_or_else(|_| stream.content.clone());
                do_names(&bytes)
            })
            .clone();
        path.push(form);
        for name in names {
            let Some(child) = xobject_form(self.doc, resources, &name) else {
                continue;
            };
            if path.contains(&child) || path.len() >= MAX_FORM_DEPTH {
                self.cuts.entry(form).or_default().insert(name);
            } else {
                self.visit(child, resources, path);
            }
        }
        path.pop();
    }
}

/// The names a content stream draws with `Do`.
fn do_names(content: &[u8]) -> Vec<Vec<u8>> {
    let Ok(c) = Content::decode(content) else {
        return Vec::new();
    };
    let mut names: Vec<Vec<u8>> = c
        .operations
        .iter()
        .filter(|op| op.operator == "Do")
        .filter_map(|op| op.operands.first()?.as_name().ok().map(<[u8]>::to_vec))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The XObject `name` in `resources` as pdf-extract draws it: any stream, whatever its
/// `/Subtype` (pdf-extract reads none, so a misspelt form or an image whose bytes say `Do`
/// recurses like a form; found by the pdf fuzzer).
fn xobject_form(doc: &Document, resources: &Dictionary, name: &[u8]) -> Option<ObjectId> {
    let xobjects = deref_dict(doc, resources.get(b"XObject").ok()?)?;
    let id = xobjects.get(name).ok()?.as_reference().ok()?;
    doc.get_object(id).ok()?.as_stream().ok()?;
    Some(id)
}

/// A page's resources, inherited from the page tree as pdf-extract looks them up.
fn page_resources(doc: &Document, page: ObjectId) -> Option<&Dictionary> {
    let mut node = doc.get_dictionary(page).ok()?;
    for _ in 0..MAX_TREE_DEPTH {
        if let Some(r) = node.get(b"Resources").ok().and_then(|r| deref_dict(doc, r)) {
            return Some(r);
        }
        let parent = node.get(b"Parent").and_then(Object::as_reference).ok()?;
        node = doc.get_dictionary(parent).ok()?;
    }
    None
}

fn deref_dict<'d>(doc: &'d Document, o: &'d Object) -> Option<&'d Dictionary> {
    match o {
        Object::Dictionary(d) => Some(d),
        Object::Reference(id) => doc.get_dictionary(*id).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmap_spans_count_every_range() {
        assert_eq!(
            cmap_span(b"1 beginbfrange <00> <FF> <0041> endbfrange"),
            256
        );
        assert_eq!(
            cmap_span(b"1 beginbfrange <00000000> <FFFFFFFF> <0041> endbfrange"),
            1 << 32
        );
        assert_eq!(
            cmap_span(b"2 beginbfrange <00> <01> [<0041> <0042>] <10> <10> <0043> endbfrange"),
            3
        );
        assert_eq!(cmap_span(b"1 beginbfrange <FF> <00> <0041> endbfrange"), 1);
    }

    #[test]
    fn huge_columns_are_clamped_before_loading_and_offsets_kept() {
        let f =
            b"<< /DecodeParms << /Predictor 12 /Columns 3000000000 >> >> /Columns 5000 /Columns";
        let got = clamp_columns(f);
        assert_eq!(got.len(), f.len());
        assert_eq!(
            &got[..],
            &b"<< /DecodeParms << /Predictor 12 /Columns 1          >> >> /Columns 5000 /Columns"[..]
        );
        assert!(matches!(
            clamp_columns(b"/Columns 4096"),
            std::borrow::Cow::Borrowed(_)
        ));
        let long = b"/Columns 99999999999999999999999";
        assert_eq!(&clamp_columns(long)[..10], b"/Columns 1");
    }

    #[test]
    fn predictor_rows_are_bounded() {
        let mut d = Dictionary::new();
        assert!(predictor_ok(&d));
        let mut p = Dictionary::new();
        p.set("Columns", 3_000_000_000i64);
        d.set("DecodeParms", p);
        assert!(!predictor_ok(&d));
    }
}
