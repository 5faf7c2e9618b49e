//! EPUB → text, one section per chapter in spine order, titled from the table of contents
//! (the EPUB 3 nav document, else the EPUB 2 NCX), else by the chapter's first heading.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

use scraper::{ElementRef, Html, Node};
use zip::ZipArchive;

use super::{DocumentError, LoadProgress, Parsed, Part, html, text};

/// The most one entry may inflate to: a zip bomb must fail, not fill memory.
const MAX_ENTRY: u64 = 256 << 20;
/// The most all chapters together may inflate to (a long novel is a few MiB of XHTML).
const MAX_BOOK: u64 = 1 << 30;

struct Item {
    path: String,
    media_type: String,
    properties: String,
}

pub(super) fn parse(
    path: &Path,
    bytes: &[u8],
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<Parsed, DocumentError> {
    let corrupt = DocumentError::corrupt(path, "EPUB");
    let mut zip = ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| corrupt(format!("unreadable zip archive: {e}")))?;
    if zip.index_for_name("META-INF/container.xml").is_none() {
        return Err(DocumentError::NotEpub { path: path.into() });
    }
    let mut read = |name: &str| read_entry(&mut zip, name).map_err(corrupt);

    let opf_path = xml(&read("META-INF/container.xml")?, |x| {
        x.descendants()
            .find(|n| n.has_tag_name("rootfile"))
            .and_then(|n| n.attribute("full-path"))
            .map(str::to_string)
    })
    .map_err(|e| corrupt(format!("META-INF/container.xml: {e}")))?
    .ok_or_else(|| corrupt("META-INF/container.xml names no rootfile".into()))?;
    let base = parent(&opf_path);
    let (title, manifest, spine, ncx_id) = xml(&read(&opf_path)?, |x| {
        let title = x
            .descendants()
            .find(|n| n.has_tag_name("title"))
            .and_then(|n| n.text())
            .map(str::to_string);
        let manifest: HashMap<String, Item> = x
            .descendants()
            .filter(|n| n.has_tag_name("item"))
            .filter_map(|n| {
                let item = Item {
                    path: resolve(base, n.attribute("href")?),
                    media_type: n.attribute("media-type").unwrap_or_default().to_string(),
                    properties: n.attribute("properties").unwrap_or_default().to_string(),
                };
                Some((n.attribute("id")?.to_string(), item))
            })
            .collect();
        let spine_node = x.descendants().find(|n| n.has_tag_name("spine"));
        let spine: Vec<String> = spine_node
            .iter()
            .flat_map(|s| s.children().filter(|n| n.has_tag_name("itemref")))
            .filter_map(|n| n.attribute("idref").map(str::to_string))
            .collect();
        let ncx = spine_node.and_then(|s| s.attribute("toc").map(str::to_string));
        (title, manifest, spine, ncx)
    })
    .map_err(|e| corrupt(format!("{opf_path}: {e}")))?;

    // A spine may list an item twice; read once, it cannot multiply the book's size.
    let mut seen = std::collections::HashSet::new();
    let chapters: Vec<&Item> = spine
        .iter()
        .filter(|id| seen.insert(id.as_str()))
        .filter_map(|id| manifest.get(id))
        .filter(|i| i.media_type.contains("html"))
        .collect();
    if chapters.is_empty() {
        return Err(corrupt(format!("{opf_path} lists no XHTML chapters")));
    }
    // DRM encrypts the chapters themselves; font obfuscation (also listed there) is harmless.
    if let Ok(enc) = read_entry(&mut zip, "META-INF/encryption.xml") {
        let locked = xml(&enc, |x| {
            x.descendants()
                .filter(|n| n.has_tag_name("CipherReference"))
                .filter_map(|n| n.attribute("URI"))
                .any(|uri| chapters.iter().any(|c| c.path == resolve("", uri)))
        });
        if locked.unwrap_or(false) {
            return Err(DocumentError::DrmProtected(path.into()));
        }
    }

    let toc = toc(&mut zip, &manifest, ncx_id.as_deref());
    // Front matter (title page, copyright, contents: spine items before the first one the
    // table of contents lists) goes into the first listed chapter, so that chapters count as
    // the book counts them ("2. The Debian Archive" was chapter 3 after a title page).
    let mut front = chapters
        .iter()
        .any(|c| toc.contains_key(&c.path))
        .then(String::new);
    let mut parts = Vec::with_capacity(chapters.len());
    let mut book = 0u64;
    for (i, ch) in chapters.iter().enumerate() {
        let raw = read_entry(&mut zip, &ch.path).map_err(corrupt)?;
        book += raw.len() as u64;
        if book > MAX_BOOK {
            return Err(DocumentError::TooLarge {
                path: path.into(),
                what: format!("its chapters inflate past {} MiB", MAX_BOOK >> 20),
            });
        }
        let markup = text::decode(&raw).unwrap_or_else(|| String::from_utf8_lossy(&raw).into());
        let c = html::convert(&markup);
        let listed = toc.get(&ch.path).cloned();
        let nothing_yet = front.as_ref().is_none_or(|f| f.is_empty());
        match &mut front {
            Some(f) if listed.is_none() => {
                if !c.text.trim().is_empty() {
                    f.push_str(c.text.trim());
                    f.push_str("\n\n");
                }
            }
            // A cover or a page of images has no text: no section for it.
            _ if c.text.trim().is_empty() && nothing_yet => {}
            _ => {
                let title = listed.or_else(|| c.headings.first().map(|h| h.title.clone()));
                let text = match front.take() {
                    Some(f) => f + &c.text,
                    None => c.text,
                };
                parts.push(Part {
                    number: parts.len() + 1,
                    title,
                    text,
                });
            }
        }
        progress(LoadProgress {
            done: i + 1,
            total: chapters.len(),
        });
    }
    Ok(Parsed { title, parts })
}

