//! Stored reads: a read saved after it finished and restored by a later session answers as if
//! the book had never been closed; damaged, foreign or half-written entries are ignored with a
//! note and the book is read again; the budget evicts the least recently used.
//! The tiny random llama with smollm2's tokenizer keeps each case well under a second.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use candle_core::Tensor;
use common::{session_opts, tiny_session};
use swaa_chat::engine::{EngineError, Event, Session, SessionOptions};
use swaa_chat::model::{KvCache, Logits};
use swaa_chat::readcache::{ReadCache, Store};
use swaa_chat::recipe::{Phase, Preset, Recipe, RecipeDefaults};

/// W and K small enough that a 400-word document evicts in sliding layers.
const D: RecipeDefaults = RecipeDefaults {
    window: 64,
    sink: 4,
};

fn doc(words: usize, salt: usize) -> String {
    (0..words)
        .map(|i| format!("word{} ", (i * 7 + salt) % 97))
        .collect()
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = common::temp_dir("read-cache").join(name);
    let _ = fs::remove_dir_all(&d);
    d
}

fn cache_at(dir: &Path, budget_bytes: u64) -> ReadCache {
    ReadCache {
        store: Store {
            dir: dir.to_path_buf(),
            budget_bytes,
        },
        model: "tiny-test-model".into(),
        model_name: "tiny".into(),
    }
}

/// A session on the tiny model with `text` loaded and the read cache at `dir`.
fn opened(recipe: Recipe, dir: &Path, budget: u64, text: &str) -> Session {
    let mut s = tiny_session(
        recipe,
        SessionOptions {
            read_cache: Some(cache_at(dir, budget)),
            ..session_opts(32, 8)
        },
    );
    s.load_document("Book", text);
    s
}

fn read(s: &mut Session) -> Vec<Event> {
    let mut events = Vec::new();
    s.read(&mut |e| events.push(e), &AtomicBool::new(false))
        .unwrap();
    events
}

fn notes(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Note { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// Whether the model read (progress before the end), rather than a restore (one final report).
fn computed(events: &[Event]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::Progress { done, total, .. } if done < total))
}

/// Reads `text` under `recipe` into the store at `dir` and closes the session (which waits
/// for the save). Returns the entry's path.
fn store_read(recipe: Recipe, dir: &Path, text: &str) -> PathBuf {
    let before = entries(dir);
    let mut s = opened(recipe, dir, 1 << 30, text);
    assert!(computed(&read(&mut s)), "a first read reads");
    drop(s);
    let after = entries(dir);
    let new: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(new.len(), 1, "one entry stored: {after:?}");
    new[0].clone()
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|x| x == "read"));
    v.sort();
    v
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Two caches hold the same positions with bit-identical K and V.
fn assert_same_cache(a: &KvCache, b: &KvCache, what: &str) {
    assert_eq!(a.next_pos(), b.next_pos(), "{what}: position");
    let all = vec![true; a.layers()];
    let (ea, eb) = (a.export(&all).unwrap(), b.export(&all).unwrap());
    for (l, (x, y)) in ea.iter().zip(&eb).enumerate() {
        assert_eq!(a.held(l), b.held(l), "{what}: layer {l} positions");
        assert_eq!(values(&x.k), values(&y.k), "{what}: layer {l} K");
        assert_eq!(values(&x.v), values(&y.v), "{what}: layer {l} V");
    }
}

/// The logits of `tokens` read after what `s` holds, on a copy of its cache.
fn next_logits(s: &Session, tokens: &[u32]) -> Vec<f32> {
    let mut cache = s.cache().fork().unwrap();
    let logits = s
        .model()
        .forward(tokens, &mut cache, s.recipe(), Phase::Prefill, Logits::Last)
        .unwrap()
        .unwrap();
    values(&logits)
}

fn ask(s: &mut Session, q: &str) -> (String, Vec<Event>) {
    let mut events = Vec::new();
    let a = s
        .ask(q, &mut |e| events.push(e), &AtomicBool::new(false))
        .unwrap();
    (a.text, events)
}

