#!/usr/bin/env bash
# On the GPU machine: the book QA set (assets/books) on one model. Stage the model first
# (../shared/anchors/README.md: parts into /tmp/stage, joined), carry the CUDA binary as
# .gpu/bin/swaa-chat.gz and the books as assets/books/docs.
#   scripts/gpu-book-eval.sh MODEL.gguf EFFECTIVE_CTX MODES
# MODES: book modes under swaa at the model's own context (e.g. lexical,gold), or `off`:
# whole books under full and swaa with --ctx 131072 (YaRN ×4), for the books that fit it.
# Reports and results go to $OUT (or /tmp/book-eval) as MODEL-MODES-EFF-MAXTOKENS[-TAG].{md,jsonl}
# (MAX_TOKENS: answer cap, default 48; TAG: a name for a variant).
set -euo pipefail
model=$1 eff=$2 modes=$3
out=${OUT:-/tmp/book-eval}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64
bin=/tmp/swaa-chat
[ -x $bin ] || { gzip -dc .gpu/bin/swaa-chat.gz > $bin; chmod +x $bin; }
export SWAA_CHAT_DATA=/tmp/swaa-data SWAA_CHAT_CACHE=/tmp/swaa-cache
name=$(basename "$model" .gguf)-${modes//,/-}-$eff-${MAX_TOKENS:-48}${TAG:+-$TAG}
run=/tmp/eval-$name
common=(--task assets/books/books.jsonl --model "$model" --device cuda --max-tokens "${MAX_TOKENS:-48}" --out "$run")
if [ "$modes" = off ]; then
  $bin eval "${common[@]}" --recipes full,swaa --modes off --ctx 131072 > /tmp/$name.log 2>&1 || true
else
  $bin eval "${common[@]}" --recipes swaa --modes "$modes" --effective-ctx "$eff" > /tmp/$name.log 2>&1 || true
fi
mkdir -p "$out"
cp "$run/report.md" "$out/$name.md" 2>/dev/null || true
cp "$run/results.jsonl" "$out/$name.jsonl" 2>/dev/null || true
tail -n 15 /tmp/$name.log
