"""Which waives apply to a test-db entry (a file, folder or class, or one test): those inside it and
the containers around it, most specific first (lists/waives.py, in this process)."""
import pytest

from trtx.cli.lists.waives import waives_for
from trtx.cli.lists.testline import names_entry, names_folder, parse_ref, waive_covers
from trtx.cli.lists.waives import parse_line


def _waives(*lines):
    return [parse_line(line, "w.txt", n) for n, line in enumerate(lines, 1)]


@pytest.mark.parametrize("entry,wanted", [
    # An entry that is one test: the waives around it, most specific first; not the folder's (d/).
    ("d/f.py::C::t[x]", ["d/f.py::C::t[x] SKIP", "d/f.py::C XFAIL", "d/f.py UNSTABLE"]),
    # A folder entry: its own waive, and every waive under it naming a test, class or file; one
    # with pytest arguments only when they are the entry's; not a folder inside it (d/sub).
    ("d/", ["d/f.py::C::t[x] SKIP", "d/f.py::C XFAIL", "d/f.py UNSTABLE", "d/ SKIP"]),
    # Its own waive (the same pytest arguments) before the others of the same id.
    ('d/f.py -k "a"', ["d/f.py::C::t[x] SKIP", "d/f.py::C XFAIL", 'd/f.py -k "a" XFAIL', "d/f.py UNSTABLE"]),
    ("d/g.py", []),                                                 # a folder waive is not a file's
    ("d/sub/h.py", []),
    ("d/sub", ["d/sub SKIP"]),                                      # ... but the entry that is the folder
    ('d -k "z"', ["d/f.py::C::t[x] SKIP", "d/f.py::C XFAIL", "d/f.py UNSTABLE"]),   # with other arguments: not d's
    ("d/f.py::Cx", ["d/f.py UNSTABLE"]),                            # C is not a prefix of Cx
])
def test_waives_for_an_entry(entry, wanted):
    waives = _waives("d/ SKIP (https://b/1)", "d/f.py UNSTABLE (https://b/2)", 'd/f.py -k "b" SKIP (https://b/3)',
                     "d/f.py::C XFAIL (https://b/4)", "d/f.py::C::t[x] SKIP (https://b/5)",
                     'd/f.py -k "a" XFAIL (https://b/6)', "e/f.py SKIP (https://b/7)", "d/sub SKIP (https://b/8)")
    assert [f"{w.ref} {w.marker}" for w in waives_for(parse_ref(entry), waives)] == wanted


@pytest.mark.parametrize("nodeid,waive,covers", [
    ("d/f.py::C::t[x]", "d/f.py::C::t[x]", True),      # the test
    ("d/f.py::C::t[x]", "d/f.py::C::t", True),         # its function
    ("d/f.py::C::t[x]", "d/f.py::C", True),            # its class
    ("d/f.py::C::t[x]", "d/f.py", True),               # its file
    ("d/f.py::C::t[x]", "d", False),                   # never its folder (TensorRT-LLM: "directory level
    ("d/f.py::C::t[x]", "d/", False),                  # match is not supported")
    ("d/f.py::Cx::t", "d/f.py::C", False),
    ("d/f.pyx::t", "d/f.py", False),
])
def test_a_waive_covers_a_test_its_function_class_or_file_not_its_folder(nodeid, waive, covers):
    assert waive_covers(nodeid, waive) is covers


def test_names_folder():
    assert names_folder("unittest/trt/functional") and names_folder("unittest/trt/") and names_folder("d")
    assert names_folder("unittest/v1.2") and names_folder("unittest/v1.2/")          # a dot in a folder's name
    assert not names_folder("unittest/a/test_x.py") and not names_folder("d/f.py::C")
    assert not names_folder("perf/test_perf.py::test_perf[llama_v3.1_70b]")


def test_a_folder_with_a_dot_inside_a_folder_entry_is_not_counted_as_inside():
    waives = _waives("unittest/v1.2 SKIP (https://b/1)", "unittest/v1.2/test_a.py SKIP (https://b/2)")
    assert [w.line for w in waives_for(parse_ref("unittest"), waives)] == [2]


@pytest.mark.parametrize("waive,entry,whole", [
    ("d", "d/", True), ("d/", "d", True),
    ("d", 'd -k "x"', False),                          # the folder entry with arguments is another entry
    ('d -k "x"', "d -k 'x'", True),                    # the same arguments, however quoted
    ("d/f.py", "d/f.py d/g.py", False),                # a multi-path entry: only f.py's tests (waive_covers)
])
def test_names_entry(waive, entry, whole):
    assert names_entry(parse_ref(waive), parse_ref(entry)) is whole
