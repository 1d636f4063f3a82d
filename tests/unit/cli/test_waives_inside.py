"""Which waives apply to a test-db entry (a file, folder or class, or one test): those inside it and
the containers around it, most specific first (lists/waives.py, in this process)."""
import pytest

from trtx.cli.lists.waives import waives_for
from trtx.cli.lists.testline import parse_ref
from trtx.cli.lists.waives import parse_line


def _waives(*lines):
    return [parse_line(line, "w.txt", n) for n, line in enumerate(lines, 1)]


@pytest.mark.parametrize("entry,wanted", [
    # An entry that is one test: the waives around it, most specific first.
    ("d/f.py::C::t[x]", ["d/f.py::C::t[x] SKIP", "d/f.py::C XFAIL", "d/f.py UNSTABLE", "d/ SKIP"]),
    # A folder entry: every waive under it; one with pytest arguments only when they are the entry's.
    ("d/", ["d/f.py::C::t[x] SKIP", "d/f.py::C XFAIL", "d/f.py UNSTABLE", "d/ SKIP"]),
    # Its own waive (the same pytest arguments) before the others of the same id.
    ('d/f.py -k "a"', ["d/f.py::C::t[x] SKIP", "d/f.py::C XFAIL", 'd/f.py -k "a" XFAIL', "d/f.py UNSTABLE",
                       "d/ SKIP"]),
    ("d/g.py", ["d/ SKIP"]),
    ("d/f.py::Cx", ["d/f.py UNSTABLE", "d/ SKIP"]),                 # C is not a prefix of Cx
])
def test_waives_for_an_entry(entry, wanted):
    waives = _waives("d/ SKIP (https://b/1)", "d/f.py UNSTABLE (https://b/2)", 'd/f.py -k "b" SKIP (https://b/3)',
                     "d/f.py::C XFAIL (https://b/4)", "d/f.py::C::t[x] SKIP (https://b/5)",
                     'd/f.py -k "a" XFAIL (https://b/6)', "e/f.py SKIP (https://b/7)")
    assert [f"{w.ref} {w.marker}" for w in waives_for(parse_ref(entry), waives)] == wanted
