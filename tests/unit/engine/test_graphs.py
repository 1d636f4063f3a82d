"""Decode graphs (engine/graphs.py): captured per batch size during warmup, replayed with padding.
This machine has no GPU, so the replays run the padded static buffers eagerly; these tests check
what a CUDA graph relies on: a padded batch leaves every real sequence's inputs and outputs as
they were, every replay refreshes every static buffer, and under attention DP all ranks replay
the same graph at the same padded size (real mpirun ranks, desync detector on)."""
import pytest
import torch
from ranks import eval_on_ranks

from trtx.cli.eval.evaluate import RankJobError, evaluate
from trtx.cli.eval.models import MODELS_DIR
from trtx.engine import LLM
from trtx.engine.kv_cache import NULL_BLOCK
from trtx.engine.prepare import Padding, SeqChunk
from trtx.engine.engine_config import EngineConfig

MODEL = MODELS_DIR / "tiny-arith"
DATA = MODEL / "eval.jsonl"
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
    eager, _ = evaluate(EngineConfig(MODEL, mtp_nextn=nextn, max_num_seqs=8), DATA, SAMPLES)
    graphs, _ = evaluate(EngineConfig(MODEL, mtp_nextn=nextn, max_num_seqs=8, decode_graphs=True), DATA, SAMPLES)
    assert [s["token_ids"] for s in graphs.samples] == [s["token_ids"] for s in eager.samples]
    assert graphs.spec == eager.spec
    forwards = graphs.ranks[0].forwards
    assert forwards["eager"] > 0                                   # prefills
    assert len([kind for kind in forwards if kind.startswith("graph-")]) >= 2, forwards


def run_adp(tmp_path, ranks, nextn, samples):
    return eval_on_ranks(tmp_path, 240, samples, tensor_parallel_size=ranks, attention_dp=True, decode_graphs=True,
                         mtp_nextn=nextn, max_num_seqs=2)


@pytest.mark.parametrize("ranks,nextn", [(2, 0), (4, 2)], ids=["adp2-mtp_nextn=0", "adp4-mtp_nextn=2"])
def test_attention_dp_ranks_agree_on_graph_and_padded_size(tmp_path, monkeypatch, ranks, nextn):
    """Rank 1 runs dry for 30 iterations (it replays all-padding graphs) while the others decode
    or prefill; every rank must take the same graph, or eager, every forward."""
    monkeypatch.setenv("TRTX_CHECK_COLLECTIVES", "1")
    monkeypatch.setenv("TRTX_FAULTS", "idle_rank@1:30")
    single, _ = evaluate(EngineConfig(MODEL, mtp_nextn=nextn), DATA, SAMPLES)
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
