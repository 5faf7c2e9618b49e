#!/usr/bin/env bash
# A new user's path, timed in a real terminal (tmux): the README's first command on the sample
# with the default model, then a part of a long PDF read by page range, each up to a correct
# answer. Prints seconds from launch to the screen, to "read", to the answer's first token
# ("TTFT" on screen) and the answer line. Nothing is restored from an earlier read (a fresh
# read cache), so the times are a first visit's.
#
#   scripts/new-user-path.sh [BOOK.pdf PAGES QUESTION ACCEPT_REGEX]
#
# Default book: the Valgrind manual that Debian's valgrind package ships (397 pages),
# `zcat /usr/share/doc/valgrind/valgrind_manual.pdf.gz > /tmp/valgrind_manual.pdf`.
# SWAA_CHAT_BIN picks the binary (default target/release/swaa-chat); extra flags for both
# runs go in SWAA_FLAGS (e.g. "--device cuda").
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SWAA_CHAT_BIN:-target/release/swaa-chat}
BOOK=${1:-/tmp/valgrind_manual.pdf}
PAGES=${2:-40-60}
BOOK_Q=${3:-"Which environment variable can hold default Valgrind options?"}
BOOK_OK=${4:-VALGRIND_OPTS}
FLAGS=${SWAA_FLAGS:-}
command -v tmux >/dev/null || { echo "new-user-path: tmux is missing" >&2; exit 1; }
[ -x "$BIN" ] || { echo "new-user-path: $BIN is missing: cargo build --release" >&2; exit 1; }
[ -f "$BOOK" ] || { echo "new-user-path: $BOOK is missing (see the header)" >&2; exit 1; }
data=$(mktemp -d)
sock="swaa-path-$$"
T() { tmux -L "$sock" "$@"; }
trap 'T kill-server 2>/dev/null || true; rm -rf "$data"' EXIT

# run NAME QUESTION ACCEPT ARGS…: one reader session, timed from its launch.
run() {
  local name=$1 q=$2 ok=$3
  shift 3
  T kill-server 2>/dev/null || true
  local t0=$SECONDS
  T new-session -d -s p -x 160 -y 45 \
    "env SWAA_CHAT_DATA='$data' SWAA_CHAT_READS='$data/reads-$name' SWAA_CHAT_CONFIG='$data/none.toml' \
     HF_HUB_OFFLINE=1 '$BIN' $* $FLAGS; sleep 600"
  wait_until() {
    while ! T capture-pane -p -t p | grep -Eq -- "$1"; do
      (( SECONDS - t0 < 1800 )) || { T capture-pane -p -t p; echo "$name: no /$1/" >&2; exit 1; }
      sleep 0.5
    done
    echo $(( SECONDS - t0 ))
  }
  local shown read answered
  shown=$(wait_until 'swaa-chat')
  read=$(wait_until 'read [0-9,]+ tokens.*ask a question')
  T send-keys -t p -l "$q"
  T send-keys -t p Enter
  # The stats pane shows a TTFT figure once the answer is done.
  answered=$(wait_until 'TTFT +[0-9.]+ s')
  T capture-pane -p -t p > "$data/$name.txt"
  local ttft verdict
  ttft=$(grep -Eo 'TTFT [0-9.]+ ?s' "$data/$name.txt" | tail -1)
  verdict=$(grep -Eiq -- "$ok" "$data/$name.txt" && echo correct || echo WRONG)
  echo "| $name | $shown s | $read s | $answered s | $ttft | $verdict |"
  grep -Eo '(prefill|decode|read) +[0-9,.]+ [/a-z0-9,. ]+' "$data/$name.txt" | head -4 | sed 's/^/    /'
}
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $($BIN --version 2>/dev/null || echo "$BIN")"
echo "| run | screen | read done | answered | TTFT | answer |"
echo "|---|---:|---:|---:|---:|---|"
run sample "How tall is Greyhollow Tower?" '52|fifty-two' assets/sample.md
run book "$BOOK_Q" "$BOOK_OK" --pages "$PAGES" "$BOOK"