/// Chapter titles by chapter path: from the EPUB 3 nav document, else the NCX. A chapter
/// listed several times (sub-sections by fragment) keeps its first entry. A broken table of
/// contents only costs titles (logged), never the book.
fn toc(
    zip: &mut ZipArchive<Cursor<&[u8]>>,
    manifest: &HashMap<String, Item>,
    ncx_id: Option<&str>,
) -> HashMap<String, String> {
    let mut titles = HashMap::new();
    let nav = manifest
        .values()
        .find(|i| i.properties.split_whitespace().any(|p| p == "nav"));
    if let Some(nav) = nav {
        match read_entry(zip, &nav.path) {
            Ok(raw) => {
                let doc = Html::parse_document(&html::flatten_deep(&String::from_utf8_lossy(&raw)));
                let navs: Vec<ElementRef> = doc
                    .tree
                    .root()
                    .descendants()
                    .filter_map(ElementRef::wrap)
                    .filter(|e| e.value().name() == "nav")
                    .collect();
                let is_toc = |e: &&ElementRef| {
                    e.value().attrs().any(|(k, v)| {
                        k.ends_with("type") && v.split_whitespace().any(|t| t == "toc")
                    })
                };
                let toc_nav = navs.iter().find(is_toc).or(navs.first());
                for a in toc_nav.iter().flat_map(|n| n.descendants()) {
                    if let Node::Element(e) = a.value()
                        && e.name() == "a"
                        && let (Some(href), Some(a)) = (e.attr("href"), ElementRef::wrap(a))
                    {
                        add(&mut titles, href, parent(&nav.path), a.text().collect());
                    }
                }
            }
            Err(e) => tracing::warn!("EPUB nav document: {e}"),
        }
    }
    if !titles.is_empty() {
        return titles;
    }
    let ncx = ncx_id.and_then(|id| manifest.get(id)).or_else(|| {
        manifest
            .values()
            .find(|i| i.media_type == "application/x-dtbncx+xml")
    });
    if let Some(ncx) = ncx {
        let entries = read_entry(zip, &ncx.path).and_then(|raw| {
            xml(&raw, |x| {
                x.descendants()
                    .filter(|n| n.has_tag_name("navPoint"))
                    .filter_map(|p| {
                        let label = p.children().find(|n| n.has_tag_name("navLabel"))?;
                        let words = label.descendants().find(|n| n.has_tag_name("text"))?;
                        let src = p.children().find(|n| n.has_tag_name("content"))?;
                        Some((src.attribute("src")?.to_string(), words.text()?.to_string()))
                    })
                    .collect::<Vec<_>>()
            })
        });
        match entries {
            Ok(entries) => {
                for (src, label) in entries {
                    add(&mut titles, &src, parent(&ncx.path), label);
                }
            }
            Err(e) => tracing::warn!("EPUB NCX: {e}"),
        }
    }
    titles
}

/// Records a TOC entry unless its chapter already has a title.
fn add(titles: &mut HashMap<String, String>, href: &str, base: &str, label: String) {
    let label = label.split_whitespace().collect::<Vec<_>>().join(" ");
    if !label.is_empty() {
        titles.entry(resolve(base, href)).or_insert(label);
    }
}

fn read_entry(zip: &mut ZipArchive<Cursor<&[u8]>>, name: &str) -> Result<Vec<u8>, String> {
    let entry = zip
        .by_name(name)
        .map_err(|e| format!("{name} is missing ({e})"))?;
    let mut out = Vec::new();
    entry
        .take(MAX_ENTRY + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{name}: {e}"))?;
    if out.len() as u64 > MAX_ENTRY {
        return Err(format!("{name} inflates past {} MiB", MAX_ENTRY >> 20));
    }
    Ok(out)
}

/// Parses XML (DTDs allowed: NCX files declare one) and hands the tree to `f`.
fn xml<T>(bytes: &[u8], f: impl FnOnce(roxmltree::Document) -> T) -> Result<T, String> {
    let s = text::decode(bytes).ok_or("binary data, not XML")?;
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(&s, opts)
        .map(f)
        .map_err(|e| e.to_string())
}

/// The folder of a path inside the archive, with its trailing slash ("" at the top).
fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..=i])
}

/// An href relative to `base` → the archive path it names (fragment dropped, %XX decoded,
/// `.` and `..` applied).
fn resolve(base: &str, href: &str) -> String {
    let href = href.split('#').next().unwrap_or_default();
    let href = percent_decode(href);
    let mut segments: Vec<&str> = if href.starts_with('/') {
        Vec::new()
    } else {
        base.split('/').filter(|s| !s.is_empty()).collect()
    };
    for s in href.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    segments.join("/")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
