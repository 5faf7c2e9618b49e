//! One layer's attention: [`attend`] is the single entry point, and the kernel it runs was
//! chosen once for the model ([`Kernels`]): the CUDA flash-style kernel (`fused`), the CPU's
//! flash-style loop (`cpu`), or candle ops (`ops`, also the dense reference's).

pub mod cpu;
pub mod fused;
pub mod ops;

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::Result;
use super::decode_graph::Capture;
use super::device::{AttentionKernel, Kernels};
use super::kernels::simd::Isa;
use super::kv_cache::KvCache;
use crate::recipe::{AttnRule, KeySpan};

/// The keys (and, for candle ops, the mask) each distinct rule reads in one forward pass,
/// worked out once and shared by the layers with that rule.
pub(crate) struct Spans {
    q0: usize,
    q1: usize,
    mask: bool,
    device: Device,
    by_rule: HashMap<AttnRule, (KeySpan, Option<Tensor>)>,
}

impl Spans {
    /// For queries at positions `q0..q1`.
    pub fn new(q0: usize, q1: usize, kernels: &Kernels, device: &Device) -> Self {
        Spans {
            q0,
            q1,
            mask: kernels.needs_mask(q1 - q0),
            device: device.clone(),
            by_rule: HashMap::new(),
        }
    }

    fn get(&mut self, rule: AttnRule) -> Result<&(KeySpan, Option<Tensor>)> {
        if let std::collections::hash_map::Entry::Vacant(e) = self.by_rule.entry(rule) {
            let span = rule.key_span(self.q0, self.q1);
            // The kernels compute the mask from positions; candle ops need it as a tensor.
            let mask = if self.mask {
                Some(rule.mask_tensor(self.q0..self.q1, &span, &self.device)?)
            } else {
                None
            };
            e.insert((span, mask));
        }
        Ok(&self.by_rule[&rule])
    }
}

/// Attention of layer `layer`'s queries `q: [1, H, C, d]` (positions from `spans`) over the
/// keys `rule` lets them see in `cache`. Returns `[1, C, H·d]`, as the output projection
/// reads it. With `capture`, the launch is recorded for a CUDA graph's replays.
pub(crate) fn attend(
    kernels: &Kernels,
    q: &Tensor,
    cache: &KvCache,
    layer: usize,
    rule: AttnRule,
    spans: &mut Spans,
    capture: Option<&Capture>,
) -> Result<Tensor> {
    let q0 = spans.q0;
    let (span, mask) = spans.get(rule)?;
    Ok(match kernels.attention {
        AttentionKernel::Fused => {
            let (kb, vb, map) = cache.slot_map(layer, span)?;
            let launch = match capture {
                Some(cap) => cap.attention(layer, q, &kb, &vb, map, rule)?,
                None => Default::default(),
            };
            fused::attention(q, &kb, &vb, map, rule, q0, launch)?.flatten_from(2)?
        }
        AttentionKernel::Cpu => {
            let (kb, vb, map) = cache.slot_map(layer, span)?;
            cpu::attention(q, &kb, &vb, map, rule, q0, Isa::detect())?.flatten_from(2)?
        }
        AttentionKernel::Ops => {
            let (kk, vv) = cache.gather(layer, span)?;
            ops::token_major(&ops::attend(q, &kk, &vv, mask.as_ref())?)?
        }
    })
}
