//! What the training loops share (`swat train`, `finetune`): our own AdamW, whose moments a
//! checkpoint can hold (candle's keeps them private, and a resumed run would restart the
//! moment estimates and differ from an uninterrupted one), the warm-up + cosine schedule and
//! global-norm clipping.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

/// What a training run reports after each step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    pub step: usize,
    /// The run's total.
    pub steps: usize,
    pub loss: f32,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    /// Held-out loss, on validation steps (`swat train`; `finetune` measures it at the end).
    pub val_loss: Option<f32>,
}

/// A checkpoint's JSON state file, parsed; the error is the detail a trainer reports with
/// the file's name.
pub fn read_state<T: serde::de::DeserializeOwned>(path: &Path) -> std::result::Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// Linear warm-up to `lr` over `warmup` steps, then cosine decay to `lr · min_ratio` at
/// `steps`. `step` counts from 1.
pub fn cosine_lr(lr: f64, min_ratio: f64, warmup: usize, steps: usize, step: usize) -> f64 {
    if step <= warmup {
        return lr * step as f64 / warmup.max(1) as f64;
    }
    let span = steps.saturating_sub(warmup).max(1) as f64;
    let p = ((step - warmup) as f64 / span).min(1.0);
    let min = lr * min_ratio;
    min + 0.5 * (lr - min) * (1.0 + (std::f64::consts::PI * p).cos())
}

/// Scales `grads` so that their global L2 norm is at most `clip` (0: no clipping); returns
/// the norm before clipping.
pub fn clip_global_norm(grads: &mut HashMap<String, Tensor>, clip: f64) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.values() {
        sq += g
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
    }
    let norm = sq.sqrt();
    if clip > 0.0 && norm > clip {
        let k = clip / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = (&*g * k)?;
        }
    }
    Ok(norm)
}

/// AdamW (Loshchilov & Hutter), the update of `candle_nn::AdamW` with visible moments.
/// Weight decay applies to matrices only: decaying norm gains towards 0 only hurts.
pub struct AdamW {
    vars: Vec<(String, Var, Tensor, Tensor)>,
    step: usize,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    /// β₁ = 0.9, β₂ = 0.95, ε = 1e-8.
    pub fn new(vars: Vec<(String, Var)>, weight_decay: f64) -> Result<Self> {
        let vars = vars
            .into_iter()
            .map(|(n, v)| {
                let z = v.zeros_like()?;
                Ok((n, v, z.clone(), z))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            vars,
            step: 0,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay,
        })
    }

    pub fn step(&mut self, grads: &HashMap<String, Tensor>, lr: f64) -> Result<()> {
        self.step += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let scale_m = 1.0 / (1.0 - b1.powi(self.step as i32));
        let scale_v = 1.0 / (1.0 - b2.powi(self.step as i32));
        for (name, var, m, v) in self.vars.iter_mut() {
            let Some(g) = grads.get(name.as_str()) else {
                continue;
            };
            *m = ((&*m * b1)? + (g * (1.0 - b1))?)?;
            *v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let decay = if var.rank() >= 2 {
                lr * self.weight_decay
            } else {
                0.0
            };
            let update = ((&*m * scale_m)? / ((&*v * scale_v)?.sqrt()? + self.eps)?)?;
            var.set(&((var.as_tensor() * (1.0 - decay))? - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// Writes the moments to `path` (safetensors, `m.NAME` and `v.NAME`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut t = HashMap::new();
        for (n, _, m, v) in &self.vars {
            t.insert(format!("m.{n}"), m.clone());
            t.insert(format!("v.{n}"), v.clone());
        }
        candle_core::safetensors::save(&t, path)
    }

    /// Reads the moments [`AdamW::save`] wrote, `step` steps into the run; Err says what is
    /// missing or unreadable.
    pub fn load(
        &mut self,
        path: &Path,
        step: usize,
        device: &Device,
    ) -> std::result::Result<(), String> {
        let mut t = candle_core::safetensors::load(path, device).map_err(|e| e.to_string())?;
        for (n, _, m, v) in self.vars.iter_mut() {
            let mut take = |k: String| {
                t.remove(&k)
                    .ok_or_else(|| format!("optimizer state lacks {k}"))
            };
            *m = take(format!("m.{n}"))?;
            *v = take(format!("v.{n}"))?;
        }
        self.step = step;
        Ok(())
    }
}
