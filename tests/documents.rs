//! Documents → text and page map, on files built here in a temp dir: PDF (several pages, two
//! fonts, a hyphenated line break, a ligature), EPUB, HTML, UTF-8 and Latin-1 text, and broken
//! files of each kind; then the Rust book from the rust-docs component, and `extract` through
//! the binary.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::{pdf, pdf_bytes};
use lopdf::{Object, dictionary};
use swaa_chat::document::{self, Document, DocumentError, LoadProgress};
use zip::write::SimpleFileOptions;

/// Sections in order, non-overlapping, tiling the whole text, on char boundaries.
fn assert_tiles(doc: &Document) {
    assert!(!doc.sections.is_empty());
    assert_eq!(doc.sections[0].start, 0);
    assert_eq!(doc.sections.last().unwrap().end, doc.text.len());
    for w in doc.sections.windows(2) {
        assert_eq!(w[0].end, w[1].start, "{:?} then {:?}", w[0], w[1]);
    }
    for s in &doc.sections {
        assert!(s.start <= s.end, "{s:?}");
        assert!(doc.text.is_char_boundary(s.start) && doc.text.is_char_boundary(s.end));
    }
}

fn section_text(doc: &Document, number: usize) -> &str {
    let s = doc.sections.iter().find(|s| s.number == number).unwrap();
    &doc.text[s.start..s.end]
}

