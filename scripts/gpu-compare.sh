#!/usr/bin/env bash
# GPU speed side by side in one call on one GPU (issue 18): swaa-chat's bench against the lean
# PyTorch decoder (prefill, random weights in each preset's shape) and llama.cpp (decode, on the
# same GGUF), printing both and their ratios. Runs on the GPU machine:
#
#   scripts/gpu-compare.sh BIN ANCHORS [GGUF_0.5B GGUF_1.5B]
#
# BIN: the CUDA build of swaa-chat; ANCHORS: a copy of shared/anchors (torch_swa_anchor.py,
# build-llamacpp-gpu.sh, llama.cpp-src.tgz). Without GGUFs only prefill is compared. Set
# TOKENS (default 8192,32768,131072) to shorten a run; the whole thing takes ~6 minutes.
set -u -o pipefail
bin=${1:?path to the CUDA swaa-chat binary}
anchors=${2:?path to a copy of shared/anchors}
g05=${3:-}
g15=${4:-}
tokens=${TOKENS:-8192,32768,131072}
out=${OUT:-/tmp}/gpu-compare
mkdir -p "$out"
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-/usr/local/cuda/lib64}
nvidia-smi -L

# llama.cpp builds in the background (~5 min on 16 cores) while the prefill runs.
[ -n "$g05" ] && bash "$anchors/build-llamacpp-gpu.sh" "$anchors/llama.cpp-src.tgz"

for shape in 0.5b 1.5b; do
  python3 "$anchors/torch_swa_anchor.py" "qwen2.5-$shape" "$tokens" > "$out/torch-$shape.jsonl" ||
    echo "torch anchor failed for $shape" >&2
  "$bin" bench --random-weights --preset "qwen2.5-coder-$shape" --device cuda --tokens "$tokens" \
    --recipes full,swa,swaa --window 2048 --sink 64 --decode 0 --json > "$out/ours-$shape.json" ||
    echo "swaa-chat bench failed for $shape" >&2
done
if [ -n "$g05" ]; then
  for pair in "0.5b:$g05" "1.5b:$g15"; do
    shape=${pair%%:*} gguf=${pair#*:}
    "$bin" bench --model "$gguf" --device cuda --tokens 32768 --recipes full,swa,swaa \
      --window 2048 --sink 64 --decode 64 --json > "$out/ours-decode-$shape.json"
    /tmp/lcpp/bench.sh "$gguf" > "$out/llamacpp-$shape.md"
  done
fi

python3 - "$out" <<'PY'
import json, os, re, sys
out = sys.argv[1]
def load(p):
    return json.load(open(p)) if os.path.exists(p) and os.path.getsize(p) else []
print("\n## Prefill tok/s: swaa-chat vs the PyTorch anchor (random bf16 weights, W=2048 K=64)\n")
print("| shape | recipe | tokens | swaa-chat | torch | ratio |\n|---|---|---:|---:|---:|---:|")
key = {"full": "prefill_fa_tok_s", "swa": "prefill_swa_tok_s", "swaa": "prefill_interleave_tok_s"}
for shape in ("0.5b", "1.5b"):
    torch = {}
    p = f"{out}/torch-{shape}.jsonl"
    if os.path.exists(p):
        for line in open(p):
            if line.startswith("{"):
                r = json.loads(line); torch[r["tokens"]] = r
    for r in load(f"{out}/ours-{shape}.json"):
        t = torch.get(r["tokens"], {}).get(key.get(r["recipe"], ""), 0)
        ratio = f"{r['prefill_tok_s'] / t:.2f}×" if t else "–"
        print(f"| {shape} | {r['recipe']} | {r['tokens']} | {r['prefill_tok_s']:,.0f} | {t:,.0f} | {ratio} |")
print("\n## Decode tok/s at 32k context: swaa-chat vs llama.cpp (same GGUF, flash attention on)\n")
print("| shape | recipe | swaa-chat | llama.cpp tg64 @ d32768 | ratio |\n|---|---|---:|---:|---:|")
for shape in ("0.5b", "1.5b"):
    lc = 0.0
    p = f"{out}/llamacpp-{shape}.md"
    if os.path.exists(p):
        for line in open(p):
            if "tg64 @ d32768" in line:
                m = re.search(r"\|\s*([\d.]+)\s*±", line)
                lc = float(m.group(1)) if m else 0.0
    for r in load(f"{out}/ours-decode-{shape}.json"):
        ratio = f"{r['decode_tok_s'] / lc:.2f}×" if lc else "–"
        print(f"| {shape} | {r['recipe']} | {r['decode_tok_s']:,.1f} | {lc:,.1f} | {ratio} |")
PY
