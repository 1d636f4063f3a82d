"""trtx's model for EleutherAI's lm-evaluation-harness (the optional extra `pip install trtx[lm-eval]`):

    trtx lm-eval run --model trtx --model_args pretrained=DIR,tp=2,mtp_nextn=2 --tasks gsm8k

Importing this module registers the model under the name "trtx" (lm-eval finds models only in
its registry, so its own `lm_eval` command cannot see it: `trtx lm-eval` is that command with
the model registered). In Python: `import trtx.cli.eval.lm_eval_model` before
`lm_eval.simple_evaluate(model="trtx", model_args=...)`.

model_args: `pretrained` (a checkpoint directory or a bundled model's name), any engine option
by its EngineConfig name (`max_num_seqs=32`, `dtype=bfloat16`), `tp`, `pp`, `adp` for
tensor_parallel_size, pipeline_parallel_size and attention_dp, and for multi-rank jobs `timeout`
(seconds per job, default 1800) and `log_dir`. With tp x pp > 1 each of lm-eval's calls
(loglikelihood, loglikelihood_rolling, generate_until) runs as one job on the ranks, through the
launcher (engines.RankEngine). lm-eval's batch_size and device are ignored: the engine batches
(continuous batching) and picks its devices itself.

The three request types, on the engine:
- loglikelihood: (context, continuation) pairs, tokenized as lm-eval's TemplateLM does (the
  whole text, split after the context's tokens), scored by LLM.score: contexts shared by several
  continuations (the choices of a question) are computed once.
- loglikelihood_rolling: the text's rolling windows as long as the model takes (lm-eval's
  get_rolling_token_windows, the first conditioned on the prefix token), summed.
- generate_until: greedy, up to max_gen_toks, stopped at the first of `until` (cut before it).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from ..errors import UserError
from .engines import GenerateCall, ScoreCall, open_engine
from .models import resolve_model

ALIASES = {"tp": "tensor_parallel_size", "pp": "pipeline_parallel_size", "adp": "attention_dp"}
IGNORED = {"batch_size", "max_batch_size", "device"}      # lm-eval passes these to every model


@register_model("trtx")
class TrtxLM(TemplateLM):
    def __init__(self, pretrained: str = "tiny-arith", timeout: float = 1800, log_dir: str | None = None,
                 add_bos_token: bool = False, **options):
        from trtx.engine.engine_config import EngineConfig

        engine = {ALIASES.get(k, k): v for k, v in options.items() if k not in IGNORED}
        config = EngineConfig.from_kwargs(str(resolve_model(str(pretrained))), **engine)
        self._start(config, float(timeout), Path(log_dir) if log_dir else None, add_bos_token)

    @classmethod
    def from_config(cls, config, timeout_s: float, log_dir: Path | None = None) -> "TrtxLM":
        """The model for a configuration built and checked elsewhere (`trtx eval --lm-eval`)."""
        lm = cls.__new__(cls)
        lm._start(config, timeout_s, log_dir, False)
        return lm

    def _start(self, config, timeout_s: float, log_dir: Path | None, add_bos_token: bool) -> None:
        from trtx.engine.tokenizer import Tokenizer

        super().__init__()
        self.config, self.add_bos_token = config, add_bos_token
        self.tokenizer = Tokenizer.from_dir(config.model)
        if self.tokenizer is None:
            raise ValueError(f"{config.model} has no tokenizer.json: lm-eval's requests are text")
        self._template = None          # the chat template, read when lm-eval asks for it
        self.engine = open_engine(config, timeout_s, log_dir)
        self.max_length = config.model_config.max_position_embeddings
        self.calls = []          # every CallResult: timings, MTP statistics, what the ranks did

    # -- tokens -------------------------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.config.model_config.eos_token_ids[0]

    @property
    def prefix_token_id(self) -> int:
        bos = self.config.model_config.bos_token_id
        return bos if bos is not None else self.eot_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """As lm-eval's HF model: no special tokens unless asked (add_bos_token=True, or the
        argument), and none added to a string that starts with the BOS token already (a prompt
        rendered by a chat template)."""
        add = self.add_bos_token if add_special_tokens is None else add_special_tokens
        bos = self.config.model_config.bos_token_id
        if add and add_special_tokens is None and bos is not None and string.startswith(self.tokenizer.token(bos)):
            add = False
        return self.tokenizer.encode(string, add_special_tokens=add)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    # -- chat templates -----------------------------------------------------------------------------

    @property
    def tokenizer_name(self) -> str:
        return str(self.config.model).replace("/", "__")

    @property
    def template(self):
        from trtx.engine.chat_template import ChatTemplate, ChatTemplateError
        if self._template is None:
            try:
                self._template = ChatTemplate.from_dir(self.config.model)
            except ChatTemplateError as e:
                raise UserError(str(e)) from None
            if self._template is None:
                raise UserError(f"{self.config.model} has no chat template (tokenizer_config.json's chat_template, "
                                f"or chat_template.jinja): --apply_chat_template needs one")
        return self._template

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.template.source if chat_template else None

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        from trtx.engine.chat_template import ChatTemplateError
        try:
            return self.template.render(chat_history, add_generation_prompt)
        except ChatTemplateError as e:
            raise UserError(str(e)) from None

    # -- requests -----------------------------------------------------------------------------------

    def _run(self, call):
        result = self.engine.run(call)
        self.calls.append(result)
        return result.outputs

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        pairs = [self._fit(context, continuation) for _, context, continuation in requests]
        return [(sum(o["logprobs"]), all(o["greedy"])) for o in self._run(ScoreCall(pairs))]

    def _fit(self, context: list[int], continuation: list[int]) -> tuple[list[int], list[int]]:
        """A pair that fits the model (a prompt must leave one position to generate): the
        context's oldest tokens dropped first, as lm-eval's HF model does."""
        room = self.max_length - 1
        if len(context) + len(continuation) <= room:
            return context, continuation
        whole = (context + continuation)[-room:]
        keep = min(len(continuation), room - 1)
        return whole[:-keep], whole[-keep:]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        pairs, owner = [], []
        for i, (text,) in enumerate(req.args for req in requests):
            # A window of L predicted tokens is a prompt of L + 1 (the prefix token first), and a
            # prompt leaves one position to generate: L = max_length - 2.
            windows = get_rolling_token_windows(token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                                                max_seq_len=self.max_length - 2, context_len=1)
            for window in map(make_disjoint_window, windows):
                pairs.append(window)
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, out in zip(owner, self._run(ScoreCall(pairs)) if pairs else []):
            totals[i] += sum(out["logprobs"])
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """One engine call per distinct (until, max_gen_toks); greedy only."""
        groups = defaultdict(list)
        for i, (context, kwargs) in enumerate(req.args for req in requests):
            kwargs = dict(kwargs or {})
            if kwargs.get("do_sample") or (kwargs.get("temperature") or 0) > 0:
                raise UserError("trtx's lm-eval model generates greedily: the task asks for sampling "
                                 f"(do_sample={kwargs.get('do_sample')}, temperature={kwargs.get('temperature')})")
            until = kwargs.get("until") or []
            until = (until,) if isinstance(until, str) else tuple(until)
            groups[until, int(kwargs.get("max_gen_toks", 256))].append((i, context))
        texts = [""] * len(requests)
        for (until, max_tokens), members in groups.items():
            max_tokens = min(max_tokens, self.max_length - 1)       # a prompt keeps at least one token
            prompts = [self.tok_encode(context)[-(self.max_length - max_tokens):] for _, context in members]
            outs = self._run(GenerateCall(prompts, max_tokens, list(until)))
            for (i, _), out in zip(members, outs):
                texts[i] = out["text"]
        return texts