fn titles(doc: &Document) -> Vec<Option<&str>> {
    doc.sections.iter().map(|s| s.title.as_deref()).collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

// ---------- PDF ----------

const PAGE_1: &str = "BT /F1 12 Tf 72 760 Td (Page one opens with an exam-) Tj \
    0 -14 Td (ple of a hyphenated word.) Tj ET \
    BT /F2 12 Tf 72 700 Td (The \\226nal \\226le is in Times.) Tj ET";
const PAGE_2: &str = "BT /F2 14 Tf 72 760 Td (Second page, in Times: Smith-) Tj \
    0 -16 Td (Jones keeps its hyphen.) Tj ET";
const IMAGE_ONLY: &str = "q 200 0 0 200 72 500 cm /Im1 Do Q";
const PAGE_4: &str = "BT /F1 12 Tf 72 760 Td (Fourth page after a blank one.) Tj ET";

#[test]
fn pdf_pages_fonts_hyphens_and_ligatures() {
    let dir = common::temp_dir("docs-pdf");
    let bytes = pdf_bytes(&mut pdf(
        &[PAGE_1, PAGE_2, IMAGE_ONLY, PAGE_4],
        Some("A Test Report"),
    ));
    let path = write(&dir, "report.pdf", &bytes);
    let mut seen = Vec::new();
    let doc = document::load_with_progress(&path, &mut |p| seen.push(p)).unwrap();
    assert_eq!(doc.title, "A Test Report");
    assert_tiles(&doc);
    let numbers: Vec<usize> = doc.sections.iter().map(|s| s.number).collect();
    assert_eq!(
        numbers,
        [1, 2, 3, 4],
        "one section per page, blank ones too"
    );
    assert_eq!(
        seen,
        (1..=4)
            .map(|done| LoadProgress { done, total: 4 })
            .collect::<Vec<_>>()
    );
    let p1 = section_text(&doc, 1);
    assert!(
        p1.contains("Page one opens with an example of a hyphenated word."),
        "{p1:?}"
    );
    assert!(p1.contains("The final file is in Times."), "{p1:?}");
    assert!(!doc.text.contains('\u{fb01}'));
    assert!(
        p1.find("example").unwrap() < p1.find("final").unwrap(),
        "stream order"
    );
    let p2 = section_text(&doc, 2);
    assert!(p2.contains("Smith-\nJones keeps its hyphen."), "{p2:?}");
    assert_eq!(section_text(&doc, 3), "", "the image page has no text");
    assert!(section_text(&doc, 4).contains("Fourth page after a blank one."));

    // Misnamed: the content says PDF.
    let misnamed = write(&dir, "report.txt", &bytes);
    assert_eq!(document::load(&misnamed).unwrap().text, doc.text);
}

#[test]
fn broken_pdfs_fail_with_clear_errors() {
    let dir = common::temp_dir("docs-pdf-bad");
    let good = pdf_bytes(&mut pdf(&[PAGE_1, PAGE_2], None));

    let cut = write(&dir, "cut.pdf", &good[..good.len() / 2]);
    let e = document::load(&cut).unwrap_err();
    assert!(matches!(e, DocumentError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("truncated or corrupt"), "{e}");

    let mut locked = pdf(&[PAGE_1], None);
    let enc = locked.add_object(dictionary! {
        "Filter" => "Standard", "V" => 1, "R" => 2, "P" => -44,
        "O" => Object::string_literal(vec![7u8; 32]),
        "U" => Object::string_literal(vec![9u8; 32]),
    });
    locked.trailer.set("Encrypt", enc);
    let locked = write(&dir, "locked.pdf", &pdf_bytes(&mut locked));
    let e = document::load(&locked).unwrap_err();
    assert!(matches!(e, DocumentError::Encrypted(_)), "{e}");
    assert!(e.to_string().contains("qpdf --decrypt"), "{e}");

    let scanned = pdf_bytes(&mut pdf(&[IMAGE_ONLY, IMAGE_ONLY], None));
    let e = document::load(&write(&dir, "scan.pdf", &scanned)).unwrap_err();
    assert!(matches!(e, DocumentError::NoTextLayer(_)), "{e}");
    assert!(e.to_string().contains("ocrmypdf"), "{e}");

    let e = document::load(&write(&dir, "fake.pdf", b"just some words, no header")).unwrap_err();
    assert!(e.to_string().contains("no %PDF- header"), "{e}");

    // Garbage after a valid header: every parser path must end in an error, not a panic.
    let mut junk = b"%PDF-1.4\n".to_vec();
    junk.extend(common::random_bytes(7, 3000));
    let e = document::load(&write(&dir, "junk.pdf", &junk)).unwrap_err();
    assert!(matches!(e, DocumentError::Corrupt { .. }), "{e}");
}

// ---------- EPUB ----------

fn zip_file(path: &Path, files: &[(&str, &[u8])]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, data) in files {
        // EPUB wants `mimetype` first and stored, as real readers check.
        let method = if *name == "mimetype" {
            zip::CompressionMethod::Stored
        } else {
            zip::CompressionMethod::Deflated
        };
        z.start_file(
            *name,
            SimpleFileOptions::default().compression_method(method),
        )
        .unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap();
}

const CONTAINER: &str = r#"<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>"#;

fn opf(nav: bool) -> String {
    let nav_item = if nav {
        r#"<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>"#
    } else {
        ""
    };
    // Manifest order differs from spine order on purpose: the spine decides.
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/">
    <dc:identifier id="id">test-book</dc:identifier>
    <dc:title>A Small Book</dc:title>
  </metadata>
  <manifest>
    {nav_item}
    <item id="ncx" href="toc.ncx" media-type="application/x-dtbncx+xml"/>
    <item id="c3" href="text/three.xhtml" media-type="application/xhtml+xml"/>
    <item id="c2" href="text/two%20words.xhtml" media-type="application/xhtml+xml"/>
    <item id="c1" href="text/one.xhtml" media-type="application/xhtml+xml"/>
    <item id="cover" href="cover.xhtml" media-type="application/xhtml+xml"/>
    <item id="img" href="images/cover.png" media-type="image/png"/>
  </manifest>
  <spine toc="ncx">
    <itemref idref="cover"/><itemref idref="c1"/><itemref idref="c2"/><itemref idref="c3"/>
  </spine>
</package>"#
    )
}

const NAV: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops"><body>
<nav epub:type="landmarks"><ol><li><a href="text/one.xhtml">Begin Reading</a></li></ol></nav>
<nav epub:type="toc"><ol>
  <li><a href="text/one.xhtml">Chapter One: Arrival</a></li>
  <li><a href="text/two%20words.xhtml#start">Chapter Two: The Harbour</a>
    <ol><li><a href="text/two%20words.xhtml#later">Later that day</a></li></ol></li>
</ol></nav></body></html>"#;

const NCX: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE ncx PUBLIC "-//NISO//DTD ncx 2005-1//EN" "http://www.daisy.org/z3986/2005/ncx-2005-1.dtd">
<ncx xmlns="http://www.daisy.org/z3986/2005/ncx/" version="2005-1"><navMap>
  <navPoint id="n1"><navLabel><text>One (from the NCX)</text></navLabel><content src="text/one.xhtml"/></navPoint>
  <navPoint id="n2"><navLabel><text>Two (from the NCX)</text></navLabel><content src="text/two%20words.xhtml"/></navPoint>
</navMap></ncx>"#;

fn chapter(heading: &str, body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>ignored</title>
<style>p {{ color: red }}</style></head>
<body><h2>{heading}</h2>{body}<script>var hidden = "SCRIPT TEXT";</script></body></html>"#
    )
}

