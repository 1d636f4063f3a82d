"""test-db YAML (TensorRT-LLM's format): contexts, each a list of blocks; a block is a condition on
the system's keys and the tests that run when it holds.

    version: 0.0.1
    l0_dgx_b200:
    - condition:
        ranges:    {system_gpu_count: {gte: 4, lte: 4}}
        wildcards: {gpu: ['*b200*'], linux_distribution_name: ubuntu*}
        terms:     {stage: pre_merge, supports_fp8: true}
      tests:
      - accuracy/test_x.py::TestY::test_z[pp4-mtp_nextn=2] TIMEOUT (60)   # a comment
      - unittest/some/file.py -k "expr" TIMEOUT(90) ISOLATION

Each entry is read with the line grammar of testline.py (comments, markers), as TensorRT-LLM
reads the lists trt-test-db renders from these files. Files are read as YAML node trees, so
every error names its file and line. The format is documented in docs/test-db-and-waives.md.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import UserError, closest
from ..fsutil import read_utf8
from .testline import MINUTES, TestRef, parse_ref, split_line

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)     # libyaml when the wheel has it: 10x faster
_CONSTRUCTOR = yaml.SafeLoader("")                          # turns scalar nodes into Python values
_RANGE_OPS = {"gte": float.__ge__, "lte": float.__le__, "gt": float.__gt__, "lt": float.__lt__}


@dataclass(frozen=True)
class TestEntry:
    __test__ = False            # a data type, not a pytest test class
    ref: TestRef
    timeout_min: float | None
    isolation: bool
    path: str
    line: int

    @property
    def markers(self) -> str:
        parts = [f"TIMEOUT ({self.timeout_min:g})"] if self.timeout_min is not None else []
        return " ".join(parts + (["ISOLATION"] if self.isolation else []))


@dataclass(frozen=True)
class Check:
    key: str
    wanted: str
    actual: str | None       # None: the system has no such key
    ok: bool


def canonical(value) -> str:
    """One string form for comparing YAML scalars with detected or --match values."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _term_matches(wanted, actual) -> bool:
    """Equal string forms; a YAML boolean (true/false) also matches True/TRUE (--match
    supports_fp8=True), never 1 or yes: the value is a boolean's name, whatever its case."""
    if isinstance(wanted, bool):
        return canonical(actual).lower() == canonical(wanted)
    return canonical(actual) == canonical(wanted)


@dataclass
class Condition:
    ranges: dict[str, dict[str, float]] = field(default_factory=dict)
    wildcards: dict[str, list[str]] = field(default_factory=dict)
    terms: dict[str, object] = field(default_factory=dict)

    def checks(self, info: dict) -> list[Check]:
        out = []
        for key, bounds in self.ranges.items():
            wanted = ", ".join(f"{op} {canonical(v)}" for op, v in bounds.items())
            actual = info.get(key)
            try:
                ok = actual is not None and all(_RANGE_OPS[op](float(actual), v) for op, v in bounds.items())
            except (TypeError, ValueError):
                ok = False
            out.append(Check(key, wanted, None if actual is None else canonical(actual), ok))
        for key, patterns in self.wildcards.items():
            actual = info.get(key)
            ok = actual is not None and any(fnmatch.fnmatch(canonical(actual).lower(), p.lower()) for p in patterns)
            out.append(Check(key, " | ".join(patterns), None if actual is None else canonical(actual), ok))
        for key, value in self.terms.items():
            actual = info.get(key)
            ok = actual is not None and _term_matches(value, actual)
            out.append(Check(key, canonical(value), None if actual is None else canonical(actual), ok))
        return out

    def matches(self, info: dict) -> bool:
        return all(c.ok for c in self.checks(info))


@dataclass
class Block:
    context: str
    condition: Condition
    tests: list[TestEntry]
    path: str
    line: int