#[test]
fn every_recipe_restores_a_read_that_answers_as_if_never_closed() {
    let text = doc(400, 0);
    for preset in Preset::ALL {
        let recipe = Recipe::preset(preset, D);
        let dir = fresh_dir(preset.name());
        // The book as read and never closed: a snapshot of the read, in a session of its own.
        let mut first = opened(recipe.clone(), &dir, 1 << 30, &text);
        read(&mut first);
        let snap = first.snapshot().unwrap();
        drop(first);
        let mut never_closed = tiny_session(recipe.clone(), session_opts(32, 8));
        never_closed.restore(&snap).unwrap();

        let mut reopened = opened(recipe.clone(), &dir, 1 << 30, &text);
        let events = read(&mut reopened);
        assert!(!computed(&events), "{preset:?}: restored, not read");
        let restored = notes(&events);
        assert!(
            restored.len() == 1
                && restored[0].starts_with("restored ")
                && restored[0].contains(" tokens from cache, "),
            "{preset:?}: {restored:?}"
        );
        let n = never_closed.cache().next_pos();
        assert!(
            restored[0].contains(&swaa_chat::units::int(n)),
            "{preset:?}: the note counts the {n} tokens: {restored:?}"
        );
        assert!(reopened.stats().restored.is_some());
        assert_same_cache(never_closed.cache(), reopened.cache(), preset.name());
        if recipe.window.is_some() && !recipe.fa_decode {
            assert!(
                reopened.cache().stats().tokens_per_layer.iter().min() < Some(&n),
                "{preset:?}: sliding layers store only sink + W"
            );
        }

        let question = reopened.tokenizer().encode("What is it?", false).unwrap();
        assert_eq!(
            next_logits(&never_closed, &question),
            next_logits(&reopened, &question),
            "{preset:?}: the next question's logits"
        );
        for q in ["What is this book about?", "And the second word?"] {
            let (a, _) = ask(&mut never_closed, q);
            let (b, _) = ask(&mut reopened, q);
            assert_eq!(a, b, "{preset:?}: answer to {q:?}");
            assert_same_cache(never_closed.cache(), reopened.cache(), q);
        }
    }
}

fn damaged_entry_is_read_again(name: &str, damage: impl Fn(&Path), expect: &str) {
    let dir = fresh_dir(name);
    let text = doc(300, 1);
    let recipe = Recipe::preset(Preset::Swaa, D);
    let path = store_read(recipe.clone(), &dir, &text);
    damage(&path);
    let mut s = opened(recipe.clone(), &dir, 1 << 30, &text);
    let events = read(&mut s);
    assert!(computed(&events), "{name}: the book is read again");
    let n = notes(&events);
    assert!(
        n.len() == 1 && n[0].contains(expect) && n[0].contains("reading the document again"),
        "{name}: one note saying {expect:?}: {n:?}"
    );
    assert!(!n[0].contains('\n'), "{name}: one line");
    // The read just made replaces the bad entry: the next open restores.
    drop(s);
    let mut again = opened(recipe, &dir, 1 << 30, &text);
    let events = read(&mut again);
    assert!(
        !computed(&events),
        "{name}: restored after the re-read stored it"
    );
}

#[test]
fn a_corrupt_entry_is_read_again_with_a_note() {
    damaged_entry_is_read_again(
        "corrupt",
        |p| {
            let mut b = fs::read(p).unwrap();
            let i = b.len() - 100;
            b[i] ^= 0x40;
            fs::write(p, b).unwrap();
        },
        "checksum",
    );
}

#[test]
fn a_truncated_entry_is_read_again_with_a_note() {
    damaged_entry_is_read_again(
        "truncated",
        |p| {
            let f = fs::OpenOptions::new().write(true).open(p).unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len / 2).unwrap();
        },
        "truncated",
    );
}

#[test]
fn an_entry_of_another_format_version_is_read_again_with_a_note() {
    damaged_entry_is_read_again(
        "version",
        |p| {
            let mut b = fs::read(p).unwrap();
            b[8..12].copy_from_slice(&99u32.to_le_bytes());
            fs::write(p, b).unwrap();
        },
        "another version",
    );
}

#[test]
fn a_file_that_is_not_a_stored_read_is_read_again_with_a_note() {
    damaged_entry_is_read_again(
        "garbage",
        |p| fs::write(p, b"not a stored read at all").unwrap(),
        "not a stored read",
    );
}

#[test]
fn a_mismatched_entry_is_read_again_with_a_note() {
    let dir = fresh_dir("mismatch");
    let recipe = Recipe::preset(Preset::Swa, D);
    let (a, b) = (doc(300, 2), doc(300, 3));
    let path_a = store_read(recipe.clone(), &dir, &a);
    // Another book's entry under the name of book A's key.
    let scratch = fresh_dir("mismatch-other");
    let path_b = store_read(recipe.clone(), &scratch, &b);
    fs::copy(&path_b, &path_a).unwrap();
    let mut s = opened(recipe, &dir, 1 << 30, &a);
    let events = read(&mut s);
    assert!(computed(&events), "book A is read again");
    let n = notes(&events);
    assert!(n.len() == 1 && n[0].contains("key differs"), "{n:?}");
}

