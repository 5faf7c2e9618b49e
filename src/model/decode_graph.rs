//! Decode steps as a CUDA graph. A plain decode step issues ~300 kernel launches and as many
//! allocations from the host: ~2 ms per token for the 1.5B preset, more than its GPU work,
//! and small models are bound by it entirely. Here one step is captured once and replayed
//! per token: the host only keeps the cache's books, writes the step's token, position,
//! cache slots and attention parameters to device memory, and launches the graph.
//!
//! The captured kernels read those values from device memory (the `step` arguments of the
//! fused RoPE and attention kernels); everything else in a step is the same every token. A
//! graph holds while the cache buffers it writes stay put: when an append would compact or
//! grow a layer, or a RoPE table a layer reads is rebuilt or swapped (the model's scaled table
//! or the original one, per layer by the recipe), that step runs as a plain forward pass and
//! the next one captures again.

use std::cell::RefCell;

use candle_core::{Layout, Tensor};
use serde::Serialize;

use super::Result;
use super::attention::fused::{Launch, SlotMap};
use super::kv_cache::KvCache;
use super::transformer::{Logits, Model};
use crate::recipe::{AttnRule, Phase, Recipe};

/// How decode steps ran.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GraphStats {
    /// Steps that recorded a new graph (and then ran it).
    pub captures: usize,
    /// Steps that replayed the graph.
    pub replays: usize,
    /// Plain forward passes.
    pub plain: usize,
}

/// Decode steps through a CUDA graph where the model can (CUDA, bf16, the fused kernels),
/// plain forward passes elsewhere. One per cache: a graph writes that cache's buffers.
#[derive(Default)]
pub struct DecodeGraphs {
    #[cfg(feature = "cuda")]
    graph: Option<cuda::Graph>,
    /// A plain step has run with candle's upload cache on (see `cuda::step`).
    #[cfg(feature = "cuda")]
    warm: bool,
    /// Every step a plain forward pass (for comparisons).
    pub disabled: bool,
    pub stats: GraphStats,
}

impl DecodeGraphs {
    /// Graphs on (`true`) or plain forward passes only.
    pub fn new(on: bool) -> Self {
        DecodeGraphs {
            disabled: !on,
            ..Default::default()
        }
    }
}

impl Model {
    /// One decode step for `token`: its logits, `[vocab]` f32. Through a CUDA graph where the
    /// model and the cache allow (see `decode_graph`), else a plain forward pass; the two give
    /// the same logits up to the order of the attention kernel's key splits.
    pub fn decode_step(
        &self,
        token: u32,
        cache: &mut KvCache,
        recipe: &Recipe,
        graphs: &mut DecodeGraphs,
    ) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if !graphs.disabled
            && self.graph_capable()
            && let Some(logits) = cuda::step(self, token, cache, recipe, graphs)?
        {
            return Ok(logits);
        }
        graphs.stats.plain += 1;
        self.forward(&[token], cache, recipe, Phase::Decode, Logits::Last)?
            .ok_or_else(|| super::ModelError::BadConfig("a decode step gave no logits".into()))
    }
}

/// What a capturing forward pass reads and leaves behind (see `Model::forward_pass`).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct Capture {
    /// `[1]` u32: the step's token, written before each replay.
    pub(crate) ids: Tensor,
    /// `[vocab]` f32: the step's logits, in a buffer that outlives the graph's own.
    pub(crate) logits: Tensor,
    /// Device address of layer 0's step record, the records' stride, and where in a record
    /// the attention parameters and the {slot, position} pair lie.
    base: u64,
    stride: u64,
    attn_at: u64,
    slot_at: u64,
    /// Key splits of every attention launch: the grid is fixed once captured.
    splits: usize,
    slots: RefCell<Vec<usize>>,
    seen: RefCell<Vec<Seen>>,
}

/// What the capture saw of a layer's attention: enough to work out any later step's launch.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct Seen {
    q: Layout,
    k: Layout,
    v: Layout,
    map: SlotMap,
    rule: AttnRule,
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
impl Capture {
    /// Device address of layer `layer`'s {slot, position}.
    pub(crate) fn slot_pos(&self, layer: usize) -> u64 {
        self.base + layer as u64 * self.stride + self.slot_at
    }

    /// The cache slot the capture step writes for `layer` (layers come in order).
    pub(crate) fn note_slot(&self, layer: usize, slot: usize) {
        let mut slots = self.slots.borrow_mut();
        debug_assert_eq!(slots.len(), layer, "layers in order");
        slots.push(slot);
    }