fn epub(path: &Path, nav: bool, extra: &[(&str, &[u8])]) {
    let cover = r#"<html xmlns="http://www.w3.org/1999/xhtml"><body><img src="images/cover.png" alt=""/></body></html>"#;
    epub_with_cover(path, nav, cover, extra)
}

/// [`epub`] whose first spine item (no TOC entry) is `cover`.
fn epub_with_cover(path: &Path, nav: bool, cover: &str, extra: &[(&str, &[u8])]) {
    let one = chapter(
        "1. Arrival",
        "<p>The ship came in at dawn &amp; the gulls rose.</p>",
    );
    let two = chapter(
        "2. Harbour",
        "<p id=\"start\">Nets lay drying on the quay.</p><p id=\"later\">Later, it rained.</p>",
    );
    let three = chapter("Three: Departure", "<p>They left on the evening tide.</p>");
    let opf = opf(nav);
    let mut files: Vec<(&str, &[u8])> = vec![
        ("mimetype", b"application/epub+zip"),
        ("META-INF/container.xml", CONTAINER.as_bytes()),
        ("OEBPS/content.opf", opf.as_bytes()),
        ("OEBPS/toc.ncx", NCX.as_bytes()),
        ("OEBPS/cover.xhtml", cover.as_bytes()),
        ("OEBPS/images/cover.png", b"\x89PNG\r\n\x1a\n"),
        ("OEBPS/text/three.xhtml", three.as_bytes()),
        ("OEBPS/text/two words.xhtml", two.as_bytes()),
        ("OEBPS/text/one.xhtml", one.as_bytes()),
    ];
    if nav {
        files.push(("OEBPS/nav.xhtml", NAV.as_bytes()));
    }
    files.extend_from_slice(extra);
    zip_file(path, &files);
}

/// The chapter titles of the test EPUB (`epub`): from its TOC, and the third from its heading.
const CHAPTERS: [Option<&str>; 3] = [
    Some("Chapter One: Arrival"),
    Some("Chapter Two: The Harbour"),
    Some("Three: Departure"),
];

#[test]
fn epub_chapters_in_spine_order_titled_from_the_toc() {
    let dir = common::temp_dir("docs-epub");
    let path = dir.join("book.epub");
    epub(&path, true, &[]);
    let mut seen = Vec::new();
    let doc = document::load_with_progress(&path, &mut |p| seen.push(p)).unwrap();
    assert_eq!(doc.title, "A Small Book");
    assert_tiles(&doc);
    // The cover has no text, so no chapter; chapter three is not in the TOC: its heading names it.
    assert_eq!(titles(&doc), CHAPTERS);
    assert_eq!(seen.last(), Some(&LoadProgress { done: 4, total: 4 }));
    assert!(section_text(&doc, 1).contains("The ship came in at dawn & the gulls rose."));
    assert!(section_text(&doc, 2).contains("Nets lay drying on the quay.\n\nLater, it rained."));
    assert!(section_text(&doc, 3).starts_with("Three: Departure\n\nThey left"));
    assert!(!doc.text.contains("SCRIPT TEXT") && !doc.text.contains("color: red"));
    assert!(
        !doc.text.contains("ignored"),
        "<title> of a chapter is not text"
    );

    // EPUB 2: titles from the NCX (with its DOCTYPE).
    let old = dir.join("old.epub");
    epub(&old, false, &[]);
    let doc = document::load(&old).unwrap();
    assert_eq!(
        titles(&doc),
        [
            Some("One (from the NCX)"),
            Some("Two (from the NCX)"),
            Some("Three: Departure")
        ]
    );

    // A title page before the first chapter the TOC lists is front matter of chapter 1: the
    // chapters count as the book does (it was chapter 1, and "Chapter One" chapter 2).
    let front = dir.join("front.epub");
    let title_page = chapter("A Small Book", "<p>Published by the Isles Press.</p>");
    epub_with_cover(&front, true, &title_page, &[]);
    let doc = document::load(&front).unwrap();
    assert_tiles(&doc);
    assert_eq!(titles(&doc), CHAPTERS);
    let one = section_text(&doc, 1);
    assert!(
        one.starts_with("A Small Book\n\nPublished by the Isles Press.")
            && one.contains("The ship came in"),
        "{one}"
    );

    // Misnamed: the content says zip + EPUB.
    let misnamed = dir.join("book.bin");
    std::fs::copy(&path, &misnamed).unwrap();
    assert_eq!(titles(&document::load(&misnamed).unwrap()).len(), 3);
}

