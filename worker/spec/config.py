"""The one training-run config: the web form, the REST body, the YAML file and the CLI all
produce and accept it, and it is stored on the job row as JSON.

This module must stay importable without torch, the web stack or a database.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from worker.spec.catalog import catalog_entry

METHODS = ("lora", "qlora", "prefix_tuning", "p_tuning", "ia3", "full")
Method = Literal["lora", "qlora", "prefix_tuning", "p_tuning", "ia3", "full"]
Scheduler = Literal["linear", "cosine", "constant"]
LORA_METHODS = ("lora", "qlora")

# A field set to "auto" is chosen from the model and the dataset (worker.spec.autoconfig,
# run by the engine before training and by the estimates before queueing).
Auto = Literal["auto"]
AUTO_FIELDS = (
    "epochs",
    "learning_rate",
    "batch_size",
    "gradient_accumulation_steps",
    "max_seq_length",
    "warmup_steps",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
)
Preset = Literal["quick", "balanced", "thorough"]
# What each preset fills in; "auto" still adapts the rest to the model and the data. quick is
# a first look (one pass, a small adapter), thorough a final run (three passes, a larger
# adapter, a cosine schedule).
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"epochs": 1, "lora_r": 8},
    "balanced": {"epochs": "auto", "lora_r": "auto"},
    "thorough": {"epochs": 3, "lora_r": 32, "lr_scheduler": "cosine"},
}


def preset_defaults(preset: str, given: dict[str, Any]) -> dict[str, Any]:
    """The fields ``preset`` sets that ``given`` leaves out (LoRA fields for LoRA methods only;
    no number of passes when ``given`` fixes the number of steps)."""
    defaults = dict(PRESETS[preset])
    if given.get("method", "lora") not in LORA_METHODS:
        defaults = {k: v for k, v in defaults.items() if not k.startswith("lora_")}
    if given.get("max_steps") is not None:
        defaults.pop("epochs", None)
    return {k: v for k, v in defaults.items() if k not in given}


class TrainConfig(BaseModel):
    """Hyper-parameters and inputs of one fine-tuning run."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        description=(
            "A catalog name (e.g. smollm2-135m-instruct), a Hugging Face hub id (owner/name), "
            "or a local model folder or .gguf file; through the web app and the API, a local "
            "path must lie inside a folder the admin allowed (TUNELAB_MODEL_DIRS)"
        ),
        min_length=1,
    )
    method: Method = Field(
        default="lora",
        description=(
            "lora, qlora (LoRA on a 4-bit base model; needs an NVIDIA GPU), prefix_tuning, "
            "p_tuning, ia3, or full (every weight; small models only)"
        ),
    )
    preset: Preset | None = Field(
        default=None,
        description=(
            "quick, balanced or thorough: fills in the fields this config leaves out (fields "
            "given explicitly win)"
        ),
    )
    max_steps: int | None = Field(default=None, ge=1, le=1_000_000)
    epochs: Annotated[float, Field(gt=0, le=100)] | Auto | None = Field(
        default=None,
        description="Passes over the data; unset (with max_steps unset too) means auto",
    )
    learning_rate: Annotated[float, Field(gt=0, le=1)] | Auto = Field(
        default="auto", description="auto: from the method and the model's size"
    )
    batch_size: Annotated[int, Field(ge=1, le=1024)] | Auto = Field(
        default="auto", description="Samples per batch; auto: from the dataset's size"
    )
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=1024)] | Auto = Field(
        default="auto",
        description="Batches per optimiser step; auto: from the dataset's size",
    )
    max_seq_length: Annotated[int, Field(ge=16, le=131072)] | Auto = Field(
        default="auto",
        description=(
            "Tokens per sample, longer ones are cut; auto: just above the dataset's 95th "
            "percentile, within the model's context"
        ),
    )
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
    warmup_steps: Annotated[int, Field(ge=0)] | Auto = Field(
        default="auto", description="auto: 3% of the run's optimiser steps"
    )
    lr_scheduler: Scheduler = "linear"
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    lora_r: Annotated[int, Field(ge=1, le=1024)] | Auto = Field(
        default="auto", description="LoRA rank; auto: from the dataset's size (lora, qlora only)"
    )
    lora_alpha: Annotated[int, Field(ge=1, le=4096)] | Auto = Field(
        default="auto", description="LoRA scale; auto: twice the rank (lora, qlora only)"
    )
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] | Auto = Field(
        default="auto",
        description="auto: 0.05, or none for 10,000 samples and more (lora, qlora only)",
    )
    target_modules: list[str] | Literal["auto"] = "auto"
    use_rslora: bool = Field(
        default=False,
        description="rsLoRA: scale adapters by lora_alpha/sqrt(lora_r), steadier at high ranks "
        "(lora and qlora only)",
    )
    use_dora: bool = Field(
        default=False,
        description="DoRA: also learn each weight's magnitude; closer to full fine-tuning, "
        "slower per step (lora and qlora only)",
    )
    num_virtual_tokens: int = Field(
        default=20,
        ge=1,
        le=512,
        description="Virtual tokens placed before every sample (prefix_tuning and p_tuning "
        "only); they use positions of the model's context",
    )
    seed: int = 42
    checkpoint_every: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description=(
            "Save a resumable checkpoint every this many optimiser steps (and one at the end); "
            "unset saves one every 15 minutes of training. A job handed back to the queue "
            "resumes from its newest checkpoint"
        ),
    )
    keep_checkpoints: int = Field(
        default=2, ge=1, le=100, description="How many of the newest checkpoints to keep"
    )
    eval_every: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description=(
            "Compute the validation loss every this many optimiser steps (and at the end) when "
            "the data has a validation split; unset evaluates ten times over the run"
        ),
    )
    early_stopping_patience: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description=(
            "Stop once the validation loss has not improved for this many evaluations in a "
            "row (the adapter of the last step is kept); unset never stops early"
        ),
    )
    early_stopping_min_delta: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="How much the validation loss must fall to count as an improvement",
    )
    system_prompt: str | None = Field(
        default=None, description="Prepended as a system turn to samples that have none"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    gpus: Annotated[int, Field(ge=1, le=64)] | Auto = Field(
        default="auto",
        description=(
            "GPUs the run trains on, one process each (torch.distributed): auto takes "
            "every GPU of the worker that runs it, a number asks for that many. The samples "
            "per optimiser step and the learning-rate schedule do not change with it. Adapters "
            "are replicated on each GPU (DDP), full fine-tuning sharded across them (FSDP)"
        ),
    )
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

    @field_validator("use_rslora", "use_dora")
    @classmethod
    def _lora_options_need_lora(cls, value: bool, info: ValidationInfo) -> bool:
        method = info.data.get("method")
        if value and method is not None and method not in LORA_METHODS:
            raise ValueError(
                f"{info.field_name} applies to the LoRA methods (lora, qlora) only, not to "
                f"{method}; turn it off or choose lora"
            )
        return value

    @field_validator("dtype")
    @classmethod
    def _full_fine_tuning_needs_bf16_or_fp32(cls, value: str, info: ValidationInfo) -> str:
        # Full fine-tuning keeps float32 weights and runs the forward pass under autocast:
        # float16 there would need loss scaling, which the engine does not do.
        if value == "float16" and info.data.get("method") == "full":
            raise ValueError(
                "float16 is not supported with full fine-tuning (its gradients would need loss "
                "scaling); use auto, bfloat16 or float32"
            )
        return value

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus_number_or_auto(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        return value

    @field_validator("early_stopping_min_delta")
    @classmethod
    def _min_delta_needs_patience(cls, value: float, info: ValidationInfo) -> float:
        # Absent from info.data when the patience itself was invalid: that error is enough.
        patience = info.data.get("early_stopping_patience", 0)
        if value and patience is None:
            raise ValueError(
                "early_stopping_min_delta only matters with early stopping; set "
                "early_stopping_patience too, or leave it out"
            )
        return value

    @field_validator(*AUTO_FIELDS, mode="wrap")
    @classmethod
    def _number_or_auto(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # One error at the field itself ("config.batch_size"), not one per member of the
        # number-or-"auto" union; "Auto" and " auto " from a form or YAML file mean auto.
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            return handler(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            message = str(first["msg"])
            if first["type"].endswith(("_parsing", "_type", "_from_float")):
                message += ', or "auto"'
            raise PydanticCustomError(first["type"], message.replace("{", "{{")) from None

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and isinstance(data.get("preset"), str)
            and data["preset"] in PRESETS
        ):
            data = {**preset_defaults(data["preset"], data), **data}
        return data

    @model_validator(mode="after")
    def _length_of_training(self) -> TrainConfig:
        if self.max_steps is None and self.epochs is None:
            self.epochs = "auto"
        return self

    @field_validator("lora_r", "lora_alpha", "lora_dropout")
    @classmethod
    def _lora_settings_need_lora(cls, value: Any, info: ValidationInfo) -> Any:
        method = info.data.get("method")
        ignored = value == "auto" or (info.field_name == "lora_dropout" and value == 0)
        if method is not None and method not in LORA_METHODS and not ignored:
            raise ValueError(
                f"{info.field_name} applies to the LoRA methods (lora, qlora) only, not to "
                f"{method}; leave it out or set it to auto"
            )
        return value

    @field_validator("max_seq_length")
    @classmethod
    def _within_the_models_context(cls, value: Any, info: ValidationInfo) -> Any:
        entry = catalog_entry(str(info.data.get("base_model") or ""))
        if entry is not None and isinstance(value, int) and value > entry.context_length:
            raise ValueError(
                f"{value} tokens is more than {entry.title} reads at once "
                f"({entry.context_length:,} tokens); use at most {entry.context_length} or auto"
            )
        return value

    @field_validator("warmup_steps")
    @classmethod
    def _warmup_within_the_run(cls, value: Any, info: ValidationInfo) -> Any:
        max_steps = info.data.get("max_steps")
        if isinstance(value, int) and isinstance(max_steps, int) and value >= max_steps:
            raise ValueError(
                f"{value} warm-up steps leave none of the run's {max_steps} steps at the full "
                "learning rate; use fewer, or auto"
            )
        return value
