import pytest


def test_pass():
    assert 1 + 1 == 2


def test_fail():
    assert 1 + 1 == 3, "arithmetic is broken"


@pytest.mark.parametrize("v", ["a b", "c"])
def test_param(v):
    assert v
