"""The model card (README.md) shipped in every export: what the model is, what it was trained
on, how it measured, its licence, and the exact commands to serve and load it."""

from __future__ import annotations

from typing import Any

from worker.spec.metrics import METRIC_TITLES


def _fmt(metric: str, value: float) -> str:
    return f"{value:.2f}" if metric in ("bleu", "perplexity") else f"{value:.3f}"


def _metrics(evaluation: dict[str, Any]) -> list[str]:
    results = evaluation.get("results") or {}
    models = results.get("models") or {}
    labels = results.get("labels") or {}
    if not models:
        return ["Not evaluated yet."]
    metrics = [m for m in METRIC_TITLES if any(m in v for v in models.values())]
    lines = [
        f"On {results.get('n')} held-out examples (evaluation `{evaluation.get('id')}`), "
        "95% bootstrap intervals in brackets:",
        "",
        "| model | " + " | ".join(METRIC_TITLES[m] for m in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for key, values in models.items():
        cells = [
            f"{_fmt(m, values[m]['value'])} [{_fmt(m, values[m]['low'])}, {_fmt(m, values[m]['high'])}]"
            if m in values
            else "—"
            for m in metrics
        ]
        lines.append(f"| {labels.get(key, key)} | " + " | ".join(cells) + " |")
    verdict = evaluation.get("verdict") or []
    if verdict:
        lines += ["", "Success criteria:", ""]
        lines += [
            f"- `{v['criterion']}`: **{v['status'].replace('_', ' ')}** — {v['explanation']}"
            for v in verdict
        ]
    return lines


def model_card(data: dict[str, Any]) -> str:
    """Markdown with a YAML header, from what the export task knows of the job."""
    base = data.get("base_model", "")
    base_ref = data.get("base_hub_id") or base
    name = data.get("name", "tunelab-model")
    export = data.get("export", "adapter")
    licence = data.get("license") or "see the base model's licence"
    header = [
        "---",
        f"base_model: {base_ref}",
        f"library_name: {'peft' if export == 'adapter' else 'transformers'}",
        f"license: {data.get('license_id') or 'other'}",
        "tags: [tunelab, " + str(data.get("method", "")) + "]",
        "---",
        "",
        f"# {name}",
        "",
        f"{data.get('task') or 'A specialist model'} — fine-tuned with tunelab.",
        "",
        "## Model",
        "",
        f"- Base model: `{base}`" + (f" ({data['base_title']})" if data.get("base_title") else ""),
        f"- Method: {data.get('method_title') or data.get('method')}",
        f"- Export: {'the adapter alone (PEFT format)' if export == 'adapter' else 'merged into the base model'}"
        + (f", {data['dtype']} weights" if data.get("dtype") else ""),
        f"- Training job: `{data.get('job_id')}`, {data.get('steps', '?')} steps, final loss {data.get('final_loss', '?')}",
        f"- Licence of the base model: {licence}",
    ]
    if data.get("note"):
        header += ["", f"> {data['note']}"]
    dataset = data.get("dataset") or {}
    lines = [
        *header,
        "",
        "## Data",
        "",
        f"Dataset `{dataset.get('name', '?')}` version {dataset.get('version', '?')}: "
        f"{dataset.get('records', '?')} records ({dataset.get('format', '?')}), split "
        f"{dataset.get('split', {})}.",
        "",
        "## Evaluation",
        "",
        *_metrics(data.get("evaluation") or {}),
    ]
    verification = data.get("verification")
    if verification:
        lines += [
            "",
            "## Check",
            "",
            f"Before this export was kept, its weights were read back with transformers and "
            f"compared with base + adapter on {verification['prompts']} prompts: largest relative "
            f"logit difference {verification['max_relative_difference']:.2e} (allowed "
            f"{verification['tolerance']:.0e}), same next token at "
            f"{verification['same_next_token']:.1%} of {verification['positions']} positions.",
        ]
    lines += ["", "## Use it", "", *_usage(data, export)]
    return "\n".join(lines) + "\n"


def _usage(data: dict[str, Any], export: str) -> list[str]:
    folder = data.get("folder_name", "model")
    base = data.get("base_hub_id") or data.get("base_model", "BASE")
    served = data.get("served_name", "specialist")
    if export == "merged":
        return [
            "Serve it with vLLM (an OpenAI-compatible server):",
            "",
            "```sh",
            f"vllm serve ./{folder} --served-model-name {served}",
            "```",
            "",
            "Load it with transformers:",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'tokenizer = AutoTokenizer.from_pretrained("./{folder}")',
            f'model = AutoModelForCausalLM.from_pretrained("./{folder}", dtype="auto")',
            'messages = [{"role": "user", "content": "Hello"}]',
            'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)',
            "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=128)[0]))",
            "```",
        ]
    lines = []
    if data.get("note") is None:
        lines += [
            "Serve it with vLLM's LoRA support, on top of the base model:",
            "",
            "```sh",
            f"vllm serve {base} --enable-lora --lora-modules {served}=./{folder}"
            + (f" --max-lora-rank {data['lora_rank']}" if data.get("lora_rank") else ""),
            "```",
            "",
        ]
    lines += [
        "Load it with transformers and PEFT:",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'tokenizer = AutoTokenizer.from_pretrained("./{folder}")',
        f'base = AutoModelForCausalLM.from_pretrained("{base}", dtype="auto")',
        f'model = PeftModel.from_pretrained(base, "./{folder}")',
        "```",
    ]
    return lines
