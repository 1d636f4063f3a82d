"""trtx's lm-eval model (cli/eval/lm_eval_model.py) in this process, on a random checkpoint,
against transformers: loglikelihood (tokenized as lm-eval's TemplateLM does), loglikelihood_rolling
over windows when the text is longer than the model, and generate_until with its stop strings;
registered under "trtx"; and its arguments (aliases, lm-eval's batch_size ignored, bad ones)."""
import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402

from tests.helpers.checkpoints import load_reference, make_checkpoint, make_release_checkpoint  # noqa: E402
from trtx.cli.errors import UserError  # noqa: E402
from trtx.cli.eval.lm_eval_model import TrtxLM  # noqa: E402

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = make_checkpoint(tmp_path_factory.mktemp("ckpt"), max_position_embeddings=48)
    return path, load_reference(path), TrtxLM(pretrained=str(path), batch_size=8, max_num_seqs=16, block_size=4)


def requests(kind, *args):
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


def reference_logprob(ref, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    with torch.no_grad():
        logits = ref(torch.tensor([context + continuation])).logits[0, len(context) - 1:-1].float()
    target = torch.tensor(continuation)
    return (float(torch.log_softmax(logits, -1).gather(-1, target[:, None]).sum()),
            bool((logits.argmax(-1) == target).all()))


def test_registered_as_trtx():
    assert get_model("trtx") is TrtxLM


def test_loglikelihood_matches_transformers(model):
    path, ref, lm = model
    pairs = [("Ann has 3", " coins"), ("Ann has 3", " cats"), ("Q: 2+2=", "4"), ("", "hello"), ("x" * 45, "yz")]
    got = lm.loglikelihood(requests("loglikelihood", *pairs))
    for (context, continuation), (logprob, greedy) in zip(pairs, got):
        if context:
            whole, head = lm.tok_encode(context + continuation), lm.tok_encode(context)
            ctx, cont = whole[:len(head)], whole[len(head):]
        else:                              # lm-eval conditions an empty context on the prefix token
            ctx, cont = [lm.prefix_token_id], lm.tok_encode(continuation)
        room = 47                          # max_position_embeddings 48, less the position to generate
        if len(ctx) + len(cont) > room:
            ctx = (ctx + cont)[-room:][:-len(cont)]
        want, want_greedy = reference_logprob(ref, ctx, cont)
        assert logprob == pytest.approx(want, abs=1e-4) and greedy == want_greedy


def test_loglikelihood_rolling_sums_the_windows(model):
    """A text of 100 tokens on a model of 48 positions: rolling windows of 46 predicted tokens,
    the first conditioned on the prefix token; the sum over windows equals transformers' on them."""
    path, ref, lm = model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
    texts = ["The quick brown fox jumps over the lazy dog. " * 2 + "Pack my box with five dozen liquor jugs.", "short"]
    got = lm.loglikelihood_rolling(requests("loglikelihood_rolling", *[(t,) for t in texts]))
    for text, total in zip(texts, got):
        tokens = lm.tok_encode(text)
        windows = list(map(make_disjoint_window, get_rolling_token_windows(tokens, lm.prefix_token_id, 46, 1)))
        assert (len(windows) > 1) == (len(tokens) > 46)
        assert total == pytest.approx(sum(reference_logprob(ref, c, x)[0] for c, x in windows), abs=1e-3)


def test_generate_until_is_greedy_and_stops_before_the_stop_string(model):
    path, ref, lm = model
    prompt = "abc"
    ids = lm.tok_encode(prompt)
    with torch.no_grad():
        out = ref.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):].tolist()
    full = lm.tok_decode(out)
    stop = full[5:7] if len(full) > 7 else None
    got = lm.generate_until(requests("generate_until", (prompt, {"until": [], "max_gen_toks": 12}),
                                     (prompt, {"until": [stop] if stop else [], "max_gen_toks": 12})))
    assert got[0] == full
    assert got[1] == (full[:full.index(stop)] if stop else full)
    with pytest.raises(UserError, match="generates greedily"):
        lm.generate_until(requests("generate_until", (prompt, {"do_sample": True, "temperature": 0.7})))
    assert lm.generate_until(requests("generate_until", (prompt, {"temperature": None, "max_gen_toks": 12})))[0] == full


def test_bos_once_with_a_chat_template(tmp_path):
    """add_bos_token=True adds BOS to plain text, but not to a chat-rendered prompt that starts
    with it (lm-eval's TemplateLM contract); the template is the release's, rendered as transformers does."""
    lm = TrtxLM(pretrained=str(make_release_checkpoint(tmp_path)), add_bos_token=True, num_kv_blocks=16)
    bos = lm.config.model_config.bos_token_id
    assert lm.tok_encode("Hi")[0] == bos and lm.tok_encode("Hi").count(bos) == 1
    chat = lm.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert chat.startswith("<|begin_of_text|>") and lm.tok_encode(chat).count(bos) == 1


def test_model_args(model):
    path, _, _ = model
    lm = TrtxLM.create_from_arg_string(f"pretrained={path},mtp_nextn=0,max_num_seqs=4", {"batch_size": 16, "device": "cuda"})
    assert lm.config.max_num_seqs == 4 and lm.config.tensor_parallel_size == 1
    with pytest.raises(TypeError, match="unknown engine option"):
        TrtxLM(pretrained=str(path), max_num_seq=4)
