//! Per-layer K/V storage that writes in place and can drop what a recipe will never read again.
//!
//! Slot layout of a layer: slots `0..sink_held` hold positions `0..sink_held` (the sink), and
//! slots `recent_slot..len` hold the contiguous positions `start..end`; slots between are
//! dropped tokens. Before any eviction everything is 0, so slot = position. Eviction only moves
//! `recent_slot` and `start` (no copy); an append that finds the buffer full first compacts
//! the recent tokens down to `sink_held`, so copying is amortised over many steps.

use std::ops::Range;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use super::attention::fused::SlotMap;
use super::{ModelError, Result};
use crate::recipe::KeySpan;

#[derive(Debug, Clone)]
struct LayerCache {
    /// `[1, kv_heads, capacity, head_dim]`, or None before the first write.
    k: Option<Tensor>,
    v: Option<Tensor>,
    /// Slots in use, dropped ones included.
    len: usize,
    sink_held: usize,
    /// Slot of position `start`.
    recent_slot: usize,
    start: usize,
    /// Most tokens held between steps.
    peak_len: usize,
}

impl LayerCache {
    fn new() -> Self {
        LayerCache {
            k: None,
            v: None,
            len: 0,
            sink_held: 0,
            recent_slot: 0,
            start: 0,
            peak_len: 0,
        }
    }

    fn capacity(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.dims()[2])
    }

    fn end(&self) -> usize {
        self.start + (self.len - self.recent_slot)
    }

    fn held_tokens(&self) -> usize {
        self.sink_held + (self.len - self.recent_slot)
    }

    /// Slot ranges holding positions `r`, or the first position no longer held.
    fn slots(&self, r: Range<usize>) -> std::result::Result<Vec<Range<usize>>, usize> {
        let mut out = Vec::new();
        if r.is_empty() {
            return Ok(out);
        }
        let sink_part = r.start..r.end.min(self.sink_held);
        if !sink_part.is_empty() {
            out.push(sink_part.clone());
        }
        let rest = r.start.max(self.sink_held)..r.end;
        if !rest.is_empty() {
            if rest.start < self.start || rest.end > self.end() {
                return Err(if rest.start < self.start {
                    rest.start
                } else {
                    self.end()
                });
            }
            let s = self.recent_slot + rest.start - self.start;
            out.push(s..s + rest.len());
        }
        Ok(out)
    }
}

/// One layer's held tokens: K and V `[1, kv_heads, n, head_dim]` of positions `0..sink`
/// followed by `start..next_pos`.
#[derive(Debug, Clone)]
pub struct HeldLayer {
    pub sink: usize,
    pub start: usize,
    pub k: Tensor,
    pub v: Tensor,
}

/// Sizes for the stats panel and reports.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CacheStats {
    /// Tokens held per layer.
    pub tokens_per_layer: Vec<usize>,
    /// Bytes of K and V held (tokens × bytes per token), all layers.
    pub bytes_held: usize,
    /// Bytes allocated for K and V buffers (held + spare capacity).
    pub bytes_allocated: usize,
    /// The largest allocation seen since the cache was created or cleared.
    pub peak_bytes_allocated: usize,
    /// Position of the next token.
    pub next_pos: usize,
}

#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    next_pos: usize,
    kv_heads: usize,
    head_dim: usize,
    dtype: DType,
    device: Device,
    peak_alloc: usize,
    eviction: bool,
}

