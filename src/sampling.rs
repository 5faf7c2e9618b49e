//! Next-token choice: greedy, temperature, top-k, top-p, repetition penalty, seeded.
//! The samplers themselves are candle-transformers'; this holds the user's settings.

use candle_core::Tensor;
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f64,
    /// 0 means no top-k cut.
    pub top_k: usize,
    /// 1.0 means no nucleus cut.
    pub top_p: f64,
    /// 1.0 means none; >1 discourages repeating recent tokens.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
    pub max_new_tokens: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 299792458,
            max_new_tokens: 512,
        }
    }
}

impl SamplingParams {
    fn sampling(&self) -> Sampling {
        let t = self.temperature;
        match (t > 0.0, self.top_k > 0, self.top_p < 1.0) {
            (false, _, _) => Sampling::ArgMax,
            (true, false, false) => Sampling::All { temperature: t },
            (true, true, false) => Sampling::TopK {
                k: self.top_k,
                temperature: t,
            },
            (true, false, true) => Sampling::TopP {
                p: self.top_p,
                temperature: t,
            },
            (true, true, true) => Sampling::TopKThenTopP {
                k: self.top_k,
                p: self.top_p,
                temperature: t,
            },
        }
    }
}

pub struct Sampler {
    params: SamplingParams,
    inner: LogitsProcessor,
}

impl Sampler {
    pub fn new(params: &SamplingParams) -> Self {
        Sampler {
            inner: LogitsProcessor::from_sampling(params.seed, params.sampling()),
            params: params.clone(),
        }
    }

    /// Picks the next token from `[vocab]` f32 logits; `recent` are the tokens the penalty sees.
    pub fn sample(&mut self, logits: &Tensor, recent: &[u32]) -> candle_core::Result<u32> {
        if self.params.temperature <= 0.0 && self.params.repeat_penalty == 1.0 {
            // Greedy without a penalty: the same pick as the processor's, by a faster kernel
            // on the GPU.
            return crate::model::argmax(logits);
        }
        let logits = if self.params.repeat_penalty != 1.0 {
            let from = recent.len().saturating_sub(self.params.repeat_last_n);
            candle_transformers::utils::apply_repeat_penalty(
                logits,
                self.params.repeat_penalty,
                &recent[from..],
            )?
        } else {
            logits.clone()
        };
        self.inner.sample(&logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn logits() -> Tensor {
        Tensor::new(&[0.1f32, 3.0, 2.9, -1.0, 0.5], &Device::Cpu).unwrap()
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(&SamplingParams::default());
        assert_eq!(s.sample(&logits(), &[]).unwrap(), 1);
    }

    #[test]
    fn repetition_penalty_moves_off_a_repeated_token() {
        let p = SamplingParams {
            repeat_penalty: 1.5,
            ..Default::default()
        };
        let mut s = Sampler::new(&p);
        assert_eq!(s.sample(&logits(), &[1]).unwrap(), 2);
        // Outside the last-n window the penalty does not apply.
        let p = SamplingParams {
            repeat_penalty: 1.5,
            repeat_last_n: 1,
            ..Default::default()
        };
        assert_eq!(Sampler::new(&p).sample(&logits(), &[1, 4]).unwrap(), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_reproduce() {
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        };
        assert_eq!(Sampler::new(&p).sample(&logits(), &[]).unwrap(), 1);
        let p = SamplingParams {
            temperature: 5.0,
            seed: 7,
            ..Default::default()
        };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p);
            (0..50)
                .map(|_| s.sample(&logits(), &[]).unwrap())
                .collect::<Vec<_>>()
        };
        let a = draw(&p);
        assert_eq!(a, draw(&p));
        assert!(
            a.iter().any(|&t| t != 1),
            "high temperature should sometimes leave the argmax"
        );
        assert_ne!(
            a,
            draw(&SamplingParams {
                seed: 8,
                ..p.clone()
            })
        );
        // top-p small keeps only the top token.
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.01,
            ..Default::default()
        };
        assert!(draw(&p).iter().all(|&t| t == 1));
    }
}
