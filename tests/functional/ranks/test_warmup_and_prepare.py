"""Invariant 4 on real ranks (tp2 x pp2 under mpirun): warmup decisions are taken by all ranks
together, even when one rank of four cannot fit a shape: every rank skips it, or every rank stops
with one clear error. (Invariant 3, the capture path's metadata: tests/unit/engine/test_warmup_and_prepare.py.)"""
import pytest

from tests.helpers.ranks import eval_on_ranks
from trtx.cli.eval.engines import RankJobError

pytestmark = [pytest.mark.timeout(300), pytest.mark.multirank]


def run_ranks(tmp_path, **options):
    return eval_on_ranks(tmp_path, 240, 8, tensor_parallel_size=2, pipeline_parallel_size=2, warmup=True, **options)


def test_one_rank_of_four_out_of_memory_in_warmup_makes_every_rank_skip_the_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("TRTX_FAULTS", "warmup_oom@2:decode-8")
    got = run_ranks(tmp_path)
    reports = [r.warmup for r in got.ranks]
    assert all(rep == reports[0] for rep in reports)
    skipped = [name for name, what in reports[0] if what != "ran"]
    assert skipped == ["decode-8"] and "rank 2 (reports out of memory" in dict(reports[0])["decode-8"]
    for r in range(4):
        log = (tmp_path / "logs" / f"rank-{r}.log").read_text()
        assert "warmup shape decode-8 does not fit on rank 2" in log and "every rank skips it" in log


def test_or_every_rank_stops_with_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TRTX_FAULTS", "warmup_oom@2:decode-8")
    with pytest.raises(RankJobError) as err:
        run_ranks(tmp_path, on_warmup_oom="stop")
    launch = err.value.launch
    assert launch.reason == "failed"
    text = " ".join(launch.ranks[launch.first_failure].traceback().split())
    assert "WarmupError: warmup shape decode-8 does not fit on rank 2" in text and "every rank stops" in text