@dataclass
class TestDb:
    __test__ = False            # a data type, not a pytest test class
    contexts: dict[str, list[Block]]

    def blocks(self, context: str) -> list[Block]:
        if context not in self.contexts:
            known = sorted(self.contexts)
            raise UserError(f"unknown context {context!r}{closest(context, known)}; "
                            f"known: {', '.join(known) or 'none'}")
        return self.contexts[context]

    def select(self, context: str, info: dict) -> list[TestEntry]:
        """The tests of every block that applies, in block order, each test once: at its first
        place, with the markers of its last line (TensorRT-LLM keeps the last line's TIMEOUT)."""
        at: dict = {}
        out: list[TestEntry] = []
        for block in self.blocks(context):
            if block.condition.matches(info):
                for t in block.tests:
                    if t.ref in at:
                        out[at[t.ref]] = t
                    else:
                        at[t.ref] = len(out)
                        out.append(t)
        return out


def load_testdb(directory: str | Path) -> TestDb:
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError("is a file, not a test-db folder" if directory.exists() else "test-db directory does not exist",
                        str(directory))
    contexts: dict[str, list[Block]] = {}
    for path in sorted([*directory.glob("*.yml"), *directory.glob("*.yaml")]):
        for name, blocks in _load_file(path).items():
            contexts.setdefault(name, []).extend(blocks)
    return TestDb(contexts)


def _load_file(path: Path) -> dict[str, list[Block]]:
    src = str(path)
    text = read_utf8(path)
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise UserError(f"malformed YAML: {e.problem or e.context}", src, mark.line + 1 if mark else None) from None
    except yaml.reader.ReaderError as e:                   # a control character: a binary file
        raise UserError(f"not a YAML text file: {str(e).splitlines()[0]}", src,
                        text.count("\n", 0, e.position) + 1) from None
    except yaml.YAMLError as e:
        raise UserError(f"malformed YAML: {str(e).splitlines()[0]}", src) from None
    if root is None:
        return {}
    _expect(root, yaml.MappingNode, "a mapping of context names to lists of blocks", src)
    out = {}
    for key_node, value in _pairs(root, "context", src):
        name = key_node.value
        if name == "version":
            continue
        _expect(value, yaml.SequenceNode, f"context {name!r}: a list of blocks", src)
        out[name] = [_block(name, node, src) for node in value.value]
    return out


def _block(context: str, node, src: str) -> Block:
    _expect(node, yaml.MappingNode, "a block: a mapping with 'condition' and 'tests'", src)
    fields = {k.value: v for k, v in _pairs(node, "block key", src)}
    for k, v in node.value:
        if k.value not in ("condition", "tests"):
            raise UserError(f"unknown block key {k.value!r}; expected 'condition' and 'tests'", src, _line(k))
    if "tests" not in fields:
        raise UserError("block has no 'tests' list", src, _line(node))
    condition = _condition(fields["condition"], src) if "condition" in fields else Condition()
    tests_node = fields["tests"]
    if isinstance(tests_node, yaml.ScalarNode) and tests_node.tag.endswith(":null"):
        tests = []
    else:
        _expect(tests_node, yaml.SequenceNode, "'tests': a list of test lines", src)
        tests = [e for t in tests_node.value if (e := _test_entry(t, src))]
    return Block(context, condition, tests, src, _line(node))


