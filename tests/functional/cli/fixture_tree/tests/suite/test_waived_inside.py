"""A file that a test-db entry names whole, while its waives name tests inside it (waives-inside.txt)."""
import pytest


@pytest.mark.parametrize("size", ["small", "large"])
def test_size(size):                  # the function waived UNSTABLE, its [large] SKIP
    assert size == "small", "large is broken"


class TestKnownBug:                   # the class waived XFAIL
    def test_still_broken(self):
        assert False, "known bug"

    def test_fixed_meanwhile(self):
        pass


def test_plain():
    pass


def test_timeout_from_waive(request, record_property):
    record_property("timeout", request.node.get_closest_marker("timeout").args[0])
