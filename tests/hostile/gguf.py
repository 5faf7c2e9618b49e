"""Minimal GGUF (v3) reading and writing for the hostile corpus: no numpy, stdlib only.

Values are kept as raw encoded bytes (type code + payload) so a real model's tokenizer
metadata can be copied into a tiny random model without decoding it.
"""

import struct

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
           BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
GGML_F32, GGML_F16, GGML_Q8_0 = 0, 1, 8


def s(text):
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(b)) + b


def val(t, v):
    """(type, payload) of a value: scalars, strings, or (elem_type, [values]) arrays."""
    if t == STR:
        return struct.pack("<I", STR) + s(v)
    if t == ARR:
        et, items = v
        body = b"".join(val(et, x)[4:] for x in items)
        return struct.pack("<IIQ", ARR, et, len(items)) + body
    return struct.pack("<I", t) + struct.pack(_SCALAR[t], v)


def _skip(buf, pos, t):
    if t in _SCALAR:
        return pos + struct.calcsize(_SCALAR[t])
    if t == STR:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + n
    if t == ARR:
        et, n = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if et in _SCALAR:
            return pos + n * struct.calcsize(_SCALAR[et])
        for _ in range(n):
            pos = _skip(buf, pos, et)
        return pos
    raise ValueError(f"GGUF value type {t}")


def read_metadata(path, prefix=""):
    """[(key, raw value bytes incl. type)] of a GGUF file's keys starting with `prefix`."""
    with open(path, "rb") as f:
        head = f.read(64 << 20)  # smollm2's metadata is a few MB; its weights follow
    magic, _version, _nt, nkv = struct.unpack_from("<4sIQQ", head, 0)
    assert magic == b"GGUF", path
    pos, out = 24, []
    for _ in range(nkv):
        (n,) = struct.unpack_from("<Q", head, pos)
        key = head[pos + 8:pos + 8 + n].decode()
        pos += 8 + n
        (t,) = struct.unpack_from("<I", head, pos)
        end = _skip(head, pos + 4, t)
        if key.startswith(prefix):
            out.append((key, head[pos:end]))
        pos = end
    return out


def q8_0(rows, cols, rnd):
    """Random Q8_0 blocks: an f16 scale then 32 int8 per block."""
    scale = struct.pack("<e", 0.02)
    raw = rnd.randbytes(rows * cols)
    return b"".join(scale + raw[i:i + 32] for i in range(0, len(raw), 32))


def f32(n, rnd, center=0.0):
    return struct.pack(f"<{n}f", *(center + rnd.uniform(-0.1, 0.1) for _ in range(n)))


def write(kvs, tensors, alignment=32, version=3, tensor_count=None, kv_count=None):
    """A GGUF file. kvs: [(key, raw value)]; tensors: [(name, dims, ggml type, data)]."""
    out = bytearray(b"GGUF")
    out += struct.pack("<IQQ", version, len(tensors) if tensor_count is None else tensor_count,
                       len(kvs) if kv_count is None else kv_count)
    for k, raw in kvs:
        out += s(k) + raw
    offset, infos = 0, bytearray()
    for name, dims, t, data in tensors:
        infos += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", t, offset)
        offset += len(data)
        offset += (-offset) % alignment
    out += infos
    out += b"\0" * ((-len(out)) % alignment)
    for _name, _dims, _t, data in tensors:
        out += data
        out += b"\0" * ((-len(data)) % alignment)
    return bytes(out)


# The tiny model's shape: Q8_0 needs inner dimensions that are multiples of 32.
TINY = dict(hidden=32, heads=2, kv_heads=1, head_dim=16, ffn=64, layers=2, ctx=2048)


def tiny_kvs(tok_kvs, vocab, arch="llama", **over):
    c = {**TINY, **over}
    p = arch
    kvs = [("general.architecture", val(STR, arch)),
           ("general.alignment", val(U32, 32)),
           (f"{p}.block_count", val(U32, c["layers"])),
           (f"{p}.context_length", val(U32, c["ctx"])),
           (f"{p}.embedding_length", val(U32, c["hidden"])),
           (f"{p}.feed_forward_length", val(U32, c["ffn"])),
           (f"{p}.attention.head_count", val(U32, c["heads"])),
           (f"{p}.attention.head_count_kv", val(U32, c["kv_heads"])),
           (f"{p}.attention.key_length", val(U32, c["head_dim"])),
           (f"{p}.attention.layer_norm_rms_epsilon", val(F32, 1e-5)),
           (f"{p}.rope.freq_base", val(F32, 10000.0)),
           (f"{p}.rope.dimension_count", val(U32, c["head_dim"])),
           (f"{p}.vocab_size", val(U32, vocab))]
    return kvs + list(tok_kvs)


def tiny_tensors(vocab, rnd, arch="llama"):
    c = TINY
    h, q, kv, ffn = c["hidden"], c["heads"] * c["head_dim"], c["kv_heads"] * c["head_dim"], c["ffn"]
    t = [("token_embd.weight", [h, vocab], GGML_Q8_0, q8_0(vocab, h, rnd))]
    t.append(("output_norm.weight", [h], GGML_F32, f32(h, rnd, 1.0)))
    for i in range(c["layers"]):
        for name, out, inp in (("attn_q", q, h), ("attn_k", kv, h), ("attn_v", kv, h),
                               ("attn_output", h, q), ("ffn_gate", ffn, h), ("ffn_up", ffn, h),
                               ("ffn_down", h, ffn)):
            # GGUF dims are innermost first.
            t.append((f"blk.{i}.{name}.weight", [inp, out], GGML_Q8_0, q8_0(out, inp, rnd)))
        t.append((f"blk.{i}.attn_norm.weight", [h], GGML_F32, f32(h, rnd, 1.0)))
        t.append((f"blk.{i}.ffn_norm.weight", [h], GGML_F32, f32(h, rnd, 1.0)))
        if arch == "qwen2":
            for name, n in (("attn_q", q), ("attn_k", kv), ("attn_v", kv)):
                t.append((f"blk.{i}.{name}.bias", [n], GGML_F32, f32(n, rnd)))
    return t
