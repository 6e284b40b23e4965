"""The languages each catalog model was trained to work in, as its model card states them,
so the model picker can say which ones can answer in Chinese.

Keyed by the start of the catalog name: one model card speaks for all sizes of a generation.
"""

from __future__ import annotations

# ISO 639-1 codes, the languages named first on the model card first; "many" stands for the
# rest of a long list (Qwen2.5: 29+, Qwen3: 119, Gemma 3: 140+).
LANGUAGES: dict[str, tuple[str, ...]] = {
    "smollm2-": ("en",),
    "qwen2.5-": ("zh", "en", "fr", "es", "pt", "de", "it", "ru", "ja", "ko", "vi", "th", "ar"),
    "qwen3-": ("zh", "en", "many"),
    "llama-3.": ("en", "de", "fr", "it", "pt", "hi", "es", "th"),
    "mistral-": ("en",),
    "gemma-2-": ("en",),
    "gemma-3-": ("en", "zh", "many"),
    "glm-4-": ("zh", "en"),
    "phi-3.5-": ("en", "zh", "ar", "de", "es", "fr", "ja", "ko", "many"),
    "phi-4-": ("en", "zh", "ar", "de", "es", "fr", "ja", "ko", "many"),
}


def languages_of(name: str) -> list[str]:
    """The model's languages ([] for a name outside the catalog's generations)."""
    for prefix, codes in LANGUAGES.items():
        if name.startswith(prefix):
            return list(codes)
    return []


def speaks_chinese(name: str) -> bool:
    return "zh" in languages_of(name)
