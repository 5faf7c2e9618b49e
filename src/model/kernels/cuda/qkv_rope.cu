// Splits the joined q/k/v projection output into attention inputs in one pass per tensor:
// q rotated into its own [H, C, d] buffer, k rotated and v copied straight into their slots of
// the KV cache. Replaces a transpose copy, a RoPE launch and a cache copy per tensor.
//
// The rotation uses bf16 arithmetic operator by operator, as candle's rope kernels do, so the
// fused and candle-ops paths give bit-identical rotations.

#include <cuda_bf16.h>
#include <stdint.h>

struct QkvRopeParams {
    int C;               // tokens
    int heads;           // heads to move (H for q, KV for k and v)
    int head0;           // first head of this tensor within a row of y
    int half;            // d / 2
    int style;           // 0: no rotation, 1: interleaved pairs (2p, 2p+1), 2: halves (p, p + d/2)
    long long y_row;     // elements per row (token) of y
    long long dst_head;  // destination strides, in elements
    long long dst_tok;
    long long slot0;     // destination token index of the first token
};

// One thread per rotation pair of every (token, head), flat over 256-thread blocks (one
// 64-thread block per (token, head) left prefill launch-bound: 49k blocks a chunk). `bias`
// (a row of y's width, or null) is added first, in bf16 as candle's broadcast add does: one pass instead of two.
// A replayed decode graph passes `step` = {slot, position} in device memory, written before
// each launch: the slot replaces p.slot0 (when `use_slot`) and cs is the whole table, read
// from the position's row. Eager launches pass null and cs rows start at the chunk.
struct StepSlotPos {
    int slot;
    int pos;
};
extern "C" __global__ void qkv_rope_bf16(const __nv_bfloat16* __restrict__ y,
                                         const __nv_bfloat16* __restrict__ bias,
                                         const __nv_bfloat16* __restrict__ cs,
                                         __nv_bfloat16* __restrict__ dst, const QkvRopeParams p,
                                         const StepSlotPos* __restrict__ step, int use_slot) {
    // 32-bit index arithmetic: the host keeps C · heads · half below 2^31.
    const unsigned g = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned half = p.half, heads = p.heads;
    if (g >= (unsigned)p.C * heads * half) return;
    const int i = g % half, h = (g / half) % heads, t = g / (half * heads);
    const int d = 2 * p.half;
    const long long slot0 = step != nullptr && use_slot ? step->slot : p.slot0;
    if (step != nullptr) cs += (long long)step->pos * d;
    const __nv_bfloat16* src = y + (long long)t * p.y_row + (long long)(p.head0 + h) * d;
    __nv_bfloat16* out = dst + (long long)h * p.dst_head + (slot0 + t) * p.dst_tok;
    const int a = p.style == 1 ? 2 * i : i;
    const int b = p.style == 1 ? 2 * i + 1 : i + p.half;
    __nv_bfloat16 x1 = src[a], x2 = src[b];
    if (bias != nullptr) {
        const __nv_bfloat16* bh = bias + (long long)(p.head0 + h) * d;
        x1 = x1 + bh[a];
        x2 = x2 + bh[b];
    }
    if (p.style == 0) {
        out[a] = x1;
        out[b] = x2;
        return;
    }
    // cs rows are [cos(d/2) | sin(d/2)] for the token.
    const __nv_bfloat16 c = cs[(long long)t * d + i], s = cs[(long long)t * d + p.half + i];
    const __nv_bfloat16 x1c = x1 * c, x2s = x2 * s, x1s = x1 * s, x2c = x2 * c;
    out[a] = x1c - x2s;
    out[b] = x1s + x2c;
}
