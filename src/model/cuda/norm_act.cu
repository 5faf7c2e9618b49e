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

// out[r, i] = silu(y[r, i]) * y[r, inter + i] for y rows of 2 * inter.
extern "C" __global__ void silu_mul_bf16(const __nv_bfloat16* __restrict__ y,
                                         __nv_bfloat16* __restrict__ out, long long rows,
                                         int inter) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= rows * inter) return;
    const long long r = idx / inter;
    const int i = idx % inter;
    const float g = __bfloat162float(y[r * 2 * inter + i]);
    const __nv_bfloat16 s = __float2bfloat16(g / (1.f + expf(-g)));
    out[idx] = s * y[r * 2 * inter + inter + i];
}
