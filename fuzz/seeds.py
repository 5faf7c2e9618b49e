#!/usr/bin/env python3
"""Seed corpora for the fuzz targets: the hostile corpus's small files by kind, plus a tiny
valid GGUF (byte-level vocabulary), safetensors folder and chat templates, so the fuzzer
starts from inputs that get past the first checks. Writes corpus/<target>/; stdlib only.

    python3 seeds.py            # from fuzz/
"""

import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "hostile"))
import gguf  # noqa: E402

# libFuzzer mutates small inputs fastest; larger hostile cases stay in the corpus run by CI.
MAX_SEED = 64 * 1024
BY_EXT = {"pdf": ["pdf"], "epub": ["epub"], "html": ["html", "htm"], "text": ["txt", "md"],
          "config": ["toml"]}
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_vocab():
    """GPT-2's byte-to-character table: 256 tokens, every byte one of them."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars, n = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    table = dict(zip(keep, chars))
    return [chr(table[b]) for b in range(256)]


def tiny_gguf():
    tokens = byte_vocab() + ["<|im_start|>", "<|im_end|>"]
    v, arr = gguf.val, gguf.ARR
    tok = [("tokenizer.ggml.model", v(gguf.STR, "gpt2")),
           ("tokenizer.ggml.tokens", v(arr, (gguf.STR, tokens))),
           ("tokenizer.ggml.merges", v(arr, (gguf.STR, []))),
           ("tokenizer.ggml.token_type", v(arr, (gguf.I32, [1] * 256 + [3, 3]))),
           ("tokenizer.ggml.bos_token_id", v(gguf.U32, 256)),
           ("tokenizer.ggml.eos_token_id", v(gguf.U32, 257)),
           ("tokenizer.chat_template", v(gguf.STR, CHATML))]
    vocab = len(tokens)
    return gguf.write(gguf.tiny_kvs(tok, vocab), gguf.tiny_tensors(vocab, random.Random(3)))


def tiny_safetensors():
    """The tensors of `fuzzing::ST_CONFIG`'s one-layer qwen3 (hidden 8, 2 heads of 4, 1 KV)."""
    shapes = {"model.embed_tokens.weight": [64, 8], "model.norm.weight": [8]}
    p = "model.layers.0."
    shapes.update({p + "self_attn.q_proj.weight": [8, 8], p + "self_attn.k_proj.weight": [4, 8],
                   p + "self_attn.v_proj.weight": [4, 8], p + "self_attn.o_proj.weight": [8, 8],
                   p + "self_attn.q_norm.weight": [4], p + "self_attn.k_norm.weight": [4],
                   p + "mlp.gate_proj.weight": [16, 8], p + "mlp.up_proj.weight": [16, 8],
                   p + "mlp.down_proj.weight": [8, 16], p + "input_layernorm.weight": [8],
                   p + "post_attention_layernorm.weight": [8]})
    rnd = random.Random(4)
    header, data = {}, b""
    for name, shape in shapes.items():
        n = 1
        for d in shape:
            n *= d
        blob = struct.pack(f"<{n}f", *(rnd.uniform(-0.5, 0.5) for _ in range(n)))
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def main():
    out = os.path.join(HERE, "corpus")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, os.path.join(ROOT, "tests", "hostile", "gen.py"), "--out", tmp],
                       check=True, stdout=subprocess.DEVNULL)
        counts = {}
        for dirpath, _, files in os.walk(tmp):
            for f in files:
                path = os.path.join(dirpath, f)
                ext = f.rsplit(".", 1)[-1].lower()
                target = next((t for t, exts in BY_EXT.items() if ext in exts), None)
                if target is None or os.path.getsize(path) > MAX_SEED:
                    continue
                dst = os.path.join(out, target)
                os.makedirs(dst, exist_ok=True)
                name = os.path.relpath(path, tmp).replace(os.sep, "_")[-120:]
                shutil.copyfile(path, os.path.join(dst, name))
                counts[target] = counts.get(target, 0) + 1
    extra = {"gguf": {"tiny.gguf": tiny_gguf()},
             "safetensors": {"tiny.safetensors": tiny_safetensors()},
             "template": {"chatml": CHATML.encode() + b"\0How tall is the tower?",
                          "loop": b"{% for i in range(3) %}{{ messages[0]['content'] }}{% endfor %}\0hi"},
             "config": {"valid.toml": b'model = "smollm2-135m"\n[recipe]\npreset = "swaa"\nwindow = 2048\n'}}
    for target, files in extra.items():
        dst = os.path.join(out, target)
        os.makedirs(dst, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(dst, name), "wb") as f:
                f.write(data)
            counts[target] = counts.get(target, 0) + 1
    for target in sorted(counts):
        print(f"{target}: {counts[target]} seeds")


if __name__ == "__main__":
    main()
