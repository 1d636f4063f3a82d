"""Invariant 3: the capture path (batches synthesised for warmup or graph capture) prepares exactly
the runtime path's metadata, a hook missing from it is reported, and warmup runs every shape through
it. (Invariant 4, warmup decisions taken by all ranks together on real ranks:
tests/functional/ranks/test_warmup_and_prepare.py.)"""
import pytest
import torch

from tests.helpers.engine import MODELS_DIR
from trtx.engine import LLM
from trtx.engine.prepare import HOOKS, MetadataError, SeqChunk

MODEL = MODELS_DIR / "tiny-arith"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def llm():
    return LLM(MODEL, max_num_seqs=8)


def mixed_chunks(llm):
    """Decode sequences at different positions, a verify chunk, a fresh prompt and a prompt's
    second chunk, on real block tables."""
    blocks = llm.engine.blocks
    lengths = {0: 40, 1: 17, 2: 90, 3: 33, 4: 70}
    for rid, n in lengths.items():
        blocks.allocate(rid, n)
    t = blocks.tables
    return [SeqChunk([5], 39, t[0]), SeqChunk([6], 16, t[1]), SeqChunk([7, 8, 9], 30, t[3]),
            SeqChunk(list(range(3, 40)), 0, t[2]), SeqChunk([4] * 20, 50, t[4]), SeqChunk([2], 89, t[2])]


def as_plain(x):
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if hasattr(x, "__dict__"):
        return {k: as_plain(v) for k, v in vars(x).items()}
    if isinstance(x, list):
        return [as_plain(v) for v in x]
    return x


def test_capture_and_runtime_paths_prepare_the_same_metadata(llm):
    chunks = mixed_chunks(llm)
    runtime, capture = llm.engine.runner.prepare(chunks), llm.engine.runner.prepare(chunks, "capture")
    assert as_plain(runtime) == as_plain(capture)
    meta = runtime.meta
    assert meta.decode.q_len == 1 and meta.num_decodes == 3 and len(meta.prefills) == 3
    assert {h.name for h in HOOKS} == {"tokens", "decode_attention", "prefill_attention"}


def test_device_tails_replace_their_placeholders_in_one_copy(llm, monkeypatch):
    """MTP drafts that live on the device (DeviceTokens) reach the right rows: verify chunks that
    prepare moves behind a commoner chunk length, tails from two tables (a request that sat out a
    step keeps its older drafts), a tail cut short by the token budget, next to host-only chunks;
    and a verify batch's inputs still take one host-to-device copy."""
    from trtx.engine import prepare as prepare_module
    from trtx.engine.prepare import DeviceTokens
    t = llm.engine.blocks.tables
    for rid in range(5):
        llm.engine.blocks.allocate(rid, 100)
    older = torch.tensor([[70, 71, 72], [73, 74, 75]])
    newer = torch.tensor([[80, 81], [82, 83], [84, 85]])
    chunks = [SeqChunk([5], 39, t[0]), SeqChunk([6], 16, t[1]),              # the commonest length: first
              SeqChunk([9, -1, -1], 30, t[2], DeviceTokens(newer, 2, 2)),
              SeqChunk([8, -1, -1], 60, t[3], DeviceTokens(older, 1, 2)),   # older table; 3 drafts, 2 kept
              SeqChunk([7, -1], 20, t[4], DeviceTokens(newer, 0, 1))]
    inputs = llm.engine.runner.prepare(chunks)
    ids, last = inputs.input_ids.tolist(), inputs.last_index
    assert [ids[last[i] - len(c.token_ids) + 1:last[i] + 1] for i, c in enumerate(chunks)] == \
        [[5], [6], [9, 84, 85], [8, 73, 74], [7, 80]]
    assert -1 not in ids
    copies = []
    real = prepare_module.to_device
    monkeypatch.setattr(prepare_module, "to_device", lambda host, device: copies.append(host) or real(host, device))
    inputs = llm.engine.runner.prepare(chunks[2:4])             # a verify batch: the decode group alone
    assert len(copies) == 1
    assert inputs.input_ids.tolist() == [9, 84, 85, 8, 73, 74]


@pytest.mark.parametrize("hook,field", [("tokens", "input_ids"), ("decode_attention", "decode"),
                                        ("prefill_attention", "prefills")])
def test_a_hook_dropped_on_the_capture_path_is_reported(monkeypatch, hook, field):
    monkeypatch.setenv("TRTX_FAULTS", f"drop_prepare_hook:{hook}")     # read once, when the LLM is built
    llm = LLM(MODEL, max_num_seqs=8)
    chunks = mixed_chunks(llm)
    with pytest.raises(MetadataError, match=f"capture path: metadata {field}.* not prepared \\(hook {hook} did not run"):
        llm.engine.runner.prepare(chunks, "capture")
    llm.engine.runner.prepare(chunks)          # the runtime path is untouched


def test_warmup_runs_every_shape_through_the_capture_path(monkeypatch):
    warm = LLM(MODEL, max_num_seqs=8, mtp_nextn=2, warmup=True)
    assert warm.warmup_report == [("decode-8", "ran"), ("decode-4", "ran"), ("decode-2", "ran"),
                                  ("decode-1", "ran"), ("prefill-255", "ran")]
    monkeypatch.setenv("TRTX_FAULTS", "drop_prepare_hook:decode_attention")
    with pytest.raises(MetadataError, match="capture path"):
        LLM(MODEL, max_num_seqs=8, warmup=True)
