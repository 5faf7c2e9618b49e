// Fused sliding-window attention (flash-attention 2 style) for bf16 on sm_80+.
//
// One block = 16·NW query rows of one KV head, NW warps of 16 rows: NW = 4 for prefill chunks,
// NW = 1 when a KV head has at most 16 rows (decode: one query × the GQA group), so that many
// small blocks, each on a share of the keys, keep enough K/V loads in flight. A "row" is a (query, head in the GQA group) pair, so one K/V tile in shared memory
// serves every query head of the group and K/V are never copied per head. Scores live in registers (mma.sync m16n8k16, f32
// accumulators), the softmax is online in f32, and only the output is written.
//
// Keys come straight from the KV cache buffer through a two-segment slot map (sink slots, then
// recent slots), so an evicted cache needs no gather. The mask is the recipe rule computed from
// positions: key p is visible to query q iff p <= q and (no window, or q - p < window, or
// p < sink). Key tiles no row of the block can see are never loaded, so a chunk costs
// O(C * (W + K)). With more than one split (decode, short chunks) each split writes an
// unnormalised partial (flash-decoding) that `attn_combine` merges.

#include <cuda_bf16.h>
#include <stdint.h>

#define BC 64

struct AttnParams {
    int C;              // queries in the chunk
    int G;              // query heads per KV head
    int N;              // keys = n_sink + n_recent
    int n_sink;         // keys 0..n_sink: slots sink_slot0.., positions 0..
    int sink_slot0;
    int recent_slot0;   // keys n_sink..N: slots recent_slot0.., positions recent_pos0..
    int recent_pos0;
    int q0;             // position of query 0
    int window;         // 0: no window
    int sink;           // rule sink K
    int splits;
    float scale_log2;   // 1/sqrt(d) * log2(e)
    long long q_head_stride, q_tok_stride;
    long long k_head_stride, k_tok_stride;
    long long v_head_stride, v_tok_stride;
};

__device__ __forceinline__ int key_pos(const AttnParams& p, int j) {
    return j < p.n_sink ? j : p.recent_pos0 + (j - p.n_sink);
}
__device__ __forceinline__ int key_slot(const AttnParams& p, int j) {
    return j < p.n_sink ? p.sink_slot0 + j : p.recent_slot0 + (j - p.n_sink);
}
__device__ __forceinline__ bool visible(const AttnParams& p, int q, int k) {
    return k <= q && (p.window == 0 || q - k < p.window || k < p.sink);
}

__device__ __forceinline__ uint32_t smem_u32(const void* ptr) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)),
                 "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                            uint32_t& r3, const void* smem) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(smem_u32(smem)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                                  uint32_t& r3, const void* smem) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(smem_u32(smem)));
}

__device__ __forceinline__ void mma_bf16(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
}

// The key-index ranges a block must visit: [0, a) (sink keys and recent keys that are sink
// positions) and [b0, b1) (the window of the block's queries), merged when they touch.
struct KeyRanges {
    int a, b0, b1;
};

__device__ __forceinline__ KeyRanges block_key_ranges(const AttnParams& p, int qa, int qb) {
    KeyRanges r;
    const int n_recent = p.N - p.n_sink;
    // Recent keys that are sink positions stay visible to every later query.
    int in_sink = p.window == 0 ? 0 : min(n_recent, max(0, p.sink - p.recent_pos0));
    r.a = p.n_sink + in_sink;
    int lo = p.window == 0 ? 0 : qa - p.window + 1;
    int b0 = max(0, lo - p.recent_pos0);
    int b1 = min(n_recent, qb - p.recent_pos0 + 1);
    r.b0 = p.n_sink + b0;
    r.b1 = p.n_sink + max(b0, b1);
    if (p.window == 0) {  // full attention: everything up to qb, one range
        r.a = 0;
        r.b0 = 0;
        r.b1 = p.n_sink + max(0, b1);
        r.b1 = max(r.b1, min(p.n_sink, qb + 1));
    }
    if (r.b0 <= r.a) {  // overlapping or adjacent: one range
        r.b1 = max(r.b1, r.a);
        r.b0 = 0;
        r.a = 0;
    }
    return r;
}

__device__ __forceinline__ int tiles_of(int len) { return len > 0 ? (len + BC - 1) / BC : 0; }