#[test]
fn the_budget_evicts_the_least_recently_used_read() {
    let dir = fresh_dir("budget");
    let recipe = Recipe::preset(Preset::Swa, D);
    let books: Vec<String> = (0..3).map(|i| doc(300, 10 + i)).collect();
    let a = store_read(recipe.clone(), &dir, &books[0]);
    let size = fs::metadata(&a).unwrap().len();
    // Room for two entries of this size, not three.
    let budget = size * 5 / 2;
    let pause = || std::thread::sleep(Duration::from_millis(20));
    pause();
    let mut s = opened(recipe.clone(), &dir, budget, &books[1]);
    read(&mut s);
    drop(s);
    pause();
    // Restoring A makes it the most recently used; B is now the oldest.
    let mut s = opened(recipe.clone(), &dir, budget, &books[0]);
    assert!(!computed(&read(&mut s)));
    drop(s);
    pause();
    let mut s = opened(recipe.clone(), &dir, budget, &books[2]);
    read(&mut s);
    drop(s);
    assert_eq!(entries(&dir).len(), 2, "two entries fit the budget");
    for (i, kept) in [(0, true), (1, false), (2, true)] {
        let mut s = opened(recipe.clone(), &dir, 1 << 30, &books[i]);
        assert_eq!(!computed(&read(&mut s)), kept, "book {i} kept: {kept}");
    }
    // An entry larger than the whole budget is not stored, and says why.
    let tiny = fresh_dir("budget-tiny");
    let mut s = opened(recipe, &tiny, 1000, &books[0]);
    read(&mut s);
    let (_, events) = ask(&mut s, "Why?");
    drop(s);
    assert!(entries(&tiny).is_empty());
    let n = notes(&events);
    assert!(n.iter().any(|m| m.contains("budget")), "{n:?}");
}

#[test]
fn an_interrupted_write_leaves_no_entry_that_is_used() {
    let dir = fresh_dir("interrupted");
    let recipe = Recipe::preset(Preset::SwaSink, D);
    let text = doc(300, 4);
    let path = store_read(recipe.clone(), &dir, &text);
    // A write that never reached its rename: the temporary file holds a whole entry.
    let tmp = path.with_extension("12345.tmp");
    fs::rename(&path, &tmp).unwrap();
    let mut s = opened(recipe.clone(), &dir, 1 << 30, &text);
    let events = read(&mut s);
    assert!(computed(&events), "the temporary file is not restored");
    assert!(notes(&events).is_empty(), "{:?}", notes(&events));
    drop(s);
    let store = Store {
        dir: dir.clone(),
        budget_bytes: 1 << 30,
    };
    assert_eq!(store.list().len(), 1, "only the finished entry is listed");
    // Left over from long ago: the next eviction pass removes it.
    let old = SystemTime::now() - Duration::from_secs(7200);
    fs::File::options()
        .append(true)
        .open(&tmp)
        .unwrap()
        .set_modified(old)
        .unwrap();
    store.evict(None);
    assert!(!tmp.exists(), "a stale temporary file is removed");
    assert_eq!(entries(&dir).len(), 1);
}

#[test]
fn an_unwritable_cache_folder_is_a_note_never_a_failed_read() {
    let base = fresh_dir("unwritable");
    fs::create_dir_all(&base).unwrap();
    let file = base.join("a-file");
    fs::write(&file, "not a folder").unwrap();
    // Its folder cannot be created (even by root): a parent is a file.
    let dir = file.join("reads");
    let mut s = opened(Recipe::preset(Preset::Swa, D), &dir, 1 << 30, &doc(200, 5));
    let events = read(&mut s);
    assert!(computed(&events));
    let (answer, events) = ask(&mut s, "What is it?");
    assert!(!answer.is_empty() || !events.is_empty());
    let n = notes(&events);
    assert!(
        n.len() == 1 && n[0].contains("could not store the read"),
        "{n:?}"
    );
}

#[test]
fn a_cancelled_read_is_not_stored() {
    let dir = fresh_dir("cancelled");
    let recipe = Recipe::preset(Preset::Full, D);
    let text = doc(400, 6);
    let mut s = opened(recipe.clone(), &dir, 1 << 30, &text);
    let cancel = AtomicBool::new(false);
    let err = s
        .read(
            &mut |e| {
                if matches!(e, Event::Progress { .. }) {
                    cancel.store(true, Ordering::Relaxed);
                }
            },
            &cancel,
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::Cancelled));
    assert!(entries(&dir).is_empty(), "a partial read is not stored");
    // Resumed to the end, the read is whole and stored.
    assert!(computed(&read(&mut s)));
    drop(s);
    assert_eq!(entries(&dir).len(), 1);
}

