"""The bundled models: models/<name>/ (a checkpoint, with its eval set eval.jsonl), addressed by
name wherever a checkpoint directory is taken."""
from __future__ import annotations

from pathlib import Path

from ..bundled import MODELS_DIR
from ..errors import UserError, closest


def bundled_models() -> list[str]:
    return sorted(p.parent.name for p in MODELS_DIR.glob("*/config.json"))


def resolve_model(name_or_dir: str) -> Path:
    """A checkpoint directory, or the directory of the bundled model of that name."""
    path = Path(name_or_dir)
    if (path / "config.json").exists():
        return path
    if name_or_dir in bundled_models():
        return MODELS_DIR / name_or_dir
    raise UserError(f"--model {name_or_dir!r} is neither a checkpoint directory (no config.json) nor a bundled "
                    f"model ({', '.join(bundled_models()) or 'none'}){closest(name_or_dir, bundled_models())}")


def default_dataset(model_dir: Path) -> Path:
    path = model_dir / "eval.jsonl"
    if not path.exists():
        raise UserError(f"{model_dir} has no eval.jsonl; pass --dataset")
    return path
