"""Input preparation: the one way a list of sequence chunks becomes the tensors and attention
metadata of a forward, whether the chunks come from the scheduler (the runtime path) or are
synthesised for warmup or CUDA-graph capture (the capture path). With `pad`, a decode batch comes
out in a captured graph's static shapes (engine/graphs.py).

Invariant 3 is why this is a list of hooks. A production engine prepared a metadata buffer on
its runtime path and forgot it on the capture path, and the captured graphs then read stale
memory. Here every field is produced by a hook registered once, below, and both paths run the
same hooks in the same order. The hooks build host fields (padding rows point at position 0 of
the null block), which reach the device in one copy, and every field must have been produced: a hook
missing from a path (the `drop_prepare_hook` fault removes one from the capture path) is an
error naming the field and the hook, never a silently stale buffer.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch

from .attention import AttentionMetadata, DecodeMeta, PrefillMeta
from .device import to_device
from .kv_cache import NULL_BLOCK

MAX_DECODE_LEN = 16     # longest chunk that may join the batched decode attention


@dataclass(frozen=True)
class DeviceTokens:
    """Tokens that exist only on the device: the first `count` of row `row` of `table` [N, W].
    MTP drafts travel so (each depth's feeds the next, the next step verifies them) and are never
    read back to the host: the host learns the accepted ones from verification's one read."""
    table: torch.Tensor
    row: int
    count: int


@dataclass
class SeqChunk:
    """One sequence's share of a forward: the tokens to compute, the position of the first one,
    and its block table. Everything `prepare` needs, whether the batch is real or synthesised.
    `device_tail`: the chunk's last tokens are on the device only (token_ids holds placeholders
    there)."""
    token_ids: list[int]
    start: int
    block_table: list[int]
    device_tail: DeviceTokens | None = None


@dataclass
class StepInputs:
    rows: torch.Tensor          # [3, T]: input_ids, positions, slot_mapping, one buffer
    meta: AttentionMetadata     # its positions and slot_mapping are views of rows
    last_index: list[int]       # flat row of each chunk's last token, in the order chunks were given
    table_columns: int = 0      # a graph's static tables: columns that may hold a block other than the null one

    @property
    def input_ids(self) -> torch.Tensor:
        return self.rows[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of a decode batch's inputs, by field: what a graph replay copies into its
        static buffers (all of them, so no field can be left stale)."""
        out = {"input_ids": self.input_ids, "positions": self.meta.positions, "slot_mapping": self.meta.slot_mapping}
        d = self.meta.decode
        if d is not None:
            out.update({"decode.block_tables": d.block_tables, "decode.seq_lens": d.seq_lens})
        return out

    def copy_into(self, static: "StepInputs") -> None:
        """Every tensor field into a captured graph's static buffers: the three token rows in one
        copy, the lengths, and the block tables into the left of the graph's wider tables, whose
        columns to the right a wider batch wrote are nulled again: nothing stays stale."""
        targets, fresh = static.tensors(), self.tensors()
        if targets.keys() != fresh.keys():
            raise MetadataError(f"captured with {sorted(targets)}, replayed with {sorted(fresh)}")
        if fresh.keys() - COPIED:        # a new field must be copied below, or a graph reads it stale
            raise MetadataError(f"copy_into does not copy {sorted(fresh.keys() - COPIED)}")
        static.rows.copy_(self.rows)
        if "decode.seq_lens" in fresh:
            static.meta.decode.seq_lens.copy_(fresh["decode.seq_lens"])
            tables, wide = fresh["decode.block_tables"], targets["decode.block_tables"]
            width = tables.shape[1]
            if static.table_columns > width:
                wide[:, width:static.table_columns].fill_(NULL_BLOCK)
            wide[:, :width].copy_(tables)
            static.table_columns = width


COPIED = {"input_ids", "positions", "slot_mapping", "decode.block_tables", "decode.seq_lens"}   # by copy_into


@dataclass(frozen=True)
class Padding:
    """The static shapes of a captured decode graph: num_seqs sequences of q_len tokens each, block
    tables `blocks` wide (the model length's: the tables are ints, the attention reads only up to
    each sequence's length). A smaller batch is filled up with sequences of the null block."""
    num_seqs: int
    q_len: int
    blocks: int


class MetadataError(RuntimeError):
    pass


@dataclass
class Layout:
    """Where each chunk's tokens go in the flat batch: the decode group first (the most common
    short chunk length Q: 1 when decoding, 1 + K when verifying K drafts; one batched attention
    call), then the prefill chunks (one call each, so a long prompt does not pad everyone's keys)."""
    chunks: list[SeqChunk]
    order: list[int]
    decode_len: int
    num_seqs: int               # chunks in the decode group
    block_size: int
    window: int | None
    device: torch.device
    pad: Padding | None = None
    num_tokens: int = field(init=False)

    def __post_init__(self):
        self.num_tokens = sum(len(c.token_ids) for c in self.chunks)


@dataclass(frozen=True)
class Hook:
    name: str
    produces: tuple[str, ...]
    fn: Callable[[Layout, dict], None]


HOOKS: list[Hook] = []
FIELDS = ("input_ids", "positions", "slot_mapping", "last_index", "decode", "prefills")


def hook(name: str, produces: tuple[str, ...]):
    def register(fn):
        HOOKS.append(Hook(name, produces, fn))
        return fn
    return register


def prepare(chunks: list[SeqChunk], block_size: int, window: int | None, device: torch.device,
            path: str = "runtime", dropped: frozenset[str] = frozenset(), pad: Padding | None = None,
            backend: str = "sdpa") -> StepInputs:
    """Run every registered hook over the chunks (except those in `dropped`, a fault) and check
    that every field was produced. With `pad`, every chunk must be pad.q_len tokens long; the
    batch is filled up to pad.num_seqs (last_index still lists the given chunks only). `backend`:
    the decode attention's (attention.py). A chunk's device_tail replaces its last tokens on the
    device."""
    given = len(chunks)
    if any(c.device_tail is not None and not 0 < c.device_tail.count <= len(c.token_ids) for c in chunks):
        raise ValueError("a chunk's device_tail must cover 1 to all of its tokens: "
                         f"{[(len(c.token_ids), c.device_tail.count) for c in chunks if c.device_tail]}")
    if pad is not None:
        if given > pad.num_seqs or any(len(c.token_ids) != pad.q_len for c in chunks):
            raise ValueError(f"a padded decode batch takes up to {pad.num_seqs} chunks of {pad.q_len} tokens, "
                             f"got lengths {[len(c.token_ids) for c in chunks]}")
        chunks = chunks + synthetic_chunks(pad.num_seqs - given, pad.q_len, block_size)
    short = Counter(len(c.token_ids) for c in chunks if len(c.token_ids) <= MAX_DECODE_LEN)
    decode_len = pad.q_len if pad else short.most_common(1)[0][0] if short else 1
    order = sorted(range(len(chunks)), key=lambda i: len(chunks[i].token_ids) != decode_len)   # stable
    layout = Layout(chunks, order, decode_len, sum(len(c.token_ids) == decode_len for c in chunks),
                    block_size, window, device, pad)
    out = {"input_ids": None, "positions": None, "slot_mapping": None,
           "last_index": [0] * len(chunks), "decode": None, "prefills": []}
    produced = set()
    for h in HOOKS:
        if h.name not in dropped:
            h.fn(layout, out)
            produced.update(h.produces)
    missing = [f for f in FIELDS if f not in produced]
    if missing:
        owners = sorted({h.name for h in HOOKS if set(h.produces) & set(missing)})
        raise MetadataError(f"{path} path: metadata {', '.join(missing)} not prepared "
                            f"(hook {', '.join(owners)} did not run)")
    tails = _device_tails(chunks[:given], out["last_index"])
    rows, decode, index = _to_device(layout, out, [i for _, at, source in tails for i in at + source])
    for table, at, source in tails:       # over the placeholders: one gather and one scatter a table
        n = len(at)
        rows[0].index_copy_(0, index[:n], table.reshape(-1).index_select(0, index[n:2 * n]))
        index = index[2 * n:]
    meta = AttentionMetadata(positions=rows[1], slot_mapping=rows[2], num_decodes=layout.num_seqs * decode_len,
                             decode=decode, prefills=out["prefills"], window=window, backend=backend)
    return StepInputs(rows, meta, out["last_index"][:given])


def _to_device(layout: Layout, out: dict, extra: list[int]) -> tuple[torch.Tensor, DecodeMeta | None, torch.Tensor]:
    """The hooks' host fields and `extra` in one host-to-device copy (each copy is a driver call,
    and on CUDA one from pageable memory can wait for the queue): [decode lengths, padding to 16
    bytes, decode block tables, input_ids, positions, slot_mapping, extra]. The lengths lead and
    the tables start 16-byte aligned, so the Triton kernel sees the same pointer alignment on every
    step (a new alignment would compile a new kernel in the middle of serving)."""
    tokens = out["input_ids"] + out["positions"] + out["slot_mapping"]
    d = out["decode"]
    lens, tables = (d["seq_lens"], d["block_tables"]) if d else ([], [])
    tables_at = len(lens) + len(lens) % 2
    rows_at = tables_at + len(tables)
    extra_at = rows_at + len(tokens)
    packed = to_device(lens + [0] * (tables_at - len(lens)) + tables + tokens + extra, layout.device)
    decode = DecodeMeta(packed[tables_at:rows_at].view(len(lens), -1), packed[:len(lens)], d["q_len"], d["masked"],
                        d["max_len"]) if d else None
    return packed[rows_at:extra_at].view(3, -1), decode, packed[extra_at:]


def _device_tails(chunks: list[SeqChunk], last_index: list[int]) -> list[tuple[torch.Tensor, list[int], list[int]]]:
    """Per source table of the chunks' device tails: (table, the rows their placeholders hold, the
    flat indices of their tokens in the table). A step's drafts come from one table (the drafter's
    last run) unless a request sat out a step."""
    by_table: dict[int, tuple[torch.Tensor, list[int], list[int]]] = {}
    for chunk, last in zip(chunks, last_index):
        tail = chunk.device_tail
        if tail is not None:
            _table, rows, sources = by_table.setdefault(id(tail.table), (tail.table, [], []))
            rows.extend(range(last - tail.count + 1, last + 1))
            first = tail.row * tail.table.shape[1]
            sources.extend(range(first, first + tail.count))
    return list(by_table.values())


@hook("tokens", ("input_ids", "positions", "slot_mapping", "last_index"))
def _tokens(layout: Layout, out: dict) -> None:
    bs = layout.block_size
    input_ids, positions, slots, last_index = [], [], [], out["last_index"]
    for i in layout.order:
        c = layout.chunks[i]
        pos = range(c.start, c.start + len(c.token_ids))
        input_ids += c.token_ids
        positions += pos
        slots += [c.block_table[p // bs] * bs + p % bs for p in pos]
        last_index[i] = len(input_ids) - 1
    out.update(input_ids=input_ids, positions=positions, slot_mapping=slots)     # host lists: prepare copies


@hook("decode_attention", ("decode",))
def _decode_attention(layout: Layout, out: dict) -> None:
    if not layout.num_seqs:
        return
    q, window = layout.decode_len, layout.window
    seqs = [layout.chunks[i] for i in layout.order[:layout.num_seqs]]
    # The tables are as wide as this batch's longest needs, however wide a graph's static tables
    # are (StepInputs.copy_into fills the rest with the null block): the host builds and copies
    # what the lengths need, never the model length.
    width = max(len(c.block_table) for c in seqs)
    lens = [c.start + q for c in seqs]
    tables = [b for c in seqs for b in c.block_table + [NULL_BLOCK] * (width - len(c.block_table))]
    # One query per sequence, all at the same position, no window cut: every cached key is
    # visible, no mask needed (batch-1 decoding, the latency case, skips building one).
    masked = bool(layout.pad) or q > 1 or min(lens) != max(lens) or bool(window and max(lens) > window)
    # Host fields, DecodeMeta's by name: prepare copies them to the device with the token rows.
    out["decode"] = dict(seq_lens=lens, block_tables=tables, q_len=q, masked=masked,
                         max_len=None if layout.pad else max(lens))


@hook("prefill_attention", ("prefills",))
def _prefill_attention(layout: Layout, out: dict) -> None:
    bs, window, dev = layout.block_size, layout.window, layout.device
    row = layout.num_seqs * layout.decode_len
    for i in layout.order[layout.num_seqs:]:
        c = layout.chunks[i]
        n, kv_len = len(c.token_ids), c.start + len(c.token_ids)
        k_pos = torch.arange(kv_len)[None, :]
        q_pos = torch.arange(c.start, kv_len)[:, None]
        causal = k_pos <= q_pos
        mask = causal if c.start else None                    # None: plain causal, SDPA's own
        window_mask = to_device(causal & (k_pos > q_pos - window), dev) if window else None
        blocks = torch.tensor(c.block_table[:-(-kv_len // bs)], dtype=torch.long)
        out["prefills"].append(PrefillMeta(row, row + n, to_device(blocks, dev), kv_len,
                                           None if mask is None else to_device(mask, dev), window_mask))
        row += n


def synthetic_chunks(num_seqs: int, tokens_each: int, block_size: int) -> list[SeqChunk]:
    """A batch of the given shape that computes nothing real: every token sits at the start of a
    sequence whose blocks are all the null block, so its cache writes land where no request
    reads (warmup, capture, and attention DP's dummy forward)."""
    blocks = [NULL_BLOCK] * -(-tokens_each // block_size)
    return [SeqChunk([0] * tokens_each, 0, blocks) for _ in range(num_seqs)]
