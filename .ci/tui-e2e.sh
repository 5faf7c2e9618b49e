#!/usr/bin/env bash
# End to end in a real terminal: the reader runs under tmux (fixed size), reads a section
# range of assets/sample.md (--pages) with smollm2-135m and labels it so, answers a question
# whose answer is in the sample (assets/sample-facts.json), changes a recipe with a `:`
# command, copies the answer (OSC 52, kept by tmux as a paste buffer), saves, stops an answer
# with Ctrl-C and quits with a second one, which saves the conversation again (same file).
# Re-read decisions: FA decode and thinking apply at once (and the next question prefills only
# itself), a window change re-reads (its re-reads are cut short by the next step, so they cost
# seconds).
# Every step polls the screen with a timeout; the captured screens are kept in $TUI_E2E_OUT
# (default target/tui-e2e). Exits non-zero, printing the last screen, on any failure.
#
# Uses the debug binary that CI already built (SWAA_CHAT_BIN overrides), and the full recipe:
# the 135M model needs every token to find a fact in a 4,200-token text.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${SWAA_CHAT_BIN:-target/debug/swaa-chat}
OUT=${TUI_E2E_OUT:-target/tui-e2e}
LIMIT=${TUI_E2E_TIMEOUT:-300}
QUESTION="How tall is Greyhollow Tower?"
ACCEPT='52|fifty-two|fifty two'