impl KvCache {
    pub fn new(
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Self {
        KvCache {
            layers: vec![LayerCache::new(); layers],
            next_pos: 0,
            kv_heads,
            head_dim,
            dtype,
            device: device.clone(),
            peak_alloc: 0,
            eviction: true,
        }
    }

    /// Turns dropping of unneeded tokens off (tests compare both ways).
    pub fn set_eviction(&mut self, on: bool) {
        self.eviction = on;
    }

    pub fn eviction(&self) -> bool {
        self.eviction
    }

    pub fn next_pos(&self) -> usize {
        self.next_pos
    }

    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = LayerCache::new());
        self.next_pos = 0;
        self.peak_alloc = 0;
    }

    fn token_bytes(&self) -> usize {
        2 * self.kv_heads * self.head_dim * self.dtype.size_in_bytes()
    }

    /// Grows a layer's buffers to hold at least `tokens`, so long reads do not reallocate
    /// per chunk. Callers that know the prompt length reserve it up front.
    pub fn reserve(&mut self, layer: usize, tokens: usize) -> Result<()> {
        let l = &self.layers[layer];
        if l.capacity() >= tokens {
            return Ok(());
        }
        let shape = (1, self.kv_heads, tokens, self.head_dim);
        let k = Tensor::zeros(shape, self.dtype, &self.device)?;
        let v = Tensor::zeros(shape, self.dtype, &self.device)?;
        let l = &mut self.layers[layer];
        if l.len > 0 {
            let (ok, ov) = (
                l.k.as_ref().expect("len > 0"),
                l.v.as_ref().expect("len > 0"),
            );
            k.slice_set(&ok.narrow(2, 0, l.len)?.contiguous()?, 2, 0)?;
            v.slice_set(&ov.narrow(2, 0, l.len)?.contiguous()?, 2, 0)?;
        }
        l.k = Some(k);
        l.v = Some(v);
        self.note_alloc();
        Ok(())
    }

    fn note_alloc(&mut self) {
        let alloc = self.layers.iter().map(|l| l.capacity()).sum::<usize>() * self.token_bytes();
        self.peak_alloc = self.peak_alloc.max(alloc);
    }

    /// Writes K and V (`[1, kv_heads, C, head_dim]`) of positions `next_pos..next_pos+C`.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let (kb, vb, slot) = self.append_slots(layer, k.dims()[2])?;
        kb.slice_set(&k.contiguous()?, 2, slot)?;
        vb.slice_set(&v.contiguous()?, 2, slot)?;
        Ok(())
    }

    /// Makes room for positions `next_pos..next_pos+c` and returns the layer's K and V
    /// buffers and the slot where they go, for kernels that write the cache in place.
    pub fn append_slots(&mut self, layer: usize, c: usize) -> Result<(Tensor, Tensor, usize)> {
        let l = &self.layers[layer];
        debug_assert_eq!(l.end(), self.next_pos, "layer {layer} out of step");
        if l.len + c > l.capacity() {
            self.compact(layer)?;
        }
        let l = &self.layers[layer];
        let need = l.len + c;
        if need > l.capacity() {
            // Geometric growth keeps total copying linear in the document length.
            let grown = (l.capacity() + l.capacity() / 2)
                .max(need)
                .next_multiple_of(256);
            self.reserve(layer, grown)?;
        }
        let l = &mut self.layers[layer];
        let slot = l.len;
        l.len += c;
        Ok((
            l.k.clone().expect("reserved"),
            l.v.clone().expect("reserved"),
            slot,
        ))
    }

    /// Whether appending `c` tokens to `layer` would move its data (compact it, or grow or
    /// create its buffers): a replayed decode graph holds the buffers and writes by slot.
    pub fn append_moves(&self, layer: usize, c: usize) -> bool {
        let l = &self.layers[layer];
        l.k.is_none() || l.len + c > l.capacity()
    }

    /// Identities of a layer's K and V buffers (a decode graph checks it still writes these).
    pub fn buffer_ids(
        &self,
        layer: usize,
    ) -> Option<(candle_core::TensorId, candle_core::TensorId)> {
        let l = &self.layers[layer];
        Some((l.k.as_ref()?.id(), l.v.as_ref()?.id()))
    }

    /// Moves the recent tokens down over the dropped slots.
    fn compact(&mut self, layer: usize) -> Result<()> {
        let l = &mut self.layers[layer];
        if l.recent_slot == l.sink_held {
            return Ok(());
        }
        let keep = l.len - l.recent_slot;
        if keep > 0 {
            let (kb, vb) = (
                l.k.as_ref().expect("written"),
                l.v.as_ref().expect("written"),
            );
            // Source and destination may overlap: copy out first.
            let kk = kb.narrow(2, l.recent_slot, keep)?.force_contiguous()?;
            let vv = vb.narrow(2, l.recent_slot, keep)?.force_contiguous()?;
            kb.slice_set(&kk, 2, l.sink_held)?;
            vb.slice_set(&vv, 2, l.sink_held)?;
        }
        l.len = l.sink_held + keep;
        l.recent_slot = l.sink_held;
        Ok(())
    }

    /// Marks the tokens written by the last `append` of every layer as done.
    pub fn advance(&mut self, c: usize) {
        self.next_pos += c;
        for l in self.layers.iter_mut() {
            l.peak_len = l.peak_len.max(l.held_tokens());
        }
    }

    /// Forgets positions `pos..`, so that a pass can compute the last tokens again (an
    /// answer's citation pass). Every layer must still hold `pos`: nothing after it evicted.
    pub fn truncate(&mut self, pos: usize) -> Result<()> {
        if pos > self.next_pos {
            return Err(ModelError::Evicted { pos });
        }
        if let Some(l) = self
            .layers
            .iter()
            .find(|l| pos < l.start || pos < l.sink_held)
        {
            return Err(ModelError::Evicted { pos: l.start });
        }
        for l in self.layers.iter_mut() {
            l.len = l.recent_slot + (pos - l.start);
        }
        self.next_pos = pos;
        Ok(())
    }

    /// Slot ranges holding the positions of `r`, adjacent ranges merged.
    fn slot_ranges(&self, layer: usize, r: Range<usize>) -> Result<Vec<Range<usize>>> {
        let slots = self.layers[layer]
            .slots(r)
            .map_err(|pos| ModelError::Evicted { pos })?;
        Ok(merge(slots))
    }

    /// K and V at the positions of `span`, in span order (sink first).
    pub fn gather(&self, layer: usize, span: &KeySpan) -> Result<(Tensor, Tensor)> {
        let mut slots = self.slot_ranges(layer, span.sink.clone())?;
        slots.extend(self.slot_ranges(layer, span.recent.clone())?);
        // Before eviction a span is one contiguous narrow.
        let merged = merge(slots);
        let l = &self.layers[layer];
        let (kb, vb) = (
            l.k.as_ref().expect("written"),
            l.v.as_ref().expect("written"),
        );
        let take = |b: &Tensor| -> candle_core::Result<Tensor> {
            let parts: Vec<Tensor> = merged
                .iter()
                .map(|r| b.narrow(2, r.start, r.len()))
                .collect::<candle_core::Result<_>>()?;
            if parts.len() == 1 {
                Ok(parts.into_iter().next().expect("one part"))
            } else {
                Tensor::cat(&parts, 2)
            }
        };
        Ok((take(kb)?, take(vb)?))
    }

    /// The layer's whole K and V buffers and where the keys of `span` lie in them, for
    /// kernels that read the cache in place instead of gathering.
    pub fn slot_map(&self, layer: usize, span: &KeySpan) -> Result<(Tensor, Tensor, SlotMap)> {
        let one = |r: Range<usize>| -> Result<Range<usize>> {
            let v = self.slot_ranges(layer, r.clone())?;
            match v.as_slice() {
                [] => Ok(0..0),
                [s] => Ok(s.clone()),
                _ => Err(ModelError::Evicted { pos: r.start }),
            }
        };
        let (sink, recent) = (one(span.sink.clone())?, one(span.recent.clone())?);
        let l = &self.layers[layer];
        let map = SlotMap {
            n_sink: sink.len(),
            sink_slot0: sink.start,
            n_recent: recent.len(),
            recent_slot0: recent.start,
            recent_pos0: span.recent.start,
        };
        Ok((
            l.k.clone().expect("written"),
            l.v.clone().expect("written"),
            map,
        ))
    }

    /// Drops positions `sink..first_needed` of a layer. Positions below `sink` are never
    /// dropped. Their slots stay allocated until an append needs the room (see `compact`).
    pub fn evict(&mut self, layer: usize, sink: usize, first_needed: usize) -> Result<()> {
        let l = &mut self.layers[layer];
        let end = l.end();
        // Before the first eviction slot = position and the first droppable position is `sink`.
        let never = l.start == 0 && l.sink_held == 0;
        let lo = if never { sink.min(end) } else { l.start };
        let keep_from = first_needed.max(sink).min(end);
        if keep_from <= lo {
            return Ok(());
        }
        l.recent_slot += keep_from - l.start;
        l.sink_held = sink;
        l.start = keep_from;
        Ok(())
    }

    /// Tokens held by a layer, and their positions (sink, then recent).
    pub fn held(&self, layer: usize) -> (Range<usize>, Range<usize>) {
        let l = &self.layers[layer];
        (0..l.sink_held, l.start.max(l.sink_held)..l.end())
    }

    pub fn stats(&self) -> CacheStats {
        let tb = self.token_bytes();
        let tokens: Vec<usize> = self.layers.iter().map(LayerCache::held_tokens).collect();
        let alloc = self.layers.iter().map(|l| l.capacity()).sum::<usize>() * tb;
        CacheStats {
            bytes_held: tokens.iter().sum::<usize>() * tb,
            tokens_per_layer: tokens,
            bytes_allocated: alloc,
            peak_bytes_allocated: self.peak_alloc.max(alloc),
            next_pos: self.next_pos,
        }
    }

    /// The most tokens a layer has held between steps (after each step's eviction).
    pub fn peak_tokens(&self, layer: usize) -> usize {
        self.layers[layer].peak_len
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Each layer's held tokens, compacted (sink first, then the recent run), for storing
    /// a read. Layers marked in `copy` are copied; the others are views of the live buffers,
    /// which stay valid while nothing rewrites those slots: only an evicting layer compacts,
    /// and appends write past the slots in use.
    pub fn export(&self, copy: &[bool]) -> Result<Vec<HeldLayer>> {
        self.layers
            .iter()
            .zip(copy)
            .map(|(l, &copy)| {
                let (Some(k), Some(v)) = (&l.k, &l.v) else {
                    return Err(candle_core::Error::Msg(
                        "an empty cache has nothing to export".into(),
                    )
                    .into());
                };
                let take = |b: &Tensor| -> candle_core::Result<Tensor> {
                    let t = if l.sink_held == l.recent_slot {
                        b.narrow(2, 0, l.len)?
                    } else {
                        let recent = b.narrow(2, l.recent_slot, l.len - l.recent_slot)?;
                        Tensor::cat(&[&b.narrow(2, 0, l.sink_held)?, &recent], 2)?
                    };
                    if copy { t.copy() } else { Ok(t) }
                };
                Ok(HeldLayer {
                    sink: l.sink_held,
                    start: l.start,
                    k: take(k)?,
                    v: take(v)?,
                })
            })
            .collect()
    }

    /// Replaces this (empty) cache's contents with `layers` as [`Self::export`] gave them, at
    /// the same positions; each layer gets room for `capacity[l]` tokens so that the next
    /// prefill does not copy it again.
    pub fn import(
        &mut self,
        layers: Vec<HeldLayer>,
        next_pos: usize,
        capacity: &[usize],
    ) -> Result<()> {
        if layers.len() != self.layers.len() || capacity.len() != self.layers.len() {
            let msg = format!(
                "{} stored layers for a {}-layer cache",
                layers.len(),
                self.layers.len()
            );
            return Err(candle_core::Error::Msg(msg).into());
        }
        self.clear();
        for (i, h) in layers.into_iter().enumerate() {
            let n = h.k.dims()[2];
            let recent = n.checked_sub(h.sink).filter(|r| h.start + r == next_pos);
            if recent.is_none() || h.k.dims() != h.v.dims() || h.sink > h.start {
                let msg = format!(
                    "stored layer {i} does not add up: {n} tokens, sink {}, from {} to {next_pos}",
                    h.sink, h.start
                );
                return Err(candle_core::Error::Msg(msg).into());
            }
            self.reserve(i, capacity[i].max(n))?;
            let l = &mut self.layers[i];
            let (kb, vb) = (
                l.k.as_ref().expect("reserved"),
                l.v.as_ref().expect("reserved"),
            );
            kb.slice_set(&h.k.to_device(&self.device)?.to_dtype(self.dtype)?, 2, 0)?;
            vb.slice_set(&h.v.to_device(&self.device)?.to_dtype(self.dtype)?, 2, 0)?;
            l.len = n;
            l.sink_held = h.sink;
            l.recent_slot = h.sink;
            l.start = h.start;
            l.peak_len = n;
        }
        self.next_pos = next_pos;
        Ok(())
    }

    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    pub fn kv_heads(&self) -> usize {
        self.kv_heads
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// A deep copy: forks share nothing, so answering on one leaves the other as it was.
    pub fn fork(&self) -> Result<Self> {
        let mut out = self.clone();
        for l in out.layers.iter_mut() {
            l.k = l.k.as_ref().map(|t| t.copy()).transpose()?;
            l.v = l.v.as_ref().map(|t| t.copy()).transpose()?;
        }
        Ok(out)
    }
}

/// Joins ranges that touch (`0..4, 4..9` → `0..9`).
fn merge(ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    let mut merged: Vec<Range<usize>> = Vec::new();
    for s in ranges {
        match merged.last_mut() {
            Some(last) if last.end == s.start => last.end = s.end,
            _ => merged.push(s),
        }
    }
    merged
}
