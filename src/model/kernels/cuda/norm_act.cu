// The elementwise tails of a layer, fused: residual add + RMSNorm in one pass (the add's
// result is kept: it is the next residual), and SiLU(gate) * up over the joined gate/up
// output. Rounding follows candle's ops (bf16 after the add and after SiLU, f32 inside the
// norm), so the fused and candle-ops paths agree to the last bit or two.

#include <cuda_bf16.h>
#include <stdint.h>

// Sum of a block's per-thread values, returned to every thread.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
    __syncthreads();
    const int lane = threadIdx.x % 32;
    float t = lane < (int)(blockDim.x + 31) / 32 ? partial[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffff, t, o);
    return t;
}

// Chunks of 8 elements a thread keeps in registers between the sum and the scaling: rows up
// to 8 · 4 · blockDim elements take the vector path.
#define NORM_PER_THREAD 4

// One block per row: out_x = x + delta; out_h = out_x * rsqrt(mean(out_x^2) + eps) * w.
// A decode step runs this on one row twice per layer, so the row stays in registers (one
// 16-byte load of x, delta and w per 8 elements, no re-read of out_x) when it fits.
extern "C" __global__ void add_rms_norm_bf16(const __nv_bfloat16* __restrict__ x,
                                             const __nv_bfloat16* __restrict__ delta,
                                             const __nv_bfloat16* __restrict__ w,
                                             __nv_bfloat16* __restrict__ out_x,
                                             __nv_bfloat16* __restrict__ out_h, int hidden,
                                             float eps) {
    const long long row = blockIdx.x;
    const __nv_bfloat16* xr = x + row * hidden;
    const __nv_bfloat16* dr = delta + row * hidden;
    __nv_bfloat16* oxr = out_x + row * hidden;
    __nv_bfloat16* ohr = out_h + row * hidden;
    const int chunks = hidden / 8;
    const bool vec = hidden % 8 == 0 && chunks <= NORM_PER_THREAD * (int)blockDim.x &&
                     (((size_t)xr | (size_t)dr | (size_t)oxr | (size_t)ohr | (size_t)w) % 16) == 0;
    if (vec) {
        uint4 sum[NORM_PER_THREAD];
        float ss = 0.f;
#pragma unroll
        for (int k = 0; k < NORM_PER_THREAD; ++k) {
            const int c = threadIdx.x + k * blockDim.x;
            if (c >= chunks) break;
            const uint4 xv = reinterpret_cast<const uint4*>(xr)[c];
            const uint4 dv = reinterpret_cast<const uint4*>(dr)[c];
            const __nv_bfloat162* xs = reinterpret_cast<const __nv_bfloat162*>(&xv);
            const __nv_bfloat162* ds = reinterpret_cast<const __nv_bfloat162*>(&dv);
            __nv_bfloat162* ss2 = reinterpret_cast<__nv_bfloat162*>(&sum[k]);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                ss2[e] = __hadd2(xs[e], ds[e]);
                const float2 f = __bfloat1622float2(ss2[e]);
                ss += f.x * f.x + f.y * f.y;
            }
            reinterpret_cast<uint4*>(oxr)[c] = sum[k];
        }
        const float scale = rsqrtf(block_sum(ss) / hidden + eps);
#pragma unroll
        for (int k = 0; k < NORM_PER_THREAD; ++k) {
            const int c = threadIdx.x + k * blockDim.x;
            if (c >= chunks) break;
            const uint4 wv = reinterpret_cast<const uint4*>(w)[c];
            const __nv_bfloat162* ws = reinterpret_cast<const __nv_bfloat162*>(&wv);
            const __nv_bfloat162* ss2 = reinterpret_cast<const __nv_bfloat162*>(&sum[k]);
            uint4 hv;
            __nv_bfloat162* hs = reinterpret_cast<__nv_bfloat162*>(&hv);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float2 f = __bfloat1622float2(ss2[e]);
                const float2 wf = __bfloat1622float2(ws[e]);
                hs[e] = __floats2bfloat162_rn(f.x * scale * wf.x, f.y * scale * wf.y);
            }
            reinterpret_cast<uint4*>(ohr)[c] = hv;
        }
        return;
    }
    float ss = 0.f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        const __nv_bfloat16 s = xr[i] + dr[i];
        oxr[i] = s;
        const float f = __bfloat162float(s);
        ss += f * f;
    }
    const float scale = rsqrtf(block_sum(ss) / hidden + eps);
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        ohr[i] = __float2bfloat16(__bfloat162float(oxr[i]) * scale * __bfloat162float(w[i]));
    }
}

// silu(gate) · up, rounded like candle's ops (silu to bf16, then a bf16 product).
__device__ __forceinline__ __nv_bfloat16 silu_times(__nv_bfloat16 g, __nv_bfloat16 u) {
    const float gf = __bfloat162float(g);
    return __float2bfloat16(gf / (1.f + expf(-gf))) * u;
}

// `out[r, i] = silu(y[r, i]) · y[r, inter + i]` for the joined gate/up rows of y. Rows run in
// blockIdx.y (striding past 65,535), 8 columns per thread: one 16-byte load of gate and of up
// when the rows are 16-byte aligned, else 8 scalar ones. No 64-bit division per element.
extern "C" __global__ void silu_mul_bf16(const __nv_bfloat16* __restrict__ y,
                                         __nv_bfloat16* __restrict__ out, long long rows,
                                         int inter) {
    const int col = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (col >= inter) return;
    const bool vec = inter % 8 == 0 && ((size_t)y % 16) == 0 && ((size_t)out % 16) == 0;
    for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
        const __nv_bfloat16* g = y + r * 2 * inter + col;
        const __nv_bfloat16* u = g + inter;
        __nv_bfloat16* o = out + r * inter + col;
        if (vec) {
            const uint4 gv = *reinterpret_cast<const uint4*>(g);
            const uint4 uv = *reinterpret_cast<const uint4*>(u);
            uint4 ov;
            const __nv_bfloat16* gs = reinterpret_cast<const __nv_bfloat16*>(&gv);
            const __nv_bfloat16* us = reinterpret_cast<const __nv_bfloat16*>(&uv);
            __nv_bfloat16* os = reinterpret_cast<__nv_bfloat16*>(&ov);
#pragma unroll
            for (int k = 0; k < 8; ++k) os[k] = silu_times(gs[k], us[k]);
            *reinterpret_cast<uint4*>(o) = ov;
        } else {
            for (int k = 0; k < 8 && col + k < inter; ++k) o[k] = silu_times(g[k], u[k]);
        }
    }
}
