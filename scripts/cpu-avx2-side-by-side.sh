#!/usr/bin/env bash
# The AVX2 code paths side by side on an AVX-512 machine: llama.cpp built as for a CPU without
# AVX-512 or AVX-VNNI (the anchor's build script with those flags masked out, in a cache of its
# own), and swaa-chat with SWAA_CHAT_ISA=avx2, same GGUF, same cores, alternated twice as
# ../shared/anchors/cpu-side-by-side.sh does (whose loop this runs). Needs `cargo build --release`.
#   bash scripts/cpu-avx2-side-by-side.sh MODEL.gguf [TOKENS, default 512,4096] [ANCHORS]
set -eu
m=${1:?model .gguf}; toks=${2:-512,4096}
anchors=${3:-$(cd "$(dirname "$0")/../../shared/anchors" 2>/dev/null && pwd)}
[ -f "$anchors/cpu-side-by-side.sh" ] || { echo "no anchors at '$anchors': pass their folder" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
# The build script reads the CPU's flags from /proc/cpuinfo; these copies read them without
# AVX-512, AVX-VNNI and AMX, and find the source snapshot where the anchors are.
mask='grep -m1 "^flags" /proc/cpuinfo | tr " " "\\n" | grep -v -E "^(avx512.*|avx_vnni|amx.*)$" | tr "\\n" " "'
sed -e "s#^f=.*#f=\$($mask)#" -e "s#^here=.*#here=$anchors#" \
  "$anchors/build-llamacpp-cpu.sh" > "$work/build-llamacpp-cpu.sh"
cp "$anchors/cpu-side-by-side.sh" "$work/"
export SWAA_ANCHORS=${SWAA_ANCHORS_AVX2:-$HOME/.cache/swaa-anchors-avx2} SWAA_CHAT_ISA=avx2
echo "AVX2 paths: llama.cpp without AVX-512/AVX-VNNI, swaa-chat with SWAA_CHAT_ISA=avx2"
bash "$work/cpu-side-by-side.sh" "$m" "$toks"
