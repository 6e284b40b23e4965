"""The training methods' and presets' words on the job form, marked for translation.

The titles and descriptions are worker/spec/methods.py's, copied here so the catalog has them
(worker/spec is torch- and app-free and does not mark its words); the page passes them through
``_()``, which finds a translation while the two stay the same. tests/test_translations.py
fails when they drift apart.
"""

from __future__ import annotations

from app.core.i18n import N_

METHOD_WORDS = [
    N_("LoRA"),
    N_(
        "Low-rank adapters on the attention and MLP projections; the base model stays frozen "
        "and the result is a small adapter. rsLoRA scales the adapters by alpha/sqrt(rank) "
        "(steadier at high ranks); DoRA also learns each weight's magnitude (closer to full "
        "fine-tuning, slower per step)."
    ),
    N_("QLoRA"),
    N_(
        "LoRA on the base model loaded in 4 bits (NF4, double quantisation): about a quarter "
        "of the memory for the frozen weights, somewhat slower per step. Needs an NVIDIA GPU. "
        "rsLoRA and DoRA apply as for LoRA."
    ),
    N_("Prefix-tuning"),
    N_(
        "Learns attention keys and values for a few virtual tokens placed before every "
        "sample, in every layer; the model stays frozen and the adapter is tiny. Batches are "
        "padded, not packed."
    ),
    N_("P-tuning"),
    N_(
        "Learns the embeddings of a few virtual tokens placed before every sample, through a "
        "small prompt encoder; the model stays frozen and the adapter is tiny. Batches are "
        "padded, not packed."
    ),
    N_("IA3"),
    N_(
        "Learns a scale for every channel of the attention keys and values and of the MLP "
        "activations (keys and values only where a mixture of experts fuses its MLPs); the "
        "model stays frozen and the adapter is a few vectors per layer. "
        "Fewest trainable weights; usually wants a higher learning rate (around 3e-3)."
    ),
    N_("Full fine-tuning"),
    N_(
        "Trains every weight and saves a complete model instead of an adapter. For small "
        "models: it needs about 16 bytes of memory per parameter (float32 weights, gradients "
        "and optimiser state) plus activations."
    ),
]
PRESET_WORDS = [N_("quick"), N_("balanced"), N_("thorough")]
