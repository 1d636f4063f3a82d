"""Attention data parallelism on real CPU ranks (mpirun, gloo, desync detector on) with the bundled
model, under the uneven loads that broke production engines: one request on four ranks, a rank
kept dry for many iterations while the others are busy, and every rank's statistics gathered every
iteration. Outputs must equal a single rank's, and every job must end within its timeout."""
import pytest

from tests.helpers.ranks import eval_on_ranks
from trtx.cli.eval.engines import RankJobError
from trtx.cli.eval.evaluate import evaluate
from trtx.cli.eval.models import MODELS_DIR
from trtx.engine.engine_config import EngineConfig

MODEL = MODELS_DIR / "tiny-arith"
TASK = MODEL / "tasks" / "arith.yaml"
SAMPLES = 32
DRY_ITERATIONS = 30
JOB_TIMEOUT_S = 240
pytestmark = [pytest.mark.timeout(600), pytest.mark.multirank]


@pytest.fixture(scope="module")
def single_rank():
    return {(k, n): evaluate(EngineConfig(MODEL, mtp_nextn=k), TASK, n) for k in (0, 2) for n in (1, SAMPLES)}


@pytest.fixture(autouse=True)
def detector_on(monkeypatch):
    monkeypatch.setenv("TRTX_CHECK_COLLECTIVES", "1")


def run_ranks(tmp_path, ranks, nextn, samples, max_num_seqs=64):
    return eval_on_ranks(tmp_path, JOB_TIMEOUT_S, samples, tensor_parallel_size=ranks, attention_dp=True,
                         mtp_nextn=nextn, max_num_seqs=max_num_seqs)


def same_tokens(a, b):
    return [s["token_ids"] for s in a.samples] == [s["token_ids"] for s in b.samples]


CASES = [(r, k) for r in (2, 4) for k in (0, 2)]
IDS = [f"adp{r}-mtp_nextn={k}" for r, k in CASES]


@pytest.mark.parametrize("ranks,nextn", CASES, ids=IDS)
def test_one_request_on_many_ranks(tmp_path, single_rank, ranks, nextn):
    """Every rank but one has nothing to do for the whole run: they must keep joining the
    forward's collectives with dummy forwards, and all return the one output."""
    got = run_ranks(tmp_path, ranks, nextn, 1)
    assert same_tokens(got, single_rank[nextn, 1])
    served = [r.requests_served for r in got.ranks]
    assert sorted(served) == [0] * (ranks - 1) + [1]
    for r in got.ranks:
        if r.requests_served == 0:
            assert len(r.idle_iterations) == r.iterations > 0


@pytest.mark.parametrize("ranks,nextn", CASES, ids=IDS)
def test_a_dry_rank_with_all_rank_statistics(tmp_path, single_rank, monkeypatch, ranks, nextn):
    """Rank 1 schedules nothing for its first iterations while the others decode, and every rank
    gathers every rank's iteration statistics every iteration."""
    monkeypatch.setenv("TRTX_FAULTS", f"idle_rank@1:{DRY_ITERATIONS},all_rank_stats")
    got = run_ranks(tmp_path, ranks, nextn, SAMPLES, max_num_seqs=2)     # small batches: the others stay busy
    assert same_tokens(got, single_rank[nextn, SAMPLES])
    if nextn:
        assert got.spec == single_rank[nextn, SAMPLES].spec
    for r in got.ranks:
        assert r.stats_from_ranks == list(range(ranks))
        assert r.requests_served > 0
    spell = set(range(1, DRY_ITERATIONS + 1))
    for r in got.ranks:
        idle_in_spell = spell & set(r.idle_iterations)
        assert idle_in_spell == (spell if r.rank == 1 else set()), f"rank {r.rank}"


def test_a_gather_reached_by_some_ranks_only_is_caught_by_the_detector(tmp_path, monkeypatch):
    """The production bug behind invariant 2: a rank that finished requests gathers them where
    the others do not. The detector must stop every rank with both call sites named."""
    monkeypatch.setenv("TRTX_FAULTS", "gather_when_finished")
    with pytest.raises(RankJobError) as err:
        run_ranks(tmp_path, 2, 0, 8)
    launch = err.value.launch
    text = " ".join(launch.ranks[launch.first_failure].traceback().split())
    assert "CollectiveDesync" in text and "a collective behind a per-rank condition" in text
    sites = {line.split(" at ")[1] for line in text.split("rank ")[1:] if " at attention_dp.py:" in line}
    assert len(sites) >= 2, text