#[test]
fn broken_epubs_fail_with_clear_errors() {
    let dir = common::temp_dir("docs-epub-bad");
    let not_epub = dir.join("photos.epub");
    zip_file(&not_epub, &[("hello.txt", b"hello")]);
    let e = document::load(&not_epub).unwrap_err();
    assert!(matches!(e, DocumentError::NotEpub { .. }), "{e}");
    assert!(e.to_string().contains("zip archive but not an EPUB"), "{e}");

    let good = dir.join("good.epub");
    epub(&good, true, &[]);
    let bytes = std::fs::read(&good).unwrap();
    let cut = write(&dir, "cut.epub", &bytes[..bytes.len() * 2 / 3]);
    let e = document::load(&cut).unwrap_err();
    assert!(e.to_string().contains("truncated or corrupt"), "{e}");

    let e = document::load(&write(&dir, "plain.epub", b"not a zip")).unwrap_err();
    assert!(e.to_string().contains("not a zip archive"), "{e}");

    let drm = dir.join("drm.epub");
    let enc = br#"<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container"
        xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>
        <enc:CipherData><enc:CipherReference URI="OEBPS/text/one.xhtml"/></enc:CipherData>
        </enc:EncryptedData></encryption>"#;
    epub(&drm, true, &[("META-INF/encryption.xml", enc)]);
    let e = document::load(&drm).unwrap_err();
    assert!(matches!(e, DocumentError::DrmProtected(_)), "{e}");
}

// ---------- HTML and text ----------

const PAGE: &str = r#"<!DOCTYPE html>
<html><head><title>Field &amp; Notes</title><style>body { margin: 0 }</style>
<script>document.write("SCRIPT")</script></head>
<body>
<nav><a href="/">Home</a> <a href="/about">About</a></nav>
<p>Before   any
heading.</p>
<h1>Birds &amp; Bees</h1>
<p>Caf&eacute; &lt;open&gt; at&nbsp;dawn.<br>Second line.</p>
<ul><li>alpha</li><li>beta<ol><li>one</li><li>two</li></ol></li></ul>
<h2>Code</h2>
<pre><code>fn main() {
    println!("hi");
}</code></pre>
<table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td></tr></table>
<h3>A smaller heading stays inside</h3><p>Deep text.</p>
<h2>End</h2><p hidden>invisible</p><p>Fin.</p>
</body></html>"#;

#[test]
fn html_headings_paragraphs_lists_pre_and_entities() {
    let dir = common::temp_dir("docs-html");
    let doc = document::load(&write(&dir, "notes.html", PAGE.as_bytes())).unwrap();
    assert_eq!(doc.title, "Field & Notes");
    assert_tiles(&doc);
    assert_eq!(
        titles(&doc),
        [None, Some("Birds & Bees"), Some("Code"), Some("End")]
    );
    assert_eq!(section_text(&doc, 1), "Before any heading.\n\n");
    assert_eq!(
        section_text(&doc, 2),
        "Birds & Bees\n\nCafé <open> at dawn.\nSecond line.\n\n- alpha\n- beta\n  1. one\n  2. two\n\n"
    );
    assert_eq!(
        section_text(&doc, 3),
        "Code\n\nfn main() {\n    println!(\"hi\");\n}\n\nk | v\na | 1\n\n\
         A smaller heading stays inside\n\nDeep text.\n\n"
    );
    assert_eq!(section_text(&doc, 4), "End\n\nFin.\n");
    for dropped in ["SCRIPT", "margin", "Home", "invisible"] {
        assert!(!doc.text.contains(dropped), "{dropped} in {:?}", doc.text);
    }
    // Misnamed: the content says HTML.
    let misnamed = document::load(&write(&dir, "notes.txt", PAGE.as_bytes())).unwrap();
    assert_eq!(misnamed.sections, doc.sections);
}

