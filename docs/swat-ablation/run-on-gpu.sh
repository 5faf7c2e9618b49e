#!/bin/bash
# The SWAT ablation on the GPU machine, as run for report.md: copy this script into an ignored
# folder with swaa-chat.gz (the gzipped CUDA build) and books/ (the Rust books as single HTML
# pages: book, reference, cargo, rustc, nomicon, rust-by-example, edition-guide, embedded-book),
# carry that folder, and call it with $1 = minutes of training in this call (add a second
# argument to write the report from unfinished checkpoints). Checkpoints live in
# /tmp/swat-cmp (kept while the machine stays warm); calling it again continues them, then
# evaluates and writes the report into $OUT. 2026-12-01: 9.0 + 9.2 + 4.3 minutes.
set -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
B=/tmp/swaa-chat
[ -x $B ] || { gunzip -c "$here/swaa-chat.gz" > $B && chmod +x $B; } || exit 1
mkdir -p /tmp/swat-books && cp -n "$here"/books/*.html /tmp/swat-books/
export LD_LIBRARY_PATH=/usr/local/cuda/lib64
nvidia-smi -L
ls /tmp/swat-cmp 2>/dev/null | tr '\n' ' '; echo
T=$(ls /tmp/swat-books/*.html | paste -sd, -)
time $B swat compare --text "$T" --preset small --window 128 --seq-len 1024 --steps 1000 \
  --batch 16 --device cuda --jobs 1 --minutes "$1" ${2:+--report-unfinished} --out /tmp/swat-cmp 2>&1 | tee -a "$OUT/log.txt"
for f in report.md report.json heads.md loss.svg ppl.svg ppl.md; do
  [ -f /tmp/swat-cmp/$f ] && cp /tmp/swat-cmp/$f "$OUT/"
done
true
