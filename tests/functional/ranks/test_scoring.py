"""Log-likelihood scoring (LLM.score) on real CPU ranks under tensor, pipeline and attention-data
parallelism: every rank returns every pair's scores, equal to transformers' within 1e-4 (fp32),
greedy flags included; shared contexts fork cache blocks on the rank that holds them. Each job
runs through the launcher with a timeout and leaves no process behind. (One rank, and how the
sharing works: tests/unit/engine/test_scoring.py.)"""
import json
import sys

import pytest

from tests.helpers.checkpoints import load_reference, make_checkpoint
from tests.helpers.ranks import JOBS
from tests.unit.engine.test_scoring import random_pairs, reference_scores, with_greedy_continuations
from trtx.cli.launch.launcher import Launch, processes_of

JOB_TIMEOUT_S = 240
LAYOUTS = {"tp2": (2, 1, False), "pp2": (1, 2, False), "adp2": (2, 1, True)}
pytestmark = [pytest.mark.timeout(600), pytest.mark.multirank]


@pytest.fixture(scope="module")
def model_and_expected(tmp_path_factory):
    model = make_checkpoint(tmp_path_factory.mktemp("ckpt"), "qwen2")
    ref = load_reference(model)
    pairs = with_greedy_continuations(ref, random_pairs(3))
    return model, pairs, reference_scores(ref, pairs)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_rank_scores_like_transformers(tmp_path, model_and_expected, layout):
    model, pairs, expected = model_and_expected
    tp, pp, adp = LAYOUTS[layout]
    logs, pairs_file = (tmp_path / "logs").resolve(), tmp_path / "pairs.json"
    pairs_file.write_text(json.dumps(pairs))
    result = Launch(tp * pp, [sys.executable, str(JOBS / "score_job.py"), str(model), str(tp), str(pp),
                              str(int(adp)), str(pairs_file), str(tmp_path)], JOB_TIMEOUT_S, logs).run()
    assert not processes_of(logs)
    assert result.exit_code == 0, result.summary()
    for rank in range(tp * pp):
        got = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        assert len(got) == len(pairs)
        for i, ((logprobs, greedy), (ref_logprobs, ref_greedy)) in enumerate(zip(got, expected)):
            worst = max(abs(a - b) for a, b in zip(logprobs, ref_logprobs.tolist()))
            assert len(logprobs) == len(ref_logprobs) and worst < 1e-4, f"rank {rank}, pair {i}: off by {worst}"
            assert greedy == ref_greedy, f"rank {rank}, pair {i}"
        assert all(all(g) for _, g in got[-5:]), "transformers' greedy continuations are greedy here too"