#[test]
fn markdown_and_text_encodings_and_sections() {
    let dir = common::temp_dir("docs-text");
    let md = "\u{feff}# My Notes\r\n\r\nIntro.\r\n\r\n## Part A\r\nalpha\r\n```\r\n# not a heading\r\n```\r\n\r\nSetext Part\r\n-----------\r\nbeta\r\n";
    let doc = document::load(&write(&dir, "notes.md", md.as_bytes())).unwrap();
    assert_eq!(doc.title, "My Notes");
    assert_tiles(&doc);
    assert!(!doc.text.contains('\r') && !doc.text.contains('\u{feff}'));
    assert_eq!(
        titles(&doc),
        [Some("My Notes"), Some("Part A"), Some("Setext Part")]
    );
    assert_eq!(
        section_text(&doc, 2),
        "## Part A\nalpha\n```\n# not a heading\n```\n\n"
    );
    assert_eq!(section_text(&doc, 3), "Setext Part\n-----------\nbeta\n");

    // Latin-1 / Windows-1252 (chardetng's guess), as old Western text files are.
    let latin1 = b"Caf\xe9 cr\xe8me br\xfbl\xe9e, na\xefve fa\xe7ade; \x93quoted\x94.\n";
    let doc = document::load(&write(&dir, "menu.txt", latin1)).unwrap();
    assert_eq!(
        doc.text,
        "Café crème brûlée, naïve façade; \u{201c}quoted\u{201d}.\n"
    );
    assert_eq!(doc.title, "menu");
    assert_eq!(titles(&doc), [None]);

    // UTF-16 with a BOM.
    let utf16: Vec<u8> = [0xff, 0xfe]
        .into_iter()
        .chain(
            "# Wide\n\nText.\n"
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        )
        .collect();
    assert_eq!(
        document::load(&write(&dir, "wide.md", &utf16))
            .unwrap()
            .text,
        "# Wide\n\nText.\n"
    );
    // Any other extension with text content is read as plain text.
    let log = document::load(&write(&dir, "run.log", b"# not a title\nline\n")).unwrap();
    assert_eq!(titles(&log), [None]);
}

