"""Decode graphs (engine/graphs.py): captured per batch size during warmup, replayed with padding.
This machine has no GPU, so the replays run the padded static buffers eagerly; these tests check
what a CUDA graph relies on: a padded batch leaves every real sequence's inputs and outputs as
they were, every replay refreshes every static buffer, and graphs generate the eager tokens. (All
ranks replaying the same graph at the same padded size under attention DP, on real mpirun ranks:
tests/functional/ranks/test_graphs.py.)"""
import json
import shutil

import pytest
import torch

from tests.helpers.engine import MODELS_DIR, run_eval
from trtx.engine import LLM, SamplingParams, attention
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
    # The tables are as wide as the batch needs (a replay nulls the rest of the graph's wider
    # tables), the lengths say how far each sequence's keys go: padding is one key at position 0.
    plain_d, padded_d = plain.meta.decode, padded.meta.decode
    width = plain_d.block_tables.shape[1]
    assert padded_d.block_tables.shape == (4, width) < (4, graphs.blocks)
    assert torch.equal(padded_d.block_tables[:3], plain_d.block_tables) and (padded_d.block_tables[3] == NULL_BLOCK).all()
    assert padded_d.seq_lens.tolist() == plain_d.seq_lens.tolist() + [1] == [41, 18, 91, 1]
    assert padded_d.masked and plain_d.masked
    with pytest.raises(ValueError, match="padded decode batch takes up to 4 chunks of 1 tokens"):
        runner.prepare(chunks + [SeqChunk([1, 2], 3, chunks[0].block_table)], pad=Padding(4, 1, graphs.blocks))


def test_a_replay_refreshes_every_static_buffer_and_matches_eager(llm):
    runner, graphs = llm.engine.runner, llm.engine.runner.graphs
    graphs.replay(decode_chunks(llm, [40, 17, 90]), 4)           # fills three rows of graph-4
    chunks = decode_chunks(llm, [25])
    hidden, last, _ = graphs.replay(chunks, 4)                   # now one: rows 1-3 must be padding again
    fresh = runner.prepare(chunks, pad=Padding(4, 1, graphs.blocks))
    static = graphs.graphs[4].inputs.tensors()
    assert static.keys() == fresh.tensors().keys()
    for name, tensor in fresh.tensors().items():
        if name == "decode.block_tables":       # the graph's tables are the model length's width
            width = tensor.shape[1]
            assert static[name].shape == (4, graphs.blocks) and (static[name][:, width:] == NULL_BLOCK).all()
            static[name] = static[name][:, :width]
        assert torch.equal(static[name], tensor), name
    eager = runner.prepare(chunks)
    torch.testing.assert_close(hidden[last], runner.forward(eager)[eager.last_index], rtol=1e-5, atol=1e-5)


def test_a_step_s_inputs_reach_the_device_in_one_copy(llm, monkeypatch):
    """Each host-to-device copy is a driver call (and on CUDA one from pageable memory can wait
    for the queue): a decode step's tokens, lengths and tables travel together, and a replay
    then moves them into the graph's buffers with three device copies."""
    from trtx.engine import prepare as prepare_module
    runner, graphs = llm.engine.runner, llm.engine.runner.graphs
    copies = []
    real = prepare_module.to_device
    monkeypatch.setattr(prepare_module, "to_device", lambda host, device: copies.append(host) or real(host, device))
    chunks = decode_chunks(llm, [40, 17, 90])
    runner.prepare(chunks)
    assert len(copies) == 1
    graphs.replay(chunks, 4)
    assert len(copies) == 2


@pytest.mark.parametrize("nextn", [0, 2])
def test_graphs_generate_the_eager_tokens(nextn):
    eager = run_eval(EngineConfig(MODEL, mtp_nextn=nextn, max_num_seqs=8), SAMPLES)
    graphs = run_eval(EngineConfig(MODEL, mtp_nextn=nextn, max_num_seqs=8, decode_graphs=True), SAMPLES)
    assert [s["token_ids"] for s in graphs.samples] == [s["token_ids"] for s in eager.samples]
    assert graphs.spec == eager.spec
    forwards = graphs.ranks[0].forwards
    assert forwards["eager"] > 0                                   # prefills
    assert len([kind for kind in forwards if kind.startswith("graph-")]) >= 2, forwards
    if nextn:      # the drafter's catch-up and draft passes replay graphs of their own
        replays = {kind: n for kind, n in forwards.items() if kind.startswith("mtp-graph-")}
        assert sum(replays.values()) > forwards.get("mtp-eager", 0), forwards
        assert {"mtp-catch-up-1", "mtp-draft-1"} <= set(graphs.ranks[0].graph_memory), graphs.ranks[0].graph_memory


def test_graphs_at_a_long_model_length_read_keys_only_up_to_each_sequence(tmp_path, monkeypatch):
    """A graph is captured once for the model length (tables as wide as 131072 positions need),
    and its decode attention still reads each step's keys only up to the batch's real lengths:
    the cost follows the work, not max_position_embeddings (issue 16: 131072 was 7x slower)."""
    long_model = tmp_path / "long"
    shutil.copytree(MODEL, long_model)
    config = json.loads((long_model / "config.json").read_text())
    config["max_position_embeddings"] = 131072
    (long_model / "config.json").write_text(json.dumps(config))
    llm = LLM(long_model, max_num_seqs=2, decode_graphs=True, num_kv_blocks=64)
    graphs = llm.engine.runner.graphs
    assert graphs.blocks == 131072 // llm.engine.blocks.block_size and sorted(graphs.graphs) == [1, 2]
    memory = llm.rank_info().graph_memory
    assert memory.keys() == {"1", "2"}
    if llm.device.type == "cpu":
        assert memory == {"1": 0, "2": 0}                           # no graph pool
    gathered = []
    real_gather = attention._gather
    monkeypatch.setattr(attention, "_gather", lambda *a: gathered.append(a[3]) or real_gather(*a))
    prompts = ["12+7=", "3+45="]
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    out = llm.generate(prompts, params)
    assert llm.engine.runner.forwards["graph-2"] > 0
    longest = max(len(o.prompt_token_ids) for o in out) + 8
    assert 0 < max(gathered) <= longest
    eager = LLM(MODEL, max_num_seqs=2, num_kv_blocks=64).generate(prompts, params)
    assert [o.outputs[0].token_ids for o in out] == [o.outputs[0].token_ids for o in eager]
