// The elementwise tails of a layer, fused: residual add + RMSNorm in one pass (the add's
// result is kept: it is the next residual), and SiLU(gate) * up over the joined gate/up
// output. Rounding follows candle's ops (bf16 after the add and after SiLU, f32 inside the
// norm), so the fused and candle-ops paths agree to the last bit or two.

#include <cuda_bf16.h>
#include <stdint.h>

// One block per row: out_x = x + delta; out_h = out_x * rsqrt(mean(out_x^2) + eps) * w.
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
    float ss = 0.f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        const __nv_bfloat16 s = xr[i] + dr[i];
        oxr[i] = s;
        const float f = __bfloat162float(s);
        ss += f * f;
    }
    __shared__ float partial[32];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffff, ss, o);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.f;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
        if (threadIdx.x == 0) partial[0] = v;
    }
    __syncthreads();
    const float scale = rsqrtf(partial[0] / hidden + eps);
    __nv_bfloat16* ohr = out_h + row * hidden;
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
