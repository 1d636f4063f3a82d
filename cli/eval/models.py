"""The bundled models: models/<name>/ (a checkpoint, with its task files in tasks/), addressed by
name wherever a checkpoint directory is taken; and task files addressed by name."""
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


def default_prompts(model_dir: Path, n: int | None = None) -> list[str]:
    """The first n prompts (all: None) of the model's default task (resolve_task(None)): what the
    benchmarks generate for."""
    from .documents import load_docs
    from .taskfile import load_task
    return [d.prompt for d in load_docs(load_task(resolve_task(None, model_dir)), n)]


def task_files(model_dir: Path) -> list[Path]:
    """The model's own task files (its tasks/ folder), then the bundled models'."""
    folders = [model_dir / "tasks"] + [MODELS_DIR / m / "tasks" for m in bundled_models()]
    seen, files = set(), []
    for folder in folders:
        for path in sorted(folder.glob("*.yaml")):
            if path.resolve() not in seen:
                seen.add(path.resolve())
                files.append(path)
    return files


def resolve_task(name_or_file: str | None, model_dir: Path) -> Path:
    """A task file: the path given, or the task file of that name (NAME.yaml) in the model's tasks/
    folder, then in the bundled models'. None: the first of the model's own task files by name
    (tiny-arith: arith)."""
    if name_or_file is None:
        own = sorted((model_dir / "tasks").glob("*.yaml"), key=lambda p: p.stem)
        if not own:
            raise UserError(f"{model_dir} has no tasks/ folder of task files: pass --task FILE (docs/tasks.md)")
        return own[0]
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"--task {name_or_file!r}: " + ("a folder, not a task file" if path.is_dir()
                                                           else "no such task file"))
        return path
    known = {p.stem: p for p in reversed(task_files(model_dir))}      # the model's own win
    if name_or_file in known:
        return known[name_or_file]
    raise UserError(f"--task {name_or_file!r} is neither a task file nor a known task's name "
                    f"({', '.join(sorted(known)) or 'none'}){closest(name_or_file, known)}")
