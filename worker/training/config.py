"""The one training-run config: the web form, the REST body, the YAML file and the CLI all
produce and accept it, and it is stored on the job row as JSON.

This module must stay importable without torch, the web stack or a database.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

METHODS = ("lora",)
Method = Literal["lora"]
Scheduler = Literal["linear", "cosine", "constant"]


class TrainConfig(BaseModel):
    """Hyper-parameters and inputs of one fine-tuning run."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        description=(
            "A catalog name (e.g. smollm2-135m-instruct), a Hugging Face hub id, a local model "
            "folder, or a .gguf file"
        ),
        min_length=1,
    )
    method: Method = "lora"
    max_steps: int | None = Field(default=None, ge=1, le=1_000_000)
    epochs: float | None = Field(default=None, gt=0, le=100)
    learning_rate: float = Field(default=2e-4, gt=0, le=1)
    batch_size: int = Field(default=4, ge=1, le=1024)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    max_seq_length: int = Field(default=1024, ge=16, le=131072)
    packing: bool = Field(
        default=True,
        description=(
            "Pack each step's samples end to end into rows without padding (each sample still "
            "attends only to itself); off pads every batch to its longest sample"
        ),
    )
    micro_batch_tokens: int | None = Field(
        default=None,
        ge=16,
        le=1_048_576,
        description=(
            "Tokens per packed forward pass; unset picks one from the model's size and the "
            "free GPU memory. Does not change the samples per optimiser step"
        ),
    )
    warmup_steps: int = Field(default=0, ge=0)
    lr_scheduler: Scheduler = "linear"
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    lora_r: int = Field(default=16, ge=1, le=1024)
    lora_alpha: int = Field(default=32, ge=1, le=4096)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["auto"] = "auto"
    seed: int = 42
    system_prompt: str | None = Field(
        default=None, description="Prepended as a system turn to samples that have none"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Both flags can make loading a model run arbitrary code on the worker, so they come from
    # an admin's per-model allow-list (filled in by the server), never from a user's request.
    trust_remote_code: bool = Field(
        default=False,
        description=(
            "Run Python code shipped with the model (transformers' trust_remote_code). Set by "
            "the server from an admin's allow-list of models, not by users."
        ),
    )
    allow_pickle_weights: bool = Field(
        default=False,
        description=(
            "Load pickle checkpoints (pytorch_model.bin, *.pt, *.pth, *.ckpt) when a model has "
            "no safetensors weights; unpickling can run code. Set by the server from an "
            "admin's allow-list of models, not by users."
        ),
    )

    @model_validator(mode="after")
    def _length_of_training(self) -> TrainConfig:
        if self.max_steps is None and self.epochs is None:
            self.epochs = 1.0
        return self
