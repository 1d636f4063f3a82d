"""The engine never imports trtx.cli, and neither do the engine's tests: read from the source (AST) of
engine/*.py, of tests/unit/engine/*.py, of every tests.* helper those import (followed to the end),
and of the training script that tests/helpers/checkpoints.py loads by its path."""
import ast
from pathlib import Path

from tests.helpers.engine import REPO_ROOT

ENGINE_TESTS = Path(__file__).resolve().parent
LOADED_BY_PATH = [REPO_ROOT / "scripts" / "train_tiny_model.py", REPO_ROOT / "scripts" / "arith_tasks.py"]


def imported_names(source: str, package: str) -> list[tuple[int, str]]:
    """(line, module) for every import in the source, relative ones resolved against `package`;
    `from a import b` gives both a and a.b (b may be a module)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module) if p)
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def is_cli(name: str) -> bool:
    return name == "trtx.cli" or name.startswith("trtx.cli.")


def module_file(name: str) -> Path | None:
    """The file of a tests.* module in this repository, if the name is one."""
    path = REPO_ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def package_of(path: Path) -> str:
    """The dotted package a file's relative imports start from: engine/ is installed as trtx.engine."""
    parts = path.relative_to(REPO_ROOT).parent.parts
    return "trtx." + ".".join(parts) if parts[:1] == ("engine",) else ".".join(parts)


def cli_imports(files: list[Path]) -> tuple[list[str], set[Path]]:
    """'file:line: module' for each import of trtx.cli in the files and in the tests.* modules they
    import, and every file read."""
    todo, seen, bad = list(files), set(), {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for line, name in imported_names(path.read_text(), package_of(path)):
            if is_cli(name):
                bad.setdefault(f"{path.relative_to(REPO_ROOT)}:{line}", name)      # once per import statement
            elif name.split(".")[0] == "tests" and (helper := module_file(name)):
                todo.append(helper)
    return [f"{where}: {name}" for where, name in bad.items()], seen


def test_the_scan_sees_every_way_of_importing_the_cli():
    source = ("import trtx.cli\nfrom trtx.cli.eval.models import MODELS_DIR\nfrom trtx import cli\n"
              "from ..cli import main\nimport trtx.engine\nfrom trtx.engine import LLM\n")
    names = imported_names(source, "trtx.engine")
    assert sorted({line for line, name in names if is_cli(name)}) == [1, 2, 3, 4]


def test_neither_the_engine_nor_its_tests_import_the_cli():
    engine = sorted((REPO_ROOT / "engine").glob("*.py"))
    tests = sorted(ENGINE_TESTS.glob("*.py"))
    assert len(engine) > 20 and Path(__file__).resolve() in tests
    bad, seen = cli_imports(engine + tests + LOADED_BY_PATH)
    assert not bad, "imports of trtx.cli:\n" + "\n".join(bad)
    helpers = {p.name for p in seen if p.parent.name == "helpers"}
    assert {"checkpoints.py", "engine.py"} <= helpers        # the helpers they use were followed