template <int D, int NW>
__device__ __forceinline__ void swa_attention(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                  const __nv_bfloat16* __restrict__ v, __nv_bfloat16* __restrict__ out,
                  float* __restrict__ part_o, float* __restrict__ part_ml, const AttnParams p) {
    constexpr int BR = 16 * NW;
    constexpr int THREADS = 32 * NW;
    constexpr int LD = D + 8;  // padded row: ldmatrix rows fall in different banks
    constexpr int KSTEPS = D / 16;
    constexpr int DTILES = D / 8;
    static_assert(BR <= 2 * BC, "Q is staged through the K and V tiles");
    __shared__ __align__(128) __nv_bfloat16 kvs[2 * BC * LD];
    __nv_bfloat16* ks = kvs;
    __nv_bfloat16* vs = kvs + BC * LD;

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int kvh = blockIdx.y, split = blockIdx.z;
    const int rows = p.C * p.G;
    const int r0 = blockIdx.x * BR;
    const int qa = p.q0 + r0 / p.G;
    const int qb = p.q0 + min(rows - 1, r0 + BR - 1) / p.G;

    // Stage Q (BR rows x D) through the K/V tiles, then keep it in registers.
    constexpr int CHUNKS = D / 8;  // 16-byte chunks per row
    for (int c = tid; c < BR * CHUNKS; c += THREADS) {
        int r = c / CHUNKS, ch = c % CHUNKS;
        int row = r0 + r;
        bool valid = row < rows;
        int i = valid ? row / p.G : 0, g = valid ? row % p.G : 0;
        const __nv_bfloat16* src =
            q + (long long)(kvh * p.G + g) * p.q_head_stride + (long long)i * p.q_tok_stride + ch * 8;
        cp_async16(&kvs[r * LD + ch * 8], src, valid);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    uint32_t qf[KSTEPS][4];
    #pragma unroll
    for (int s = 0; s < KSTEPS; ++s) {
        int mi = lane / 8;
        int row = warp * 16 + (mi & 1) * 8 + lane % 8;
        int col = s * 16 + (mi >> 1) * 8;
        ldmatrix_x4(qf[s][0], qf[s][1], qf[s][2], qf[s][3], &kvs[row * LD + col]);
    }
    __syncthreads();

    // This thread's two rows (g and g + 8 of the warp's 16) and their query positions.
    const int g = lane / 4, quad = lane % 4;
    int my_row[2], my_q[2];
    #pragma unroll
    for (int h = 0; h < 2; ++h) {
        my_row[h] = r0 + warp * 16 + g + h * 8;
        my_q[h] = p.q0 + min(my_row[h], rows - 1) / p.G;
    }

    float o[DTILES][4];
    #pragma unroll
    for (int t = 0; t < DTILES; ++t)
        #pragma unroll
        for (int e = 0; e < 4; ++e) o[t][e] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

    const KeyRanges kr = block_key_ranges(p, qa, qb);
    const int ta = tiles_of(kr.a), tb = tiles_of(kr.b1 - kr.b0);
    const int total = ta + tb;
    const int t_begin = (long long)total * split / p.splits;
    const int t_end = (long long)total * (split + 1) / p.splits;
    auto tile_start = [&](int t) { return t < ta ? t * BC : kr.b0 + (t - ta) * BC; };
    auto tile_end = [&](int t) { return t < ta ? kr.a : kr.b1; };
    // Copies keys j0.. of tile t from `src` (K or V) into `dst`, zero rows past the range.
    auto load_tile = [&](__nv_bfloat16* dst, const __nv_bfloat16* src, long long head_stride,
                         long long tok_stride, int t) {
        const int j0 = tile_start(t), jend = tile_end(t);
        for (int c = tid; c < BC * CHUNKS; c += THREADS) {
            int r = c / CHUNKS, ch = c % CHUNKS;
            int j = j0 + r;
            bool valid = j < jend;
            long long slot = valid ? key_slot(p, j) : 0;
            cp_async16(&dst[r * LD + ch * 8], src + kvh * head_stride + slot * tok_stride + ch * 8,
                       valid);
        }
        cp_async_commit();
    };

    // FlashAttention-2's order: V(t) loads while S = Q K(t)^T and the softmax run, K(t+1)
    // while O += P V(t), so one buffer each of K and V keeps a load always in flight.
    if (t_begin < t_end) load_tile(ks, k, p.k_head_stride, p.k_tok_stride, t_begin);
    for (int t = t_begin; t < t_end; ++t) {
        const int j0 = tile_start(t), jend = tile_end(t);
        cp_async_wait<0>();
        __syncthreads();  // K(t) is in; every warp is done reading V(t-1)
        load_tile(vs, v, p.v_head_stride, p.v_tok_stride, t);

        // S = Q K^T for this warp's 16 rows and 64 keys.
        float s[BC / 8][4];
        #pragma unroll
        for (int n = 0; n < BC / 8; ++n)
            #pragma unroll
            for (int e = 0; e < 4; ++e) s[n][e] = 0.f;
        #pragma unroll
        for (int kk = 0; kk < KSTEPS; ++kk) {
            #pragma unroll
            for (int n = 0; n < BC / 8; n += 2) {
                int mi = lane / 8;
                int key = (n + (mi >> 1)) * 8 + lane % 8;
                int col = kk * 16 + (mi & 1) * 8;
                uint32_t b0, b1, b2, b3;
                ldmatrix_x4(b0, b1, b2, b3, &ks[key * LD + col]);
                mma_bf16(s[n], qf[kk], b0, b1);
                mma_bf16(s[n + 1], qf[kk], b2, b3);
            }
        }

        // Mask only where the tile is not wholly visible to every row of the block.
        const int kmin = key_pos(p, j0), kmax = key_pos(p, min(j0 + BC, jend) - 1);
        const bool whole = j0 + BC <= jend && kmax <= qa &&
                           (p.window == 0 || qb - kmin < p.window || kmax < p.sink);
        float mnew[2];
        #pragma unroll
        for (int h = 0; h < 2; ++h) {
            float mx = m[h];
            #pragma unroll
            for (int n = 0; n < BC / 8; ++n) {
                #pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float x = s[n][h * 2 + e] * p.scale_log2;
                    if (!whole) {
                        int j = j0 + n * 8 + quad * 2 + e;
                        if (j >= jend || !visible(p, my_q[h], key_pos(p, j))) x = -INFINITY;
                    }
                    s[n][h * 2 + e] = x;
                    mx = fmaxf(mx, x);
                }
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
            mnew[h] = mx;
        }
        #pragma unroll
        for (int h = 0; h < 2; ++h) {
            // A row that has seen no visible key yet keeps m = -inf: use 0 as the base.
            const float base = mnew[h] == -INFINITY ? 0.f : mnew[h];
            const float corr = exp2f(m[h] - base);
            float sum = 0.f;
            #pragma unroll
            for (int n = 0; n < BC / 8; ++n) {
                #pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float e2 = exp2f(s[n][h * 2 + e] - base);
                    s[n][h * 2 + e] = e2;
                    sum += e2;
                }
            }
            sum += __shfl_xor_sync(0xffffffff, sum, 1);
            sum += __shfl_xor_sync(0xffffffff, sum, 2);
            l[h] = l[h] * corr + sum;
            m[h] = mnew[h];
            #pragma unroll
            for (int t2 = 0; t2 < DTILES; ++t2) {
                o[t2][h * 2] *= corr;
                o[t2][h * 2 + 1] *= corr;
            }
        }

        cp_async_wait<0>();
        __syncthreads();  // V(t) is in; every warp is done reading K(t)
        if (t + 1 < t_end) load_tile(ks, k, p.k_head_stride, p.k_tok_stride, t + 1);
        // O += P V: P comes from the score registers (accumulator layout = A layout per half).
        #pragma unroll
        for (int kk = 0; kk < BC / 16; ++kk) {
            uint32_t a[4];
            a[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
            a[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
            a[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            a[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            #pragma unroll
            for (int dn = 0; dn < DTILES; dn += 2) {
                int mi = lane / 8;
                int key = kk * 16 + (mi & 1) * 8 + lane % 8;
                int col = (dn + (mi >> 1)) * 8;
                uint32_t b0, b1, b2, b3;
                ldmatrix_x4_trans(b0, b1, b2, b3, &vs[key * LD + col]);
                mma_bf16(o[dn], a, b0, b1);
                mma_bf16(o[dn + 1], a, b2, b3);
            }
        }
    }

    // Write: normalised bf16 with one split, else f32 partials and (m, l) for the combine.
    #pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int row = my_row[h];
        if (row >= rows) continue;
        const int i = row / p.G, head = kvh * p.G + row % p.G;
        const long long orow = (long long)head * p.C + i;  // partials are [H, C, D]
        if (p.splits == 1) {
            // out is [C, H, D]: token-major, as the output projection reads it.
            const long long out_row = (long long)i * p.G * gridDim.y + head;
            const float inv = l[h] > 0.f ? 1.f / l[h] : 0.f;
            #pragma unroll
            for (int t2 = 0; t2 < DTILES; ++t2) {
                int col = t2 * 8 + quad * 2;
                *reinterpret_cast<__nv_bfloat162*>(&out[out_row * D + col]) =
                    __floats2bfloat162_rn(o[t2][h * 2] * inv, o[t2][h * 2 + 1] * inv);
            }
        } else {
            const long long prow = (long long)split * p.C * p.G * gridDim.y + orow;
            #pragma unroll
            for (int t2 = 0; t2 < DTILES; ++t2) {
                int col = t2 * 8 + quad * 2;
                part_o[prow * D + col] = o[t2][h * 2];
                part_o[prow * D + col + 1] = o[t2][h * 2 + 1];
            }
            if (quad == 0) {
                part_ml[prow * 2] = m[h];
                part_ml[prow * 2 + 1] = l[h];
            }
        }
    }
}

// Merges split partials ([H, C] rows) into out ([C, H, D]). Block (row, y) of
// COMBINE_THREADS makes columns 32y..32y+32 of the row: decode at 32k has ~130 splits per row,
// so the threads first weigh every split at once, then 8 threads per column each sum a share
// of the splits with independent loads, and the shares are added in shared memory.
#define COMBINE_THREADS 256
#define COMBINE_COLS 32
#define COMBINE_MAX_SPLITS 1024
extern "C" __global__ void __launch_bounds__(COMBINE_THREADS)
    attn_combine(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                 __nv_bfloat16* __restrict__ out, int C, int H, int splits, int D) {
    __shared__ float weight[COMBINE_MAX_SPLITS];
    __shared__ float red[COMBINE_THREADS];
    const int row = blockIdx.x, tid = threadIdx.x;
    const int rows_total = C * H;
    float mx = -INFINITY;
    for (int s = tid; s < splits; s += COMBINE_THREADS)
        mx = fmaxf(mx, part_ml[((long long)s * rows_total + row) * 2]);
    red[tid] = mx;
    __syncthreads();
    for (int o = COMBINE_THREADS / 2; o > 0; o >>= 1) {
        if (tid < o) red[tid] = fmaxf(red[tid], red[tid + o]);
        __syncthreads();
    }
    const float base = red[0] == -INFINITY ? 0.f : red[0];
    __syncthreads();
    float l = 0.f;
    for (int s = tid; s < splits; s += COMBINE_THREADS) {
        const long long pr = (long long)s * rows_total + row;
        const float w = exp2f(part_ml[pr * 2] - base);
        weight[s] = w;
        l += part_ml[pr * 2 + 1] * w;
    }
    red[tid] = l;
    __syncthreads();
    for (int o = COMBINE_THREADS / 2; o > 0; o >>= 1) {
        if (tid < o) red[tid] += red[tid + o];
        __syncthreads();
    }
    const float total = red[0];
    __syncthreads();
    constexpr int PARTS = COMBINE_THREADS / COMBINE_COLS;
    const int d = blockIdx.y * COMBINE_COLS + tid % COMBINE_COLS, part = tid / COMBINE_COLS;
    float acc = 0.f;
#pragma unroll 4
    for (int s = part; s < splits; s += PARTS)
        acc += part_o[((long long)s * rows_total + row) * D + d] * weight[s];
    red[tid] = acc;
    __syncthreads();
    if (tid < COMBINE_COLS) {
        for (int p = 1; p < PARTS; ++p) acc += red[p * COMBINE_COLS + tid];
        const long long out_row = (long long)(row % C) * H + row / C;
        out[out_row * D + d] = __float2bfloat16(total > 0.f ? acc / total : 0.f);
    }
}

// Fills bf16 buffers with NaN so a test sees any element the kernel failed to write.
extern "C" __global__ void poison_bf16(__nv_bfloat16* __restrict__ x, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = __ushort_as_bfloat16(0x7fc0);
}

// `step`, when not null, holds this launch's parameters in device memory: a replayed decode
// graph rewrites them before each launch (the grid, and so `splits`, stays as captured).
#define EXPORT_ATTENTION(D, NW)                                                                \
    extern "C" __global__ void __launch_bounds__(NW * 32) swa_attention_d##D##_w##NW(          \
        const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,                \
        __nv_bfloat16* out, float* part_o, float* part_ml, const AttnParams p,                 \
        const AttnParams* __restrict__ step) {                                                 \
        swa_attention<D, NW>(q, k, v, out, part_o, part_ml, step != nullptr ? *step : p);      \
    }
EXPORT_ATTENTION(64, 1)
EXPORT_ATTENTION(128, 1)
EXPORT_ATTENTION(64, 4)
EXPORT_ATTENTION(128, 4)