#[test]
fn junk_and_empty_files_fail_with_clear_errors() {
    let dir = common::temp_dir("docs-junk");
    let e = document::load(&write(&dir, "junk.txt", &common::random_bytes(7, 4096))).unwrap_err();
    assert!(matches!(e, DocumentError::NotText(_)), "{e}");
    assert!(e.to_string().contains("not a text document"), "{e}");
    let e = document::load(&write(&dir, "junk.dat", &common::random_bytes(7, 4096))).unwrap_err();
    assert!(matches!(e, DocumentError::UnknownType { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("PDF, EPUB, HTML, Markdown or plain-text"),
        "{e}"
    );
    for (name, bytes) in [("empty.txt", &b""[..]), ("blank.md", b" \n\r\n\t")] {
        let e = document::load(&write(&dir, name, bytes)).unwrap_err();
        assert!(matches!(e, DocumentError::Empty(_)), "{e}");
    }
    let e = document::load(&write(&dir, "empty.html", b"<html><body> </body></html>")).unwrap_err();
    assert!(matches!(e, DocumentError::Empty(_)), "{e}");
    let e = document::load(&dir.join("missing.md")).unwrap_err();
    assert!(matches!(e, DocumentError::Unreadable { .. }), "{e}");
}

// ---------- A real long document ----------

/// The Rust book, on one page, from the toolchain's rust-docs component.
fn rust_book() -> PathBuf {
    let out = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .unwrap();
    let sysroot = String::from_utf8(out.stdout).unwrap();
    let p = Path::new(sysroot.trim()).join("share/doc/rust/html/book/print.html");
    assert!(
        p.exists(),
        "{} is missing: run `rustup component add rust-docs`",
        p.display()
    );
    p
}

fn alphanumerics(s: &str) -> usize {
    s.chars().filter(|c| c.is_alphanumeric()).count()
}

#[test]
fn the_rust_book_keeps_its_chapters_and_its_text() {
    let path = rust_book();
    let doc = document::load(&path).unwrap();
    assert_eq!(doc.title, "The Rust Programming Language");
    assert_tiles(&doc);
    assert!(doc.sections.len() > 200, "{} sections", doc.sections.len());
    let t = titles(&doc);
    let at = |name: &str| {
        t.iter()
            .position(|x| *x == Some(name))
            .unwrap_or_else(|| panic!("no section titled {name:?}"))
    };
    assert!(at("Getting Started") < at("Common Programming Concepts"));
    assert!(at("Common Programming Concepts") < at("Understanding Ownership"));
    for (i, s) in doc.sections.iter().enumerate() {
        assert_eq!(s.number, i + 1);
        if let Some(title) = &s.title {
            assert!(
                doc.text[s.start..s.end].starts_with(title.as_str()),
                "{s:?}"
            );
        }
    }
    for sentence in [
        "Ownership is Rust’s most unique feature and has deep implications for the rest of the language.",
        "The first command, cargo new, takes the name of the project (guessing_game)",
        "fn main() {\n    println!(\"Hello, world!\");\n}",
    ] {
        assert!(doc.text.contains(sentence), "lost: {sentence:?}");
    }
    // Nothing lost: the letters and digits of the book's <main>, counted by a plain DOM walk,
    // all come through (the page header and key-help popup outside <main> add a little).
    let html = std::fs::read_to_string(&path).unwrap();
    let dom = scraper::Html::parse_document(&html);
    let main = scraper::Selector::parse("main").unwrap();
    let want = alphanumerics(&dom.select(&main).next().unwrap().text().collect::<String>());
    let got = alphanumerics(&doc.text);
    assert!(
        want <= got && got < want + want / 100,
        "alphanumerics: {got} extracted, {want} in <main>"
    );
}

// ---------- The binary ----------

#[test]
fn extract_prints_marked_text_or_json_and_exits_2_on_a_broken_file() {
    let dir = common::temp_dir("docs-cli");
    let pdf_path = write(
        &dir,
        "report.pdf",
        &pdf_bytes(&mut pdf(&[PAGE_1, PAGE_2, IMAGE_ONLY, PAGE_4], None)),
    );
    let out = common::swaa(&["extract", pdf_path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("── page 1 ──\nPage one opens with an example"),
        "{text}"
    );
    assert!(text.contains("\n\n── page 2 ──\nSecond page"), "{text}");
    assert!(
        text.contains("\n\n── page 3 ──\n\n── page 4 ──\nFourth page"),
        "{text}"
    );

    let epub_path = dir.join("book.epub");
    epub(&epub_path, true, &[]);
    let out = common::swaa(&["extract", epub_path.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["title"], "A Small Book");
    assert_eq!(v["format"], "epub");
    let text = v["text"].as_str().unwrap();
    let pages = v["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[1]["number"], 2);
    assert_eq!(pages[1]["title"], "Chapter Two: The Harbour");
    let (s, e) = (
        pages[1]["start"].as_u64().unwrap() as usize,
        pages[1]["end"].as_u64().unwrap() as usize,
    );
    assert!(text[s..e].contains("Nets lay drying"));
    let out = common::swaa(&["extract", epub_path.to_str().unwrap()]);
    let marked = String::from_utf8(out.stdout).unwrap();
    assert!(marked.contains("── chapter 2: Chapter Two: The Harbour ──\n2. Harbour"));

    // `-` reads standard input.
    let out = common::swaa_with_stdin(&["extract", "-"], b"# Piped\n\nhello\n## Two\nworld\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "── section 1: Piped ──\n# Piped\n\nhello\n\n── section 2: Two ──\n## Two\nworld\n\n"
    );

    let bytes = std::fs::read(&pdf_path).unwrap();
    let cut = write(&dir, "cut.pdf", &bytes[..bytes.len() / 2]);
    common::fails_clearly(
        &common::swaa(&["extract", cut.to_str().unwrap()]),
        2,
        &["cut.pdf", "truncated or corrupt"],
    );
    common::fails_clearly(
        &common::swaa(&["extract", "--json", dir.join("none.pdf").to_str().unwrap()]),
        2,
        &["none.pdf"],
    );
}
