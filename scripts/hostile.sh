#!/usr/bin/env bash
# The hostile-input corpus (tests/hostile): builds the debug binary if needed and runs every
# case under a 60 s / 8 GiB cap; --fast is CI's subset (no large cases, a third of the
# mutations, 20 s cap). Other flags go to tests/hostile/run.py (--filter pdf/, --jobs N).
# Exit 1 if any case panicked, hung, ran out of memory, printed raw controls or was unclear.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked
exec python3 tests/hostile/run.py "$@"
