"""The Triton split-KV decode kernel (trtx.engine.triton_decode) against a plain torch reference.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (tests/unit/conftest.py sets
TRITON_INTERPRET=1 before they are decorated). Caches are random, block tables shuffled and much
wider than needed, padded with the null block 0, whose cache block holds NaN: a kernel that reads
past a sequence shows it."""
from __future__ import annotations

import pytest
import torch

from trtx.engine.triton_decode import num_splits_for, paged_decode_attention

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def reference(q, kv_cache, block_tables, seq_lens, q_len, scale, window=None):
    """Per sequence: gather its keys and values through its block table, mask explicitly, softmax
    in fp64. Returns [S*Q, H, D] fp64."""
    rows, num_heads, head_dim = q.shape
    block_size, kv_heads = kv_cache.shape[1], kv_cache.shape[2] // 2
    group = num_heads // kv_heads
    out = torch.zeros(rows, num_heads, head_dim, dtype=torch.float64)
    for s in range(rows // q_len):
        n = int(seq_lens[s])
        if n <= 0:
            continue
        t = torch.arange(n)
        slots = kv_cache[block_tables[s, t // block_size].long(), t % block_size].double().cpu()  # [n, 2Hkv, D]
        keys = slots[:, :kv_heads].repeat_interleave(group, dim=1)      # [n, H, D]
        values = slots[:, kv_heads:].repeat_interleave(group, dim=1)
        for j in range(q_len):
            p = n - q_len + j
            visible = t <= p
            if window:
                visible &= t > p - window
            qj = q[s * q_len + j].double().cpu()                              # [H, D]
            scores = torch.einsum("hd,nhd->hn", qj, keys) * scale
            scores[:, ~visible] = float("-inf")
            weights = torch.softmax(scores, dim=-1)
            out[s * q_len + j] = torch.einsum("hn,nhd->hd", weights, values)
    return out


def make_case(seq_lens, q_len, num_heads, kv_heads, head_dim, block_size, dtype=torch.float32,
              width=None, seed=0, garbage=float("nan")):
    """Random q and cache; each sequence gets shuffled, non-contiguous blocks, the table padded to
    `width` with the null block 0 (filled with `garbage`)."""
    g = torch.Generator().manual_seed(seed)
    needed = [-(-max(n, 0) // block_size) for n in seq_lens]
    width = width or 4 * max(needed) + 3
    num_blocks = 1 + 2 * sum(needed) + 5                               # spare blocks stay unused
    cache = torch.randn(num_blocks, block_size, 2 * kv_heads, head_dim, generator=g)
    cache[0] = garbage
    free = (torch.randperm(num_blocks - 1, generator=g) + 1).tolist()
    tables = torch.zeros(len(seq_lens), width, dtype=torch.int32)
    for s, k in enumerate(needed):
        tables[s, :k] = torch.tensor([free.pop() for _ in range(k)], dtype=torch.int32)
    q = torch.randn(len(seq_lens) * q_len, num_heads, head_dim, generator=g)
    lens = torch.tensor(seq_lens, dtype=torch.int32)
    return (q.to(dtype).to(DEVICE), cache.to(dtype).to(DEVICE), tables.to(DEVICE), lens.to(DEVICE))


def check(seq_lens, q_len, num_heads, kv_heads, head_dim, block_size, window=None, num_splits=None,
          dtype=torch.float32, **kw):
    q, cache, tables, lens = make_case(seq_lens, q_len, num_heads, kv_heads, head_dim, block_size, dtype, **kw)
    scale = head_dim ** -0.5
    got = paged_decode_attention(q, cache, tables, lens, q_len, scale, window=window, num_splits=num_splits)
    assert got.shape == q.shape and got.dtype == q.dtype
    want = reference(q, cache, tables, lens.cpu(), q_len, scale, window)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.cpu().double(), want, atol=tol, rtol=tol)
    return got


# (seq_lens, Q, H, Hkv, D, block_size, window, num_splits): every case mixes lengths, and every one
# with Q > 1 has a sequence at its start (length == Q).
CASES = {
    "gqa3-decode":          ([100, 37, 1, 70], 1, 6, 2, 32, 16, None, 3),
    "gqa3-verify-k2":       ([100, 3, 61, 90], 3, 6, 2, 32, 16, None, 3),
    "mha-verify-k3":        ([4, 130, 33], 4, 4, 4, 32, 16, None, 1),
    "mqa-verify-k2":        ([97, 3, 140], 3, 8, 1, 32, 16, None, 16),
    "bs12-d48":             ([100, 3, 25, 49], 3, 6, 2, 48, 12, None, 3),
    "bs12-d80-mqa":         ([77, 1, 150], 1, 8, 1, 80, 12, None, 16),
    "mqa-wide-tiles":       ([70, 4], 4, 16, 1, 160, 16, None, 3),      # 64x256 q tile: BLOCK_N 32
    "window-small":         ([150, 3, 40, 90], 3, 6, 2, 32, 16, 20, 3),
    "window-small-1split":  ([150, 70, 4], 4, 4, 4, 32, 16, 33, 1),
    "window-large":         ([100, 3, 61], 3, 6, 2, 32, 16, 500, 3),
    "window-bs12-16splits": ([130, 2, 45], 2, 8, 1, 48, 12, 17, 16),
    "window-exact-len":     ([64, 65, 1], 1, 6, 2, 32, 16, 64, 3),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_fp32_matches_reference(case):
    seq_lens, q_len, h, hkv, d, bs, window, splits = CASES[case]
    check(seq_lens, q_len, h, hkv, d, bs, window, splits)


@pytest.mark.parametrize("window", [None, 24])
def test_bf16_matches_reference(window):
    check([90, 3, 41], 3, 6, 2, 32, 16, window, 3, dtype=torch.bfloat16)


def test_huge_garbage_in_null_block_does_not_leak():
    """Finite but huge values in the null block (and in the unused tail of a partial last block)."""
    q, cache, tables, lens = make_case([37, 3, 20], 3, 6, 2, 32, 16, garbage=1e30)
    for s, n in enumerate(lens.tolist()):                                 # the unused slots of each last block
        if n % 16:
            cache[tables[s, n // 16].long(), n % 16:] = -1e30
    got = paged_decode_attention(q, cache, tables, lens, 3, 32 ** -0.5, num_splits=16)
    torch.testing.assert_close(got.cpu().double(), reference(q, cache, tables, lens.cpu(), 3, 32 ** -0.5),
                               atol=1e-5, rtol=1e-5)


def test_zero_length_gives_zeros_and_out_is_filled():
    q, cache, tables, lens = make_case([0, 50, 0], 2, 6, 2, 32, 16)
    out = torch.full_like(q, 7.0)
    got = paged_decode_attention(q, cache, tables, lens, 2, 32 ** -0.5, num_splits=3, out=out)
    assert got.data_ptr() == out.data_ptr()
    assert not torch.isnan(out).any()
    assert (out[0:2] == 0).all() and (out[4:6] == 0).all()
    torch.testing.assert_close(out[2:4].cpu().double(),
                               reference(q, cache, tables, lens.cpu(), 2, 32 ** -0.5)[2:4], atol=1e-5, rtol=1e-5)


def test_split_count_does_not_change_the_result():
    """The same batch with 1, 3 and 16 splits (16: more splits than blocks)."""
    q, cache, tables, lens = make_case([70, 3], 3, 4, 1, 32, 16)
    results = [paged_decode_attention(q, cache, tables, lens, 3, 0.2, num_splits=n) for n in (1, 3, 16)]
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], atol=1e-6, rtol=1e-6)


def test_num_splits_for_is_bounded_and_shape_only():
    assert num_splits_for(4, 2, "cpu") == num_splits_for(4, 2, torch.device("cpu"))
    for seqs in (1, 7, 256, 4096):
        assert 1 <= num_splits_for(seqs, 8, DEVICE) <= 16


def test_the_engine_on_the_triton_backend_generates_the_sdpa_tokens(monkeypatch):
    """The kernel wired into the engine (attention.py's triton backend, chosen by TRTX_ATTENTION
    here, by CUDA in production): decode graphs and MTP verify chunks (Q = 3) give the tokens and
    acceptance of the SDPA path. Kept short: every kernel call is interpreted on CPU."""
    from tests.helpers.engine import MODELS_DIR
    from trtx.engine import LLM, SamplingParams

    prompts, params = ["12+7=", "30+45="], SamplingParams(max_tokens=5, ignore_eos=True)
    options = dict(max_num_seqs=2, num_kv_blocks=16, mtp_nextn=2, decode_graphs=True)
    monkeypatch.setenv("TRTX_ATTENTION", "sdpa")
    want = LLM(MODELS_DIR / "tiny-arith", **options).generate(prompts, params)
    monkeypatch.setenv("TRTX_ATTENTION", "triton")
    llm = LLM(MODELS_DIR / "tiny-arith", **options)
    got = llm.generate(prompts, params)
    assert llm.engine.runner.attention_backend == "triton"
    forwards = llm.engine.runner.forwards
    assert any(kind.startswith("graph-") for kind in forwards) and any(kind.startswith("mtp-graph-") for kind in forwards)
    assert [o.outputs[0].token_ids for o in got] == [o.outputs[0].token_ids for o in want]
    assert [o.spec.as_dict() for o in got] == [o.spec.as_dict() for o in want]