command -v tmux >/dev/null || { echo "tui-e2e: tmux is missing (apt-get install -y tmux)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "tui-e2e: $BIN is missing: run cargo build first" >&2; exit 1; }
mkdir -p "$OUT"
rm -f "$OUT"/*.txt
data=$(mktemp -d)
export SWAA_CHAT_READS="$data/reads"   # read cache: this run's stored reads only (see the last block)
sock="swaa-e2e-$$"
T() { tmux -L "$sock" "$@"; }
cleanup() { T kill-server 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT

screen() { T capture-pane -p -t e2e; }
fail() {
  echo "tui-e2e: FAIL: $*" >&2
  screen | tee "$OUT/failure.txt" >&2 || true
  exit 1
}
# wait_for NAME REGEX [SECONDS]: polls the screen until REGEX matches, saves it as NAME.txt.
wait_for() {
  local name=$1 re=$2 limit=${3:-$LIMIT} start=$SECONDS
  while (( SECONDS - start < limit )); do
    if screen > "$OUT/$name.txt" 2>/dev/null && grep -Eq -- "$re" "$OUT/$name.txt"; then
      echo "tui-e2e: $name after $(( SECONDS - start )) s"
      return 0
    fi
    sleep 0.5
  done
  fail "no /$re/ on the screen within ${limit} s ($name)"
}
# first FILE REGEX: the first match on a saved screen.
first() { grep -Eo -- "$2" "$1" | head -1 || true; }
KV='[0-9]+L×[0-9,]+ tok'            # stats panel: layers × tokens held per layer
DECODE='decode +([0-9.]+ tok/s|–)'  # stats panel: decode rate

# Sections 1–7 of the sample's 14 hold the tower's height. Without a repetition penalty
# smollm2 repeats a sentence when asked to repeat a word: the loop stop is seen too.
T new-session -d -s e2e -x 160 -y 45 \
  "env SWAA_CHAT_DATA='$data' SWAA_CHAT_CONFIG='$data/none.toml' HF_HUB_OFFLINE=1 \
   '$BIN' assets/sample.md --pages 1-7 --model smollm2-135m --recipe full --max-tokens 64 \
   --repeat-penalty 1.0; \
   echo \"reader exited with status \$?\"; sleep 600"
# tmux keeps what an application copies with OSC 52 as a paste buffer.
T set -g set-clipboard on

wait_for reading 'reading [0-9,]+ / [0-9,]+ tok|read [0-9,]+ tokens' 120
wait_for read 'read [0-9,]+ tokens \(sections 1–7 of 14\): ask a question' "$LIMIT"
grep -q 'sections 1–7 of 14' "$OUT/read.txt" || fail "the stats do not say which sections were read"
grep -q "Lighthouses of the Skerrow Isles (sections 1–7 of 14)" "$OUT/read.txt" \
  || fail "the title does not say which part is read"
kv_before=$(first "$OUT/read.txt" "$KV")
decode_before=$(first "$OUT/read.txt" "$DECODE")
[ -n "$kv_before" ] || fail "no KV cache row in the stats panel"

T send-keys -t e2e -l "$QUESTION"
T send-keys -t e2e Enter
wait_for answered 'tok at [0-9.]+ tok/s · TTFT' "$LIMIT"
kv_after=$(first "$OUT/answered.txt" "$KV")
decode_after=$(first "$OUT/answered.txt" "$DECODE")
echo "tui-e2e: KV full layers $kv_before → $kv_after; decode $decode_before → $decode_after"
[ "$kv_before" != "$kv_after" ] || fail "the KV cache did not grow with the question and answer"
[[ "$decode_after" =~ [0-9.]+\ tok/s ]] || fail "no decode rate after the answer: '$decode_after'"

# A `:` command instead of F4 (terminals and tmux often take the F-keys).
T send-keys -t e2e -l ":fa-decode on"
T send-keys -t e2e Enter
wait_for recipe 'applies at once' 30
grep -Eq 'F4 FA decode +on' "$OUT/recipe.txt" || fail "the recipe panel does not show FA decode on"

# Ctrl-Y copies the last answer: the OSC 52 sequence reaches tmux, which keeps it.
T send-keys -t e2e C-y
wait_for copied 'copied the last answer' 30
copied=$(T show-buffer 2>/dev/null || true)
echo "tui-e2e: copied: $(echo "$copied" | tr '\n' ' ' | cut -c1-80)"
grep -Eiq -- "$ACCEPT" <<<"$copied" || fail "no OSC 52 copy of the answer reached tmux: '$copied'"

# A window changes what reading computed: the reader re-reads the document and the chat, with
# a reading bar; back to full attention it re-reads again (the one started is stopped first).
T send-keys -t e2e -l ":window 1024"
T send-keys -t e2e Enter
wait_for rereading 're-reading with W=1024' 30
wait_for rereading-bar 'reading [0-9,]+ / [0-9,]+ tok' 60
T send-keys -t e2e -l ":window full"
T send-keys -t e2e Enter
wait_for rereading-full 're-reading with full' 60

# `:pages` reads the sections again for a new conversation, in which smollm2, asked to repeat
# a word, repeats a sentence: the loop stop ends the answer with a note, before the token cap.
T send-keys -t e2e -l ":pages 1-7"
T send-keys -t e2e Enter
wait_for reread 'read [0-9,]+ tokens \(sections 1–7 of 14\): ask a question' "$LIMIT"
T send-keys -t e2e -l "Repeat the word tower forever."
T send-keys -t e2e Enter
wait_for looped 'stopped: the answer repeated' "$LIMIT"

T send-keys -t e2e C-s
wait_for saved 'saved the conversation to' 30
saved=$(ls "$data"/conversations/*.md 2>/dev/null | head -1)
[ -n "$saved" ] || fail "no conversation file in $data/conversations"
[[ "$(basename "$saved")" =~ ^sample-[0-9]{8}-[0-9]{4}\.md$ ]] || fail "the file is not named after the document and the time: $saved"
grep -q '^Read: sections 1–7 of 14' "$saved" || fail "the saved conversation does not say which sections were read"
cp "$saved" "$OUT/conversation.md"
answer=$(awk -v q="## $QUESTION" '$0 == q {on=1; next} on && /^\*recipe/ {exit} on' "$saved")
echo "tui-e2e: answer: $(echo "$answer" | tr '\n' ' ')"
grep -Eiq -- "$ACCEPT" <<<"$answer" || fail "the answer does not say $ACCEPT"
# The first words of the answer as the screen shows them (list and heading marks are drawn).
first_words=$(echo "$answer" | grep -m1 -E '[[:alnum:]]' \
  | sed -E 's/^[[:space:]]*//; s/^([-*+>#]+|[0-9]+[.)]) +//; s/[*_`]//g' | cut -d' ' -f1-3)
grep -qF -- "$first_words" "$OUT/answered.txt" || fail "the answer '$first_words' is not on the screen"

# Ctrl-C as in shells: the first stops the answer running, the second quits, saving the
# conversation (the one file saved above, now with the stopped answer too). Thinking is turned
# on first: it applies at once (smollm2 gets a step-by-step line on new questions only), so the
# question after it prefills only itself (one chunk, no bar), where a re-rendered conversation
# would show a long prompt bar from its start.
T send-keys -t e2e -l ":think on"
T send-keys -t e2e Enter
wait_for think 'think applies at once: no re-read needed' 30
T send-keys -t e2e -l "Describe every section of the text in detail."
T send-keys -t e2e Enter
# The question's prefill is a fraction of a second and smollm2's answer a few seconds on a
# fast CPU: the screen is polled tightly, and Ctrl-C goes as soon as the answer runs.
start=$SECONDS seen=
while screen > "$OUT/answering2.txt" 2>/dev/null; do
  if grep -Eq 'prompt [0-9,]+ / [0-9,]+ tok' "$OUT/answering2.txt"; then
    fail "the question after :think on prefilled the conversation again"
  fi
  if grep -q 'reading the question' "$OUT/answering2.txt"; then
    seen=1
  elif [ -n "$seen" ] || grep -q 'answering… Esc cancels' "$OUT/answering2.txt"; then
    break
  fi
  (( SECONDS - start < 120 )) || fail "no answer began within 120 s (answering2)"
  sleep 0.05
done
echo "tui-e2e: the question after :think on answered after $(( SECONDS - start )) s, no re-read"
T send-keys -t e2e C-c
wait_for stopped '— cancelled|Ctrl-C again quits' 60
grep -q 'reader exited' "$OUT/stopped.txt" && fail "the first Ctrl-C quit instead of stopping the answer"
T send-keys -t e2e C-c
wait_for quit 'reader exited with status' 60
grep -q 'reader exited with status 0' "$OUT/quit.txt" || fail "the reader did not exit cleanly"
if grep -q 'panicked' "$OUT/quit.txt"; then fail "the reader panicked"; fi
grep -q "saved the conversation to $saved" "$OUT/quit.txt" || fail "quitting did not say where it saved"
[ "$(ls "$data"/conversations/*.md | wc -l)" -eq 1 ] || fail "quitting wrote a second file instead of updating $saved"
grep -q "## Describe every section of the text in detail." "$saved" || fail "the autosave on quit lacks the last question"
echo "tui-e2e: passed (screens in $OUT)"

# ── read cache (issue 14) ──────────────────────────────────────────────────────────────────
# Reopening the same part of the sample with the same model and recipe restores the first
# read that the session above stored (in $SWAA_CHAT_READS) instead of reading it again.
T kill-server 2>/dev/null || true
sock="$sock-reopen"   # a server of its own: the old one may still be exiting
T new-session -d -s e2e -x 160 -y 45 \
  "env SWAA_CHAT_DATA='$data' SWAA_CHAT_CONFIG='$data/none.toml' HF_HUB_OFFLINE=1 \
   '$BIN' assets/sample.md --pages 1-7 --model smollm2-135m --recipe full --max-tokens 64; \
   echo \"reader exited with status \$?\"; sleep 600"
wait_for restored 'restored [0-9,]+ tokens from cache, [0-9.]+ MiB, [0-9.]+ s' 120
T send-keys -t e2e C-c
wait_for quit-restored 'reader exited with status' 60
grep -q 'reader exited with status 0' "$OUT/quit-restored.txt" || fail "the reopened reader did not exit cleanly"
echo "tui-e2e: read cache passed: $(first "$OUT/restored.txt" 'restored [0-9,]+ tokens from cache, [0-9.]+ MiB, [0-9.]+ s')"
# ── end read cache ─────────────────────────────────────────────────────────────────────────