def _condition(node, src: str) -> Condition:
    _expect(node, yaml.MappingNode, "'condition': a mapping with ranges, wildcards and/or terms", src)
    cond = Condition()
    for k, v in _pairs(node, "condition kind", src):
        kind = k.value
        if kind not in ("ranges", "wildcards", "terms"):
            raise UserError(f"unknown condition kind {kind!r}; expected ranges, wildcards or terms", src, _line(k))
        _expect(v, yaml.MappingNode, f"'{kind}': a mapping of system keys", src)
        for key_node, val in _pairs(v, f"{kind} key", src):
            key = key_node.value
            if kind == "ranges":
                _expect(val, yaml.MappingNode, f"range of {key!r}: a mapping like {{gte: 4, lte: 8}}", src)
                bounds = {}
                for op_node, num in _pairs(val, f"bound of {key!r}", src):
                    if op_node.value not in _RANGE_OPS:
                        raise UserError(f"range of {key!r}: unknown bound {op_node.value!r}; "
                                        "expected gte, lte, gt or lt", src, _line(op_node))
                    value = _scalar(num, src)
                    if isinstance(value, bool) or not isinstance(value, (int, float)):
                        raise UserError(f"range of {key!r}: {op_node.value} needs a number, got {num.value!r}",
                                        src, _line(num))
                    bounds[op_node.value] = float(value)
                cond.ranges[key] = bounds
            elif kind == "wildcards":
                if isinstance(val, yaml.SequenceNode):
                    patterns = [_scalar(p, src) for p in val.value]
                else:
                    patterns = [_scalar(val, src)]
                if not all(isinstance(p, str) for p in patterns) or not patterns:
                    raise UserError(f"wildcard of {key!r}: expected a pattern or a list of patterns", src, _line(val))
                cond.wildcards[key] = patterns
            else:
                cond.terms[key] = _scalar(val, src)
    return cond


def _test_entry(node, src: str) -> TestEntry | None:
    """One entry of a block's tests; None when a comment is all it holds."""
    if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:str":
        raise UserError("a test line must be a string like 'dir/test_x.py::test_y[param] TIMEOUT (60)'",
                        src, _line(node))
    line = _line(node)
    parts = split_line(node.value)
    if parts is None:
        return None
    timeout, isolation = None, False
    if parts.marker == "TIMEOUT":
        m = MINUTES.match(parts.rest)
        if not m or float(m.group(1)) <= 0:
            raise UserError(f"{parts.text}: TIMEOUT needs minutes in parentheses (more than 0), like TIMEOUT (60)",
                            src, line)
        timeout, after = float(m.group(1)), parts.rest[m.end():].strip()
        isolation = after == "ISOLATION"
        if after and not isolation:
            raise UserError(f"{parts.text}: unexpected {after!r} after TIMEOUT ({m.group(1)})", src, line)
        if parts.text.endswith(" ISOLATION"):
            # TensorRT-LLM finds TIMEOUT first and would read "... ISOLATION" as the test name.
            raise UserError(f"{parts.text}: write ISOLATION after TIMEOUT (N), not before it", src, line)
    elif parts.marker == "ISOLATION":
        isolation = True
        if parts.rest:
            raise UserError(f"{parts.text}: unexpected {parts.rest!r} after ISOLATION", src, line)
    elif parts.marker is not None:
        raise UserError(f"{parts.text}: {parts.marker} belongs in the waive file, not in a test-db entry", src, line)
    try:
        ref = parse_ref(parts.text)
    except ValueError as e:
        raise UserError(str(e), src, line) from None
    return TestEntry(ref, timeout, isolation, src, line)


def _pairs(node, what: str, src: str) -> list:
    """The (key, value) node pairs of a mapping, refusing a key given twice (YAML would keep the
    last and silently drop the first)."""
    first: dict = {}
    for k, _ in node.value:
        key = k.value if isinstance(k, yaml.ScalarNode) else None
        if key in first:
            raise UserError(f"duplicate {what} {key!r} (first at line {first[key]})", src, _line(k))
        if key is not None:
            first[key] = _line(k)
    return node.value


def _scalar(node, src: str):
    if not isinstance(node, yaml.ScalarNode):
        raise UserError("expected a single value here, not a list or mapping", src, _line(node))
    return _CONSTRUCTOR.construct_object(node)


def _expect(node, kind, what: str, src: str) -> None:
    if not isinstance(node, kind):
        raise UserError(f"expected {what}", src, _line(node))


def _line(node) -> int:
    return node.start_mark.line + 1
