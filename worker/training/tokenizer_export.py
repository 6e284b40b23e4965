"""Save a base model's tokenizer as a plain folder the web process can read without torch.

    python -m worker.training.tokenizer_export NAME DEST [--cache-dir DIR]

NAME is anything ``resolve_model`` accepts (a catalog name, a .gguf file, a model folder);
a GGUF file is converted once into DIR, shared with training. DEST receives tokenizer.json,
tokenizer_config.json and chat_template.jinja, with the fallback chat template installed
when the model has none, exactly as training would use it. The web process runs this in a
child process (app.datasets.tokenization) so transformers never loads there.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from worker.spec.errors import TrainingError
from worker.spec.formatting import ensure_chat_template


def export_tokenizer(name: str, dest: Path, *, cache_dir: Path) -> Path:
    """Write the tokenizer of model ``name`` to ``dest`` (all files appear at once)."""
    from worker.training.models import load_tokenizer, resolve_model

    resolved = resolve_model(name, cache_dir)
    tokenizer = load_tokenizer(resolved)
    ensure_chat_template(tokenizer)
    if not getattr(tokenizer, "is_fast", False):
        raise TrainingError(
            f"Model '{name}' has no fast (Rust) tokenizer, which tunelab needs; it cannot be "
            "used for statistics or training."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Readers look for dest/tokenizer.json: a half-written folder must never be visible, and
    # a concurrent export of the same model must not mix its files into ours.
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        tokenizer.save_pretrained(str(staging))
        if not (staging / "tokenizer.json").is_file():
            raise TrainingError(f"The tokenizer of model '{name}' did not save a tokenizer.json.")
        try:
            staging.rename(dest)
        except OSError:
            if not (dest / "tokenizer.json").is_file():
                raise
            # Another export finished first; its folder is as good as ours.
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="catalog name, .gguf file or model folder")
    parser.add_argument("dest", type=Path, help="folder to create")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where GGUF conversions are cached (default: two levels above DEST, the layout "
        "app.datasets.tokenization uses: CACHE/tokenizers/NAME)",
    )
    args = parser.parse_args(argv)
    cache_dir = args.cache_dir or args.dest.resolve().parent.parent
    try:
        export_tokenizer(args.name, args.dest, cache_dir=cache_dir)
    except TrainingError as exc:
        # The last line of stderr is what the web page shows.
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