#[test]
fn a_recipe_change_restores_another_stored_read_of_the_same_book() {
    let dir = fresh_dir("switch");
    let text = doc(300, 7);
    let (swa, full) = (
        Recipe::preset(Preset::Swa, D),
        Recipe::preset(Preset::Full, D),
    );
    let mut s = opened(swa.clone(), &dir, 1 << 30, &text);
    read(&mut s);
    let mut events = Vec::new();
    let never = AtomicBool::new(false);
    assert!(s.set_recipe(full), "full attention re-reads after SWA");
    s.reread(&mut |e| events.push(e), &never).unwrap();
    assert!(computed(&events), "no full read stored yet");
    events.clear();
    assert!(s.set_recipe(swa));
    s.reread(&mut |e| events.push(e), &never).unwrap();
    assert!(!computed(&events), "the SWA read is restored");
    assert!(notes(&events)[0].starts_with("restored "));
    assert_eq!(entries(&dir).len(), 2, "one entry per recipe");
}

#[test]
fn a_recipe_change_during_a_chat_restores_the_document_and_reads_only_the_chat() {
    let text = doc(300, 8);
    let (swa, full) = (
        Recipe::preset(Preset::Swa, D),
        Recipe::preset(Preset::Full, D),
    );
    let never = AtomicBool::new(false);
    // The same steps in two sessions: one finds the SWA read stored, one has an empty store.
    let stored = fresh_dir("chat-switch");
    drop(store_read(swa.clone(), &stored, &text));
    let empty = fresh_dir("chat-switch-empty");
    let mut runs = Vec::new();
    for dir in [&stored, &empty] {
        let mut s = opened(full.clone(), dir, 1 << 30, &text);
        read(&mut s);
        ask(&mut s, "What is this book about?");
        let mut events = Vec::new();
        assert!(s.set_recipe(swa.clone()));
        s.reread(&mut |e| events.push(e), &never).unwrap();
        runs.push((s, events));
    }
    let (restored, computed_all) = (&runs[0], &runs[1]);
    let n = notes(&restored.1);
    assert!(n.len() == 1 && n[0].starts_with("restored "), "{n:?}");
    assert!(notes(&computed_all.1).is_empty());
    let progress = |events: &[Event]| -> Vec<(usize, usize)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Progress { done, total, .. } => Some((*done, *total)),
                _ => None,
            })
            .collect()
    };
    let (p_restored, p_all) = (progress(&restored.1), progress(&computed_all.1));
    assert!(
        p_restored.len() < p_all.len(),
        "only the chat is read: {p_restored:?}"
    );
    assert!(
        p_all
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 == w[1].1),
        "one progress from 0 to the end over both parts: {p_all:?}"
    );
    assert_eq!(p_restored.last(), p_all.last());
    assert_same_cache(
        restored.0.cache(),
        computed_all.0.cache(),
        "after the re-read",
    );
    let mut runs = runs;
    let a = ask(&mut runs[0].0, "And then?").0;
    let b = ask(&mut runs[1].0, "And then?").0;
    assert_eq!(a, b, "the follow-up");
    // The computed re-read stored its document part under the new recipe.
    drop(runs);
    let mut s = opened(swa, &empty, 1 << 30, &text);
    assert!(!computed(&read(&mut s)));
}

#[test]
fn a_save_in_flight_is_not_disturbed_when_eviction_starts_at_once() {
    let dir = fresh_dir("evict-at-once");
    let text = doc(400, 9);
    let fadec = Recipe::preset(Preset::SwaFadec, D);
    let mut s = opened(fadec.clone(), &dir, 1 << 30, &text);
    read(&mut s);
    let snap = s.snapshot().unwrap();
    // FA decode off applies without a re-read: sliding layers start to evict and compact.
    let off = Recipe {
        fa_decode: false,
        ..fadec.clone()
    };
    assert!(!s.set_recipe(off));
    ask(&mut s, "What is this book about?");
    drop(s);
    let mut never_closed = tiny_session(fadec.clone(), session_opts(32, 8));
    never_closed.restore(&snap).unwrap();
    let mut reopened = opened(fadec, &dir, 1 << 30, &text);
    assert!(!computed(&read(&mut reopened)));
    assert_same_cache(never_closed.cache(), reopened.cache(), "the stored read");
}
