"""Decode graphs under attention DP on real mpirun ranks (desync detector on): all ranks replay the
same graph at the same padded size, with a rank kept dry, and one rank choosing its graph alone is
caught. (Padding, replays and graphs against eager on one rank: tests/unit/engine/test_graphs.py.)"""
import pytest

from tests.helpers.ranks import eval_on_ranks
from trtx.cli.eval.engines import RankJobError
from trtx.cli.eval.evaluate import evaluate
from trtx.cli.eval.models import MODELS_DIR
from trtx.engine.engine_config import EngineConfig

MODEL = MODELS_DIR / "tiny-arith"
TASK = MODEL / "tasks" / "arith.yaml"
SAMPLES = 32
pytestmark = [pytest.mark.timeout(600), pytest.mark.multirank]


def run_adp(tmp_path, ranks, nextn, samples):
    return eval_on_ranks(tmp_path, 240, samples, tensor_parallel_size=ranks, attention_dp=True, decode_graphs=True,
                         mtp_nextn=nextn, max_num_seqs=2)


@pytest.mark.parametrize("ranks,nextn", [(2, 0), (4, 2)], ids=["adp2-mtp_nextn=0", "adp4-mtp_nextn=2"])
def test_attention_dp_ranks_agree_on_graph_and_padded_size(tmp_path, monkeypatch, ranks, nextn):
    """Rank 1 runs dry for 30 iterations (it replays all-padding graphs) while the others decode
    or prefill; every rank must take the same graph, or eager, every forward."""
    monkeypatch.setenv("TRTX_CHECK_COLLECTIVES", "1")
    monkeypatch.setenv("TRTX_FAULTS", "idle_rank@1:30")
    single = evaluate(EngineConfig(MODEL, mtp_nextn=nextn), TASK, SAMPLES)
    got = run_adp(tmp_path, ranks, nextn, SAMPLES)
    assert [s["token_ids"] for s in got.samples] == [s["token_ids"] for s in single.samples]
    assert got.spec == single.spec
    forwards = [r.forwards for r in got.ranks]
    assert all(f == forwards[0] for f in forwards), forwards
    assert forwards[0].get("graph-1", 0) > 0 and forwards[0].get("graph-2", 0) > 0 and forwards[0]["eager"] > 0


def test_a_rank_choosing_its_graph_alone_is_caught(tmp_path, monkeypatch):
    """The production failure the agreement prevents: one rank pads to the size its own batch
    needs. The graph's gather then differs in size between ranks, and the detector says so."""
    monkeypatch.setenv("TRTX_CHECK_COLLECTIVES", "1")
    monkeypatch.setenv("TRTX_FAULTS", "idle_rank@1:30,graph_size_alone@1")
    with pytest.raises(RankJobError) as err:
        run_adp(tmp_path, 2, 0, 8)
    launch = err.value.launch
    text = " ".join(launch.ranks[launch.first_failure].traceback().split())
    assert "CollectiveDesync" in text
    shapes = {line.split(" all_gather ")[1].split(" at ")[0] for line in text.split("rank ")[1:] if " all_gather (" in line}
    assert len(shapes) == 2, text
