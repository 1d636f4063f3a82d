"""Task files: YAML that describes an evaluation task (its dataset, prompt template, few-shot
examples, and either generation with answer filters or multiple-choice scoring). load_task reads
one into a Task and checks every key, type and template before any data is read; every error is one
UserError naming the file and the line. The format is documented in docs/tasks.md; reading the
rows is documents.py, scoring is metrics.py.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

from ..errors import UserError, closest
from ..fsutil import read_utf8

FIELD_TYPES = ("string", "integer", "number", "boolean", "list")
FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}     # file suffix -> datasets builder
NORMALIZE = ("none", "text", "numeric")
# A number anywhere in the output ("-1,234.5", "$7"): the default filter takes the last one.
LAST_NUMBER = r"-?\$?\d(?:[\d,]*\d)?(?:\.\d+)?"

_ENV = SandboxedEnvironment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)


@functools.lru_cache(maxsize=None)
def template(source: str) -> jinja2.Template:
    """The compiled template (load_task has checked its syntax)."""
    return _ENV.from_string(source)


@dataclass(frozen=True)
class Dataset:
    files: dict[str, Path]          # split -> file (resolved against the task file's folder)
    split: str                      # the split evaluated
    fields: dict[str, str]          # field -> one of FIELD_TYPES, checked on every row
    file_lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)   # split -> line of its file


@dataclass(frozen=True)
class Fewshot:
    k: int = 0
    split: str = "train"
    seed: int = 1234
    separator: str = "\n\n"
    line: int | None = field(default=None, compare=False, repr=False)     # of `k`, for errors about it


@dataclass(frozen=True)
class Filter:
    name: str
    regex: str | None = None        # None: the whole output
    group: int = 0
    take: str = "first"             # first | last
    fallback: str = "[invalid]"


DEFAULT_FILTERS = (Filter("flexible-extract", LAST_NUMBER, 0, "last"),)


@dataclass(frozen=True)
class Generate:
    target: str                     # template
    fewshot_target: str             # template
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    filters: tuple[Filter, ...] = DEFAULT_FILTERS
    normalize: str = "none"


@dataclass(frozen=True)
class MultipleChoice:
    choices: str | tuple[str, ...]  # a field name (a list of strings per row), or one template per choice
    target: str                     # a field name (an integer per row), or a template rendering the index
    continuation: str = " {{ choice }}"


@dataclass(frozen=True)
class Task:
    name: str
    path: Path
    description: str
    dataset: Dataset
    prompt: str                     # template
    fewshot: Fewshot
    generate: Generate | None = None
    multiple_choice: MultipleChoice | None = None

    @property
    def kind(self) -> str:
        return "generate" if self.generate else "multiple_choice"

    @property
    def metric_names(self) -> list[str]:
        """Every metric a doc is scored on; the first is the primary one."""
        if self.generate:
            return [f"exact_match,{f.name}" for f in self.generate.filters]
        return ["acc", "acc_norm", "exact_match"]


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _Reader:
    """Walks the composed YAML (nodes keep their line), turning each value into Python."""

    def __init__(self, path: Path):
        self.path, self.constructor = path, yaml.constructor.SafeConstructor()

    def error(self, message: str, where: yaml.Node | int) -> UserError:
        return UserError(message, str(self.path), where if isinstance(where, int) else _line(where))

    def construct(self, node: yaml.Node):
        """A scalar's Python value (None for a list or mapping)."""
        if not isinstance(node, yaml.ScalarNode):
            return None
        try:
            return self.constructor.construct_object(node)
        except yaml.YAMLError as e:         # an unknown tag (!!python/...), a malformed !!timestamp
            raise self.error(f"invalid YAML: {getattr(e, 'problem', None) or e}", node) from None

    def describe(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            hint = " (a template starting with '{{' must be quoted in YAML)" if node.flow_style else ""
            return "a mapping" + hint
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        value = self.construct(node)
        return "nothing" if value is None else repr(value)

    def mapping(self, node: yaml.Node, where: str, required: tuple, optional: tuple = (),
                any_key: bool = False) -> dict[str, tuple[int, yaml.Node]]:
        """key -> (line of the key, value node). Unknown (unless any_key), duplicate or missing
        keys are errors."""
        label = where or "the task file"
        if not isinstance(node, yaml.MappingNode):
            raise self.error(f"{label} must be a mapping, got {self.describe(node)}", node)
        allowed, out = (*required, *optional), {}
        for key_node, value in node.value:
            key = self.construct(key_node)
            if any_key and not isinstance(key, str):
                raise self.error(f"the keys of {label} must be strings, got {self.describe(key_node)}", key_node)
            if not isinstance(key, str) or not (any_key or key in allowed):
                raise self.error(f"unknown key {key!r} in {label}{closest(str(key), allowed, 1)}; "
                                 f"allowed: {', '.join(allowed)}", key_node)
            if key in out:
                raise self.error(f"duplicate key {key!r} in {label}", key_node)
            out[key] = (_line(key_node), value)
        for key in required:
            if key not in out:
                raise self.error(f"{label} has no {key!r} (required)", node)
        return out

    def value(self, node: yaml.Node, where: str, kind: type, what: str):
        value = self.construct(node)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(f"{where} must be {what}, got {self.describe(node)}", node)
        return value

    def string(self, node, where, choices: tuple = ()) -> str:
        value = self.value(node, where, str, "one of " + ", ".join(choices) if choices else "a string")
        if choices and value not in choices:
            raise self.error(f"{where} must be one of {', '.join(choices)}, got {value!r}"
                             f"{closest(value, choices, 1)}", node)
        return value

    def integer(self, node, where, minimum: int) -> int:
        value = self.value(node, where, int, "an integer")
        if value < minimum:
            raise self.error(f"{where} must be at least {minimum}, got {value}", node)
        return value

    def strings(self, node, where) -> list[str]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(f"{where} must be a list of strings, got {self.describe(node)}", node)
        return [self.string(item, f"{where}[{i}]") for i, item in enumerate(node.value)]

    def template(self, node, where) -> str:
        source = self.string(node, where)
        try:
            template(source)
        except jinja2.TemplateSyntaxError as e:
            # In a block scalar (`|`, `>`) the template's lines start on the line after the key.
            line = _line(node) + (e.lineno if node.style in ("|", ">") else 0)
            raise self.error(f"{where}: template syntax error: {e.message}", line) from None
        return source


def _compose(path: Path) -> yaml.Node:
    try:
        text = read_utf8(path)
    except OSError as e:
        raise UserError(f"cannot read the task file: {e.strerror}", str(path)) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise UserError(f"invalid YAML: {e.problem or e.context}", str(path), mark.line + 1 if mark else None) from None
    except yaml.YAMLError as e:
        raise UserError(f"invalid YAML: {e}", str(path)) from None
    if root is None:
        raise UserError("the task file is empty", str(path))
    return root


def load_task(path: Path) -> Task:
    """The task file at `path`, checked; any bad input is a UserError naming its line."""
    path = Path(path)
    r = _Reader(path)
    root = _compose(path)
    top = r.mapping(root, "", ("task", "dataset", "prompt"),
                    ("description", "fewshot", "generate", "multiple_choice"))
    kinds = [k for k in ("generate", "multiple_choice") if k in top]
    if len(kinds) != 1:
        line = top[kinds[1]][0] if kinds else _line(root)
        raise r.error("a task has exactly one of 'generate' and 'multiple_choice', "
                      f"this one has {'both' if kinds else 'neither'}", line)
    name = r.string(top["task"][1], "task")
    if not re.fullmatch(r"[\w.-]+", name):
        raise r.error(f"task must be a name of letters, digits, '_', '.' and '-', got {name!r}", top["task"][1])
    description = r.string(top["description"][1], "description") if "description" in top else ""
    dataset = _dataset(r, top["dataset"][1])
    fewshot = _fewshot(r, top["fewshot"][1], dataset) if "fewshot" in top else Fewshot(split=dataset.split)
    return Task(name=name, path=path, description=description, dataset=dataset,
                prompt=r.template(top["prompt"][1], "prompt"), fewshot=fewshot,
                generate=_generate(r, top["generate"][1]) if "generate" in top else None,
                multiple_choice=_multiple_choice(r, top["multiple_choice"][1]) if "multiple_choice" in top else None)


def _data_file(r: _Reader, node: yaml.Node, where: str) -> Path:
    value = Path(r.string(node, where))
    if value.suffix not in FORMATS:
        raise r.error(f"{where} must be a {', '.join(FORMATS)} file, got {str(value)!r}", node)
    return value if value.is_absolute() else r.path.parent / value


def _dataset(r: _Reader, node: yaml.Node) -> Dataset:
    d = r.mapping(node, "dataset", (), ("path", "files", "split", "fields"))
    if ("path" in d) == ("files" in d):
        raise r.error("dataset needs exactly one of 'path' (one file, the split 'train') and 'files' "
                      "(a file per split)", node)
    if "path" in d:     # one file is the split "train", as in datasets' data_files
        files, lines = {"train": _data_file(r, d["path"][1], "dataset.path")}, {"train": d["path"][0]}
    else:
        entries = r.mapping(d["files"][1], "dataset.files", (), any_key=True)
        if not entries:
            raise r.error("dataset.files names no file", d["files"][1])
        files = {s: _data_file(r, v, f"dataset.files.{s}") for s, (_, v) in entries.items()}
        lines = {s: line for s, (line, _) in entries.items()}
    split = _split(r, d.get("split"), "dataset.split", files, "train", node)
    fields = {}
    if "fields" in d:
        for key, (_, value) in r.mapping(d["fields"][1], "dataset.fields", (), any_key=True).items():
            fields[key] = r.string(value, f"dataset.fields.{key}", FIELD_TYPES)
    return Dataset(files, split, fields, lines)


def _split(r: _Reader, entry, where: str, files: dict, default: str, parent: yaml.Node) -> str:
    split = r.string(entry[1], where) if entry else default
    if split not in files:
        raise r.error(f"no split {split!r} in the dataset (splits: {', '.join(files)}); a single "
                      "dataset.path is the split 'train', dataset.files names each split's file",
                      entry[1] if entry else parent)
    return split


def _fewshot(r: _Reader, node: yaml.Node, dataset: Dataset) -> Fewshot:
    f = r.mapping(node, "fewshot", (), ("k", "split", "seed", "separator"))
    return Fewshot(k=r.integer(f["k"][1], "fewshot.k", 0) if "k" in f else 0,
                   split=_split(r, f.get("split"), "fewshot.split", dataset.files, dataset.split, node),
                   seed=r.value(f["seed"][1], "fewshot.seed", int, "an integer") if "seed" in f else 1234,
                   separator=r.string(f["separator"][1], "fewshot.separator") if "separator" in f else "\n\n",
                   line=f["k"][0] if "k" in f else _line(node))


def _generate(r: _Reader, node: yaml.Node) -> Generate:
    g = r.mapping(node, "generate", ("target",), ("fewshot_target", "max_tokens", "stop", "filters", "normalize"))
    target = r.template(g["target"][1], "generate.target")
    filters = DEFAULT_FILTERS
    if "filters" in g:
        items = g["filters"][1]
        if not isinstance(items, yaml.SequenceNode) or not items.value:
            raise r.error(f"generate.filters must be a non-empty list of filters, got {r.describe(items)}", items)
        filters = tuple(_filter(r, item, f"generate.filters[{i}]") for i, item in enumerate(items.value))
        names = [f.name for f in filters]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise r.error(f"two filters are named {name!r}; each names its metric", items.value[i])
    stop = ()
    if "stop" in g:
        stop = tuple(r.strings(g["stop"][1], "generate.stop"))
        if "" in stop:
            raise r.error("generate.stop: a stop string cannot be empty", g["stop"][1])
    return Generate(target=target,
                    fewshot_target=r.template(g["fewshot_target"][1], "generate.fewshot_target")
                    if "fewshot_target" in g else target,
                    max_tokens=r.integer(g["max_tokens"][1], "generate.max_tokens", 1) if "max_tokens" in g else 256,
                    stop=stop, filters=filters,
                    normalize=r.string(g["normalize"][1], "generate.normalize", NORMALIZE)
                    if "normalize" in g else "none")


def _filter(r: _Reader, node: yaml.Node, where: str) -> Filter:
    f = r.mapping(node, where, ("name",), ("regex", "group", "take", "fallback"))
    name = r.string(f["name"][1], f"{where}.name")
    if not re.fullmatch(r"[\w.-]+", name):
        raise r.error(f"{where}.name must be letters, digits, '_', '.' and '-', got {name!r}", f["name"][1])
    if "regex" not in f:
        extra = [k for k in ("group", "take", "fallback") if k in f]
        if extra:
            raise r.error(f"{where}.{extra[0]} needs a regex (without one the filter takes the whole output)",
                          f[extra[0]][0])
        return Filter(name)
    source = r.string(f["regex"][1], f"{where}.regex")
    try:
        groups = re.compile(source).groups
    except re.error as e:
        raise r.error(f"{where}.regex is not a valid regular expression: {e}", f["regex"][1]) from None
    group = r.integer(f["group"][1], f"{where}.group", 0) if "group" in f else min(groups, 1)
    if group > groups:
        raise r.error(f"{where}.group is {group}, but the regex has {groups} group(s)", f["group"][1])
    return Filter(name, source, group,
                  r.string(f["take"][1], f"{where}.take", ("first", "last")) if "take" in f else "first",
                  r.string(f["fallback"][1], f"{where}.fallback") if "fallback" in f else "[invalid]")


def _multiple_choice(r: _Reader, node: yaml.Node) -> MultipleChoice:
    m = r.mapping(node, "multiple_choice", ("choices", "target"), ("continuation",))
    choices_node = m["choices"][1]
    if isinstance(choices_node, yaml.SequenceNode):
        if not choices_node.value:
            raise r.error("multiple_choice.choices is an empty list", choices_node)
        choices = tuple(r.template(item, f"multiple_choice.choices[{i}]")
                        for i, item in enumerate(choices_node.value))
    else:
        choices = r.value(choices_node, "multiple_choice.choices", str,
                          "a field name or a list of templates (one per choice)")
        if not choices.isidentifier():
            raise r.error("multiple_choice.choices must be the name of a field holding each row's list "
                          f"of choices, or a list of templates, one per choice; got {choices!r}", choices_node)
    target = r.string(m["target"][1], "multiple_choice.target")
    if not target.isidentifier():        # not a field name: a template rendering the index
        target = r.template(m["target"][1], "multiple_choice.target")
    return MultipleChoice(choices, target,
                          r.template(m["continuation"][1], "multiple_choice.continuation")
                          if "continuation" in m else " {{ choice }}")