    /// The attention launch of `layer`: parameters from device memory, splits fixed.
    pub(crate) fn attention(
        &self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        map: SlotMap,
        rule: AttnRule,
    ) -> Result<Launch> {
        let mut seen = self.seen.borrow_mut();
        debug_assert_eq!(seen.len(), layer, "layers in order");
        seen.push(Seen {
            q: q.layout().clone(),
            k: k.layout().clone(),
            v: v.layout().clone(),
            map,
            rule,
        });
        Ok(Launch {
            splits: Some(self.splits),
            step: self.base + layer as u64 * self.stride + self.attn_at,
            ..Default::default()
        })
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::mem::{offset_of, size_of};

    use candle_core::cuda_backend::WrapErr;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaGraph, CudaSlice, DevicePtr, DeviceRepr, result, sys,
    };
    use candle_core::{DType, Device, Tensor, TensorId};

    use super::{Capture, DecodeGraphs, Seen};
    use crate::model::Result;
    use crate::model::attention::fused::cuda::{AttnParams, graph_splits, plan};
    use crate::model::attention::fused::{Launch, SlotMap};
    use crate::model::kv_cache::KvCache;
    use crate::model::transformer::{Logits, Model};
    use crate::recipe::{AttnRule, Phase, Recipe};

    /// One layer's step record in device memory; `slot`, `pos` mirror `StepSlotPos` in
    /// qkv_rope.cu.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct LayerStep {
        attn: AttnParams,
        slot: i32,
        pos: i32,
    }
    // SAFETY: plain old data with the C layout the kernels read.
    unsafe impl DeviceRepr for LayerStep {}

    pub(super) struct Graph {
        graph: CudaGraph,
        cap: Capture,
        seen: Vec<Seen>,
        steps: CudaSlice<LayerStep>,
        host: Vec<LayerStep>,
        /// The cache buffers the graph reads and writes, and per layer the RoPE table it reads.
        buffers: Vec<(TensorId, TensorId)>,
        rope: Vec<(TensorId, usize)>,
    }

    /// The step through a graph, or None where it must be a plain forward pass.
    pub(super) fn step(
        model: &Model,
        token: u32,
        cache: &mut KvCache,
        recipe: &Recipe,
        graphs: &mut DecodeGraphs,
    ) -> Result<Option<Tensor>> {
        let layers = model.config().layers;
        let q0 = cache.next_pos();
        if (0..layers).any(|i| cache.append_moves(i, 1)) {
            graphs.graph = None;
            return Ok(None);
        }
        let rope = model.rope_tables(recipe);
        let covers = |r: &[(TensorId, usize)]| r.iter().all(|&(_, rows)| q0 < rows);
        if let Some(g) = graphs.graph.as_mut() {
            let same_buffers = (0..layers).all(|i| cache.buffer_ids(i) == Some(g.buffers[i]));
            if same_buffers && rope.as_ref().is_some_and(|r| *r == g.rope && covers(r)) {
                let logits = g.replay(token, cache, recipe)?;
                graphs.stats.replays += 1;
                return Ok(Some(logits));
            }
        }
        graphs.graph = None;
        // A plain pass builds or grows a short RoPE table; the next step captures.
        let Device::Cuda(dev) = model.device() else {
            return Ok(None);
        };
        if !rope.as_deref().is_some_and(covers) {
            return Ok(None);
        }
        // Some of candle's kernels take their arguments' shapes through a host-to-device copy
        // per launch, which a capture would record with a host address that is gone by the
        // replay. With candle's upload cache on, a plain step puts them in device memory
        // once, and the capture reuses those.
        let _uploads = dev.enable_cuda_graph_htod_cache();
        if !graphs.warm {
            graphs.warm = true;
            graphs.stats.plain += 1;
            return model.forward(&[token], cache, recipe, Phase::Decode, Logits::Last);
        }
        let Some((g, logits)) = Graph::capture(model, token, cache, recipe)? else {
            return Ok(None);
        };
        graphs.graph = Some(g);
        graphs.stats.captures += 1;
        Ok(Some(logits))
    }

    impl Graph {
        /// Records one decode step (running its cache bookkeeping), then runs it. None when
        /// the stream cannot capture it; the cache is then as it was.
        fn capture(
            model: &Model,
            token: u32,
            cache: &mut KvCache,
            recipe: &Recipe,
        ) -> Result<Option<(Graph, Tensor)>> {
            let Device::Cuda(dev) = model.device() else {
                return Ok(None);
            };
            let cfg = model.config();
            let stream = dev.cuda_stream();
            // SAFETY: every record is written before each launch.
            let steps = unsafe { stream.alloc::<LayerStep>(cfg.layers) }.w()?;
            let (base, _sync) = steps.device_ptr(&stream);
            let cap = Capture {
                // Not `Tensor::new`: with the upload cache on, that would hand out a buffer
                // shared by every upload of the same value, and the replays write this one.
                ids: Tensor::zeros(1, DType::U32, model.device())?,
                logits: Tensor::zeros(cfg.vocab, DType::F32, model.device())?,
                base,
                stride: size_of::<LayerStep>() as u64,
                attn_at: offset_of!(LayerStep, attn) as u64,
                slot_at: offset_of!(LayerStep, slot) as u64,
                splits: graph_splits(cfg.kv_heads),
                slots: Default::default(),
                seen: Default::default(),
            };
            let q0 = cache.next_pos();
            let before = cache.clone();
            let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
            if let Err(e) = stream.begin_capture(mode) {
                tracing::warn!("decode graphs off: cannot capture on this stream ({e})");
                return Ok(None);
            }
            let out = model.forward_pass(
                &[token],
                cache,
                recipe,
                Phase::Decode,
                Logits::Last,
                Some(&cap),
                None,
            );
            let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
            let graph = match (out, graph) {
                (Ok(Some(_)), Ok(Some(g))) => g,
                (out, graph) => {
                    tracing::warn!(
                        "decode step capture failed (forward: {:?}, graph: {:?}); plain step",
                        out.err(),
                        graph.err()
                    );
                    *cache = before;
                    return Ok(None);
                }
            };
            let seen = cap.seen.take();
            let slots = cap.slots.take();
            if seen.len() != cfg.layers || slots.len() != cfg.layers {
                // A layer took the candle-ops path: its positions are baked in.
                *cache = before;
                return Ok(None);
            }
            let host = seen
                .iter()
                .zip(&slots)
                .map(|(s, &slot)| layer_step(s, s.map, s.rule, slot, q0, cap.splits))
                .collect::<Result<Vec<_>>>()?;
            let buffers = (0..cfg.layers)
                .map(|i| cache.buffer_ids(i).expect("written by the captured step"))
                .collect();
            let rope = model
                .rope_tables(recipe)
                .expect("built by the captured step");
            drop(_sync);
            let mut g = Graph {
                graph,
                cap,
                seen,
                steps,
                host,
                buffers,
                rope,
            };
            g.launch(token)?;
            let logits = g.cap.logits.clone();
            Ok(Some((g, logits)))
        }

        /// The cache bookkeeping of a forward pass (same order, no kernels), then the graph.
        fn replay(&mut self, token: u32, cache: &mut KvCache, recipe: &Recipe) -> Result<Tensor> {
            let q0 = cache.next_pos();
            for (i, seen) in self.seen.iter().enumerate() {
                let rule = recipe.rule(i, Phase::Decode);
                let (_, _, slot) = cache.append_slots(i, 1)?;
                let (_, _, map) = cache.slot_map(i, &rule.key_span(q0, q0 + 1))?;
                self.host[i] = layer_step(seen, map, rule, slot, q0, self.cap.splits)?;
                if cache.eviction() && recipe.layer_evicts(i) {
                    cache.evict(i, rule.sink, rule.first_needed(q0))?;
                }
            }
            cache.advance(1);
            self.launch(token)?;
            Ok(self.cap.logits.clone())
        }

        /// Writes the step's records and token, then launches the graph. The copies are
        /// synchronous: an asynchronous copy from pageable memory read the token after its
        /// stack slot was gone (seen on CUDA 13). They order with the device's stream through
        /// the legacy stream, and the last step's work is done by now (its logits were read).
        fn launch(&mut self, token: u32) -> Result<()> {
            let stream = self.steps.stream().clone();
            let (steps, _sync) = self.steps.device_ptr(&stream);
            // SAFETY: `host` has one record per layer, the length of `steps`.
            unsafe { result::memcpy_htod_sync(steps, &self.host) }.w()?;
            let (storage, _) = self.cap.ids.storage_and_layout();
            let candle_core::Storage::Cuda(ids) = &*storage else {
                unreachable!("the graph's token buffer is on the GPU")
            };
            let ids = ids.as_cuda_slice::<u32>()?;
            let (ptr, _sync) = ids.device_ptr(&stream);
            // SAFETY: one u32 into the one-element token buffer.
            unsafe { result::memcpy_htod_sync(ptr, &[token]) }.w()?;
            self.graph.launch().w()?;
            Ok(())
        }
    }

    fn layer_step(
        seen: &Seen,
        map: SlotMap,
        rule: AttnRule,
        slot: usize,
        q0: usize,
        splits: usize,
    ) -> Result<LayerStep> {
        let launch = Launch {
            splits: Some(splits),
            ..Default::default()
        };
        let attn = plan(&seen.q, &seen.k, &seen.v, map, rule, q0, &launch)?.params;
        Ok(LayerStep {
            attn,
            slot: slot as i32,
            pos: q0 as i32,
        })
    }
}
