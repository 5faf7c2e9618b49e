//! Next-token choice: greedy, temperature, top-k, top-p, repetition penalty, seeded; and
//! [`repeated_tail`], which tells an answer stuck in a loop. The samplers themselves are
//! candle-transformers'; this holds the user's settings.

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
    /// 1.0 means none; >1 discourages repeating recent tokens. Unset: the model's default
    /// (a preset's, else none), filled in when the model opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f32>,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
    pub max_new_tokens: usize,
    /// Stop an answer once its last tokens are one span repeated this many times (and at
    /// least [`LOOP_MIN_TOKENS`] long); 0 never stops.
    pub stop_repeats: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repeat_penalty: None,
            repeat_last_n: 64,
            seed: 299792458,
            max_new_tokens: 512,
            stop_repeats: 3,
        }
    }
}

impl SamplingParams {
    /// The repetition penalty in effect (1.0: none).
    pub fn penalty(&self) -> f32 {
        self.repeat_penalty.unwrap_or(1.0)
    }

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
        let penalty = self.params.penalty();
        if self.params.temperature <= 0.0 && penalty == 1.0 {
            // Greedy without a penalty: the same pick as the processor's, by a faster kernel
            // on the GPU.
            return crate::model::argmax(logits);
        }
        let logits = if penalty != 1.0 {
            let from = recent.len().saturating_sub(self.params.repeat_last_n);
            candle_transformers::utils::apply_repeat_penalty(logits, penalty, &recent[from..])?
        } else {
            logits.clone()
        };
        self.inner.sample(&logits)
    }
}

/// A loop is only called one past this many tokens: short runs of one token (`----`, `...`)
/// are ordinary text.
pub const LOOP_MIN_TOKENS: usize = 32;

/// Spans longer than this are not looked for (a repeated paragraph is caught at its third copy
/// of a shorter period, or by the token cap).
const LOOP_MAX_PERIOD: usize = 256;

/// When the last tokens of `tokens` are one span repeated at least `repeats` times, covering
/// at least [`LOOP_MIN_TOKENS`]: the span's length (the shortest such) and how many tokens the
/// run covers. A model that repeats one sentence produces exactly this.
pub fn repeated_tail(tokens: &[u32], repeats: usize) -> Option<(usize, usize)> {
    if repeats < 2 {
        return None;
    }
    let n = tokens.len();
    (1..=LOOP_MAX_PERIOD.min(n / repeats)).find_map(|p| {
        // The run is periodic with period p as far back as it goes.
        let run = (p..n)
            .take_while(|&i| tokens[n - 1 - i + p] == tokens[n - 1 - i])
            .count()
            + p;
        (run >= (repeats * p).max(LOOP_MIN_TOKENS)).then_some((p, run))
    })
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
            repeat_penalty: Some(1.5),
            ..Default::default()
        };
        let mut s = Sampler::new(&p);
        assert_eq!(s.sample(&logits(), &[1]).unwrap(), 2);
        // Outside the last-n window the penalty does not apply.
        let p = SamplingParams {
            repeat_penalty: Some(1.5),
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

    #[test]
    fn a_repeated_sentence_is_a_loop_and_varied_text_is_not() {
        // A 12-token "sentence" three times: a loop of period 12 over 36 tokens.
        let sentence: Vec<u32> = (100..112).collect();
        let mut t: Vec<u32> = vec![1, 2, 3];
        for _ in 0..3 {
            t.extend(&sentence);
        }
        assert_eq!(repeated_tail(&t, 3), Some((12, 36)));
        // Twice is not yet a loop at 3 repeats, but is at 2 (it covers 24 < 32 tokens: no).
        assert_eq!(repeated_tail(&t[..27], 3), None);
        assert_eq!(repeated_tail(&t[..27], 2), None);
        // One token repeated: a loop only past the minimum length.
        assert_eq!(repeated_tail(&[7; 31], 3), None);
        assert_eq!(repeated_tail(&[7; 32], 3), Some((1, 32)));
        // A list whose items differ (numbers) is not periodic.
        let list: Vec<u32> = (0..40).flat_map(|i| [50, 60 + i, 70]).collect();
        assert_eq!(repeated_tail(&list, 3), None);
        // Only the tail counts: a loop that ended earlier does not stop the answer.
        let mut ended = t.clone();
        ended.extend(200..240);
        assert_eq!(repeated_tail(&ended, 3), None);
        // 0 or 1 repeats never stop.
        assert_eq!(repeated_tail(&[7; 100], 0), None);
        assert_eq!(repeated_tail(&[7; 100], 1), None);
    }
}
