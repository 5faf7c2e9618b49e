//! Where a pass's queries put their attention: the mass each earlier key position received,
//! summed over heads, queries and layers. Book mode cites the pages an answer drew on from
//! it (the answer's tokens run again as one chunk over the cache that produced them).

use candle_core::{DType, Tensor};

use super::Result;
use super::kv_cache::KvCache;
use crate::recipe::{AttnRule, KeySpan};

/// Accumulates, for key positions `0..keys`, the softmax probability that queries gave
/// them, as full attention computes it (causal over every held key).
/// With `keep_queries`, each layer's queries are kept as well (f32, `[1, H, C, d]`).
#[derive(Debug, Clone)]
pub struct AttentionProbe {
    keys: usize,
    mass: Vec<f32>,
    keep_queries: bool,
    queries: Vec<Tensor>,
}

impl AttentionProbe {
    pub fn new(keys: usize) -> Self {
        AttentionProbe {
            keys,
            mass: vec![0.0; keys],
            keep_queries: false,
            queries: Vec::new(),
        }
    }

    /// Keeps each layer's queries and computes no mass.
    pub fn queries_only() -> Self {
        AttentionProbe {
            keep_queries: true,
            ..AttentionProbe::new(0)
        }
    }

    /// The queries kept, one tensor per layer.
    pub fn into_queries(self) -> Vec<Tensor> {
        self.queries
    }

    /// Mass per key position `0..keys`.
    pub fn mass(&self) -> &[f32] {
        &self.mass
    }

    /// Adds the attention of queries `q: [1, H, C, d]` at positions `q0..q0+C` over the keys
    /// of `layer` in `cache` (which already holds the chunk's own).
    pub(crate) fn record(
        &mut self,
        q: &Tensor,
        cache: &KvCache,
        layer: usize,
        q0: usize,
    ) -> Result<()> {
        if self.keep_queries {
            self.queries.push(q.to_dtype(DType::F32)?);
        }
        let (_, h, c, d) = q.dims4()?;
        let q1 = q0 + c;
        let keys = self.keys.min(q1);
        if keys == 0 {
            return Ok(());
        }
        let span = KeySpan {
            sink: 0..0,
            recent: 0..q1,
        };
        let (k, _) = cache.gather(layer, &span)?;
        let kv = k.dim(1)?;
        let g = h / kv;
        let kt = k.to_dtype(DType::F32)?.t()?.contiguous()?;
        let scale = 1.0 / (d as f64).sqrt();
        // Query blocks bound the scores held at once (heads × block × keys floats).
        let block = ((1usize << 24) / (h * q1).max(1)).clamp(1, c);
        for b0 in (0..c).step_by(block) {
            let n = block.min(c - b0);
            let qb = q
                .narrow(2, b0, n)?
                .to_dtype(DType::F32)?
                .contiguous()?
                .reshape((1, kv, g * n, d))?;
            let mask = AttnRule::FULL.mask_tensor(q0 + b0..q0 + b0 + n, &span, q.device())?;
            let scores = (qb.matmul(&kt)? * scale)?
                .reshape((1, kv, g, n, q1))?
                .broadcast_add(&mask)?;
            let p = candle_nn::ops::softmax_last_dim(&scores)?;
            let per_key = p.narrow(4, 0, keys)?.sum((0, 1, 2, 3))?.to_vec1::<f32>()?;
            for (m, x) in self.mass.iter_mut().zip(per_key) {
                *m += x;
            }
        }
        Ok(())
    }
}
