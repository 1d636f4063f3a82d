"""Tensor and pipeline parallelism's rank layout, without any process: layers split over stages,
ranks mapped to tp x pp positions, query heads split with their KV heads, and the splits that cannot
work refused. (The same on real ranks: tests/functional/ranks/test_parallel.py.)"""
import pytest

from trtx.engine.parallel import RankMapping, head_shard, stage_layers

pytestmark = pytest.mark.timeout(600)


def test_layers_split_evenly_with_the_remainder_to_the_first_stages():
    assert [list(stage_layers(4, 4, s)) for s in range(4)] == [[0], [1], [2], [3]]
    assert [list(stage_layers(4, 3, s)) for s in range(3)] == [[0, 1], [2], [3]]
    assert [list(stage_layers(7, 2, s)) for s in range(2)] == [[0, 1, 2, 3], [4, 5, 6]]
    with pytest.raises(ValueError, match="larger than the model's 4 layers"):
        stage_layers(4, 5, 0)


def test_rank_mapping_puts_tensor_parallel_ranks_side_by_side():
    m = RankMapping(tp_size=2, pp_size=2, rank=3)
    assert (m.tp_rank, m.pp_rank, m.prev_rank, m.is_last_stage, m.last_stage_root) == (1, 1, 1, True, 2)
    assert RankMapping(2, 2, 1).next_rank == 3 and RankMapping(2, 2, 1).is_first_stage


@pytest.mark.parametrize("heads,kv,tp", [(6, 2, 1), (6, 2, 2), (6, 2, 4), (8, 8, 4), (32, 8, 8), (12, 4, 8)])
def test_every_query_head_lands_on_one_rank_with_its_kv_head(heads, kv, tp):
    seen = []
    for rank in range(tp):
        s = head_shard(heads, kv, tp, rank)
        for q in range(s.q_start, s.q_start + s.q_count):
            assert s.kv_start <= q // (heads // kv) < s.kv_start + s.kv_count   # its kv head is local
            seen.append(q)
        assert s.q_count % s.kv_count == 0                                       # uniform GQA groups
    assert sorted(seen) == list(range(heads))


@pytest.mark.parametrize("heads,kv,tp,message", [(6, 2, 3, "neither a divisor nor a multiple"),
                                                 (6, 2, 8, "without a query head"),
                                                 (8, 4, 3, "cannot be split")])
def test_head_splits_that_cannot_work_are_refused(heads, kv, tp, message):
    with pytest.raises(ValueError, match=message):
        head_shard(heads, kv, tp, 0)
