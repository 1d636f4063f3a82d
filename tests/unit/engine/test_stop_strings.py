"""Stop strings on the output text kept per request (IncrementalText): the same finish step, the
same stop_text_end and the same truncated text as decoding the whole output at every token, on the
bundled model's tokenizer and on byte-level and SentencePiece-style ones; and work per token that
does not grow with the output."""
import random

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from tests.helpers.engine import MODELS_DIR
from trtx.engine.kv_cache import BlockManager
from trtx.engine.request import Request
from trtx.engine.sampling import SamplingParams
from trtx.engine.scheduler import Scheduler
from trtx.engine.tokenizer import IncrementalText, Tokenizer

CORPUS = ["héllo wörld ünïcode ☃ snow 中文字符 测试 emoji 😀😃 naïve café 12+7=19",
          "the quick brown fox jumps over the lazy dog ß ø å\nAnn has 3 coins."] * 20


@pytest.fixture(scope="module")
def bundled():
    return Tokenizer.from_dir(MODELS_DIR / "tiny-arith")


def trained(tmp_path, kind: str) -> Tokenizer:
    """A small tokenizer of a kind whose tokens do not decode separately as they do together:
    byte-level BPE (a token may be part of a character) or SentencePiece-style (a first token
    loses its leading space)."""
    if kind == "byte-level":
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      special_tokens=["<s>", "</s>"], show_progress=False)
    else:
        tok = HFTokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>"], show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    path = tmp_path / f"{kind}.json"
    tok.save(str(path))
    return Tokenizer(path)


def full_decode_rule(tokenizer: Tokenizer, tokens: list[int], stop: list[str], max_tokens: int):
    """The rule the engine had: decode the whole output after every token and find each stop
    string in it. Returns (finish reason, output tokens, stop_text_end, truncated text)."""
    for n in range(1, len(tokens) + 1):
        text = tokenizer.decode(tokens[:n])
        hits = [i for i in (text.find(s) for s in stop) if i >= 0]
        if hits:
            return "stop", tokens[:n], min(hits), text[:min(hits)]
        if n >= max_tokens:
            return "length", tokens[:n], None, text
    return None, tokens, None, tokenizer.decode(tokens)


def engine_rule(tokenizer: Tokenizer, tokens: list[int], stop: list[str], max_tokens: int, groups: list[int]):
    """The scheduler's: the tokens appended in groups (several verified drafts in one step)."""
    sched = Scheduler(BlockManager(num_blocks=128, block_size=16), max_num_seqs=1, max_num_tokens=64,
                      tokenizer=tokenizer)
    req = Request(0, [5], SamplingParams(max_tokens=max_tokens, stop=stop, ignore_eos=True))
    sched.add(req)
    sched.schedule()
    at = 0
    for size in groups:
        if sched._append(req, tokens[at:at + size]):
            break
        at += size
    text = tokenizer.decode(req.output_token_ids)
    if req.stop_text_end is not None:
        text = text[:req.stop_text_end]
    return req.finish_reason, req.output_token_ids, req.stop_text_end, text


def random_case(rng: random.Random, tokenizer: Tokenizer):
    tokens = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randrange(1, 60))]
    text = tokenizer.decode(tokens)
    stop = []
    for _ in range(rng.randrange(1, 4)):
        if text and rng.random() < 0.7:            # a piece of the text: it may span tokens
            i = rng.randrange(len(text))
            stop.append(text[i:i + rng.randrange(1, 7)])
        else:                                      # text that may or may not occur
            stop.append("".join(rng.choice("0123456789+=ab \n.") for _ in range(rng.randrange(1, 4))))
    groups, left = [], len(tokens)
    while left > 0:
        groups.append(rng.randrange(1, 5))
        left -= groups[-1]
    return tokens, stop, rng.randrange(1, 70), groups


def test_stop_strings_match_the_full_decode_rule_on_the_bundled_tokenizer(bundled):
    rng = random.Random(0)
    stopped = 0
    for case in range(600):
        tokens, stop, max_tokens, groups = random_case(rng, bundled)
        ref = full_decode_rule(bundled, tokens, stop, max_tokens)
        assert engine_rule(bundled, tokens, stop, max_tokens, groups) == ref, (case, tokens, stop)
        stopped += ref[0] == "stop"
    assert stopped > 200                       # most cases stop on a string, many mid-step


@pytest.mark.parametrize("kind", ["byte-level", "sentencepiece"])
def test_stop_strings_match_the_full_decode_rule_where_tokens_decode_in_context(tmp_path, kind):
    tokenizer = trained(tmp_path, kind)
    rng = random.Random(1)
    for case in range(300):
        tokens, stop, max_tokens, groups = random_case(rng, tokenizer)
        ref = full_decode_rule(tokenizer, tokens, stop, max_tokens)
        assert engine_rule(tokenizer, tokens, stop, max_tokens, groups) == ref, (case, tokens, stop)


@pytest.mark.parametrize("kind", ["bundled", "byte-level", "sentencepiece"])
def test_the_kept_text_is_the_whole_output_s_decoded_text(bundled, tmp_path, kind):
    tokenizer = bundled if kind == "bundled" else trained(tmp_path, kind)
    rng = random.Random(2)
    for _ in range(100):
        tokens = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randrange(1, 50))]
        kept, before = IncrementalText(tokenizer), ""
        for n in range(1, len(tokens) + 1):
            changed = kept.update(tokens[:n])
            text = tokenizer.decode(tokens[:n])
            assert kept.text == text and len(kept) == len(text)
            assert before[:changed] == text[:changed]          # unchanged before the offset it gives
            assert kept.tail(max(0, changed - 3)) == text[max(0, changed - 3):]
            before = text


class CountingTokenizer:
    """A tokenizer that counts the tokens it decodes."""

    def __init__(self, inner: Tokenizer):
        self.inner, self.decoded = inner, 0

    def decode(self, ids):
        self.decoded += len(ids)
        return self.inner.decode(ids)


@pytest.mark.parametrize("group", [1, 3])
def test_stop_string_work_per_token_does_not_grow_with_the_output(bundled, group):
    """Tokens decoded over a whole generation stay linear in its length (decoding the whole
    output at every token would decode n^2 / 2)."""
    totals = {}
    for n in (300, 1200):
        counting = CountingTokenizer(bundled)
        tokens = [bundled.encode(c)[0] for c in ("12+7=19, " * n)[:n]]
        finish, out, _, _ = engine_rule(counting, tokens, ["never", "stop!"], n, [group] * (n // group + 1))
        assert finish == "length" and len(out) == n
        totals[n] = counting.decoded
    assert totals[1200] <= 4 * 1200, totals
    assert totals[1200] <= 4.5 * totals[300], totals          # linear: 4x the tokens, ~4x the work
