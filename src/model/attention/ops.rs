//! Attention on candle ops: gathered keys, an explicit additive mask, softmax. The path every
//! device runs, and the reference the kernels are checked against.

use candle_core::{DType, Tensor};

/// Softmax attention of `q: [1, H, C, d]` over `k, v: [1, KV, N, d]` with an additive
/// `[C, N]` mask; GQA by grouping query heads, so K and V are never repeated in memory.
/// Long contexts run in query blocks: one `[H, C, N]` score matrix past 2^31 elements breaks
/// the 32-bit indexing of the element-wise kernels (seen on CUDA at 128k keys, chunk 2048).
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    attend_in_blocks(q, k, v, mask, 1 << 28)
}

fn attend_in_blocks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    max_scores: usize,
) -> candle_core::Result<Tensor> {
    let (_, h, c, _) = q.dims4()?;
    let n = k.dim(2)?;
    let block = (max_scores / (h * n).max(1)).max(1);
    if c <= block {
        return attend_block(q, k, v, mask);
    }
    let parts = (0..c)
        .step_by(block)
        .map(|s| {
            let len = block.min(c - s);
            let m = mask.map(|m| m.narrow(0, s, len)).transpose()?;
            attend_block(&q.narrow(2, s, len)?.contiguous()?, k, v, m.as_ref())
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&parts, 2)
}

/// `[1,H,C,d]` → `[1,C,H·d]`, the layout the output projection reads.
pub fn token_major(attn: &Tensor) -> candle_core::Result<Tensor> {
    attn.transpose(1, 2)?.flatten_from(2)
}

fn attend_block(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (b, h, c, d) = q.dims4()?;
    let kv = k.dim(1)?;
    let n = k.dim(2)?;
    let g = h / kv;
    let q = q.reshape((b, kv, g * c, d))?;
    let scale = 1.0 / (d as f64).sqrt();
    let scores = (q.matmul(&k.t()?)? * scale)?.to_dtype(DType::F32)?;
    let scores = match mask {
        Some(m) => scores
            .reshape((b, kv, g, c, n))?
            .broadcast_add(m)?
            .reshape((b, kv, g * c, n))?,
        None => scores,
    };
    let p = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
    p.matmul(&v.contiguous()?)?.reshape((b, h, c, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn attention_in_query_blocks_equals_one_block() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (1, 4, 10, 8), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (1, 2, 13, 8), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, 2, 13, 8), &dev).unwrap();
        let rule = crate::recipe::AttnRule {
            window: Some(5),
            sink: 1,
        };
        let span = rule.key_span(3, 13);
        let mask = rule.mask_tensor(3..13, &span, &dev).unwrap();
        let k = k.narrow(2, 0, span.len()).unwrap();
        let v = v.narrow(2, 0, span.len()).unwrap();
        let whole = attend_block(&q, &k, &v, Some(&mask)).unwrap();
        // 4 heads × N keys per query row: a limit of 3 rows forces blocks of 3, 3, 3, 1.
        let blocks = attend_in_blocks(&q, &k, &v, Some(&mask), 4 * span.len() * 3).unwrap();
        let d = (whole - blocks)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-6, "{d}");
    }
}
