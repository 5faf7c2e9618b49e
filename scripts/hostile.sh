#!/usr/bin/env bash
# The hostile-input corpus (tests/hostile): builds the debug binary if needed and runs every
# case under a 60 s / 8 GiB cap; --fast is CI's subset (no large cases, fewer mutations and
# model cases, 20 s cap). Other flags go to tests/hostile/run.py (--filter pdf/, --jobs N,
# --strict). Exit 1 if a case hung, ran out of memory, panicked, crashed, printed raw
# controls or refused a valid input (unclear messages too with --strict), unless it is
# listed in tests/hostile/known.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked
exec python3 tests/hostile/run.py "$@"
