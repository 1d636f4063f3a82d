"""Decode graphs (engine/graphs.py): captured per batch size during warmup, replayed with padding.
This machine has no GPU, so the replays run the padded static buffers eagerly; these tests check
what a CUDA graph relies on: a padded batch leaves every real sequence's inputs and outputs as
they were, every replay refreshes every static buffer, and graphs generate the eager tokens. (All
ranks replaying the same graph at the same padded size under attention DP, on real mpirun ranks:
tests/functional/ranks/test_graphs.py.)"""
import pytest
import torch

from tests.helpers.engine import MODELS_DIR, run_eval
from trtx.engine import LLM
from trtx.engine.kv_cache import NULL_BLOCK
from trtx.engine.prepare import Padding, SeqChunk
from trtx.engine.engine_config import EngineConfig

MODEL = MODELS_DIR / "tiny-arith"
SAMPLES = 32
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def llm():
    return LLM(MODEL, max_num_seqs=8, decode_graphs=True)


def decode_chunks(llm, lengths):
    """One decode token per sequence, sequences of the given cached lengths on real blocks."""
    blocks = llm.engine.blocks
    for rid, n in enumerate(lengths):
        blocks.free(rid)
        blocks.allocate(rid, n + 1)
    return [SeqChunk([5 + rid], n, blocks.tables[rid]) for rid, n in enumerate(lengths)]


def test_graphs_are_captured_for_every_warmed_up_decode_size(llm):
    assert sorted(llm.engine.runner.graphs.graphs) == [1, 2, 4, 8]
    assert [name for name, verdict in llm.warmup_report if verdict == "ran"][:4] == ["decode-8", "decode-4",
                                                                                     "decode-2", "decode-1"]


def test_a_padded_batch_keeps_every_real_sequence_s_inputs(llm):
    runner, graphs = llm.engine.runner, llm.engine.runner.graphs
    chunks = decode_chunks(llm, [40, 17, 90])
    plain = runner.prepare(chunks)
    padded = runner.prepare(chunks, pad=Padding(4, 1, graphs.blocks))
    assert padded.last_index == plain.last_index == [0, 1, 2]
    for name in ("input_ids", "positions", "slot_mapping"):
        got, want = padded.tensors()[name], plain.tensors()[name]
        assert got.shape == (4,) and got[:3].tolist() == want.tolist(), name
    bs = llm.engine.blocks.block_size
    assert padded.meta.positions[3] == 0 and padded.meta.slot_mapping[3] < bs      # padding: the null block
    tables, mask = padded.meta.decode.block_tables, padded.meta.decode.mask
    assert tables.shape == (4, graphs.blocks) and mask.shape == (4, 1, 1, graphs.blocks * bs)
    width = plain.meta.decode.block_tables.shape[1]
    assert torch.equal(tables[:3, :width], plain.meta.decode.block_tables)
    assert (tables[:3, width:] == NULL_BLOCK).all() and (tables[3] == NULL_BLOCK).all()
    keys = plain.meta.decode.mask.shape[-1]
    assert torch.equal(mask[:3, ..., :keys], plain.meta.decode.mask) and not mask[:3, ..., keys:].any()
    with pytest.raises(ValueError, match="padded decode batch takes up to 4 chunks of 1 tokens"):
        runner.prepare(chunks + [SeqChunk([1, 2], 3, chunks[0].block_table)], pad=Padding(4, 1, graphs.blocks))


def test_a_replay_refreshes_every_static_buffer_and_matches_eager(llm):
    runner, graphs = llm.engine.runner, llm.engine.runner.graphs
    graphs.replay(decode_chunks(llm, [40, 17, 90]), 4)           # fills three rows of graph-4
    chunks = decode_chunks(llm, [25])
    hidden, last = graphs.replay(chunks, 4)                      # now one: rows 1-3 must be padding again
    fresh = runner.prepare(chunks, pad=Padding(4, 1, graphs.blocks))
    static = graphs.graphs[4].inputs.tensors()
    assert static.keys() == fresh.tensors().keys()
    for name, tensor in fresh.tensors().items():
        assert torch.equal(static[name], tensor), name
    eager = runner.prepare(chunks)
    torch.testing.assert_close(hidden[last], runner.forward(eager)[eager.last_index], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nextn", [0, 2])
def test_graphs_generate_the_eager_tokens(nextn):
    eager = run_eval(EngineConfig(MODEL, mtp_nextn=nextn, max_num_seqs=8), SAMPLES)
    graphs = run_eval(EngineConfig(MODEL, mtp_nextn=nextn, max_num_seqs=8, decode_graphs=True), SAMPLES)
    assert [s["token_ids"] for s in graphs.samples] == [s["token_ids"] for s in eager.samples]
    assert graphs.spec == eager.spec
    forwards = graphs.ranks[0].forwards
    assert forwards["eager"] > 0                                   # prefills
    assert len([kind for kind in forwards if kind.startswith("graph-")]) >= 2, forwards
