"""One engine configuration evaluated on one task (what `trtx eval` runs): the task's documents
(documents.py) as token ids, run on the engine in this process or on tp x pp ranks (engines.py),
and scored (metrics.py): generation graded by the task's filters, multiple choice by each
choice's log-likelihood. The result (EvalResult) carries every metric, MTP acceptance, speed
and what each rank did.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from .documents import Doc, load_docs
from .engines import CallResult, GenerateCall, ScoreCall, open_engine
from .metrics import aggregate, extracted, score_choices, score_generation
from .taskfile import Task, load_task

if TYPE_CHECKING:
    from trtx.engine.engine_config import EngineConfig
    from trtx.engine.outputs import RankInfo


@dataclass
class Chat:
    """Prompts rendered by the checkpoint's chat template: each document's prompt as one user
    message, after an optional system message."""
    system: str | None = None


@dataclass
class EvalResult:
    model: str
    task: str                       # the task's name
    dataset: str                    # the data file evaluated
    engine: dict                    # every engine option of the run (EngineConfig.as_dict())
    n: int
    metrics: dict[str, float]       # every metric of the task, 0-100, the primary one first
    accuracy: float                 # the primary metric
    correct: int                    # documents the primary metric counts correct
    generated_tokens: int           # generation: output tokens; multiple choice: 0
    seconds: float                  # wall time of the engine's work (not loading)
    tokens_per_s: float             # generated tokens, or with multiple choice scored tokens, per second
    steps: int = 0                  # engine steps (forwards) the work took
    spec: dict | None = None        # SpecStats.as_dict() over every request (generation with MTP)
    ranks: list[RankInfo] = field(default_factory=list)    # what each rank holds and did
    samples: list[dict] = field(default_factory=list)
    chat_template: bool = False     # prompts rendered by the checkpoint's chat template

    def as_dict(self, with_samples: bool = False) -> dict:
        d = asdict(self)
        if not with_samples:
            d.pop("samples")
        return d


def evaluate(config: EngineConfig, task: Task | Path, max_samples: int | None = None, *,
             data_path: Path | None = None, chat: Chat | None = None, timeout_s: float = 1800,
             log_dir: Path | None = None) -> EvalResult:
    """The task's first max_samples documents (all: None) on this configuration: in this process
    on one rank, else a job on tp x pp ranks through the launcher (engines.RankEngine: timeout_s,
    log_dir). Bad task data raises UserError before the engine loads or any rank starts."""
    task = task if isinstance(task, Task) else load_task(Path(task))
    docs = load_docs(task, max_samples, data_path)           # an empty split is an error there
    prompts = Prompts(config.model, chat, config.model_config.max_position_embeddings)
    if task.kind == "generate":
        call = GenerateCall([prompts.ids(d) for d in docs], task.generate.max_tokens, list(task.generate.stop))
    else:
        call = ScoreCall([prompts.pair(d, choice) for d in docs for choice in d.choices])
    engine = open_engine(config, timeout_s, log_dir)      # every prompt fits: checked above
    try:
        run = engine.run(call)
    finally:
        engine.close()
    if task.kind == "generate":
        scored = [_generation_sample(task, d, out) for d, out in zip(docs, run.outputs)]
        tokens = sum(len(out["token_ids"]) for out in run.outputs)
    else:
        scored = _choice_samples(docs, run)
        tokens = sum(len(c) for _, c in call.pairs)
    metrics = aggregate([s["metrics"] for s in scored])
    primary = task.metric_names[0]
    return EvalResult(
        model=config.model, task=task.name, dataset=os.path.normpath(data_path or task.dataset.files[task.dataset.split]),
        engine=config.as_dict(), n=len(docs), metrics=metrics, accuracy=metrics[primary],
        correct=round(sum(s["metrics"][primary] for s in scored)),
        generated_tokens=tokens if task.kind == "generate" else 0, seconds=run.seconds,
        tokens_per_s=tokens / run.seconds if run.seconds else 0.0, steps=run.steps, spec=run.spec,
        ranks=run.ranks, samples=scored, chat_template=chat is not None)


class Prompts:
    """A document's text as the token ids the engine runs, each checked to fit the model (else a
    UserError naming the data file and row): a prompt as the tokenizer encodes it (with its
    special tokens, e.g. a BOS), or rendered by the chat template; a (prompt, choice) pair as
    lm-eval's TemplateLM encodes one: the prompt's own tokens, and the tokens the whole text has
    after them (so a choice is tokenized in its context). Unlike lm-eval, whitespace at the
    prompt's end stays in the prompt: the task's continuation template says where spaces go."""

    def __init__(self, model_dir: str, chat: Chat | None, max_positions: int):
        from trtx.engine.chat_template import ChatTemplate, ChatTemplateError
        from trtx.engine.tokenizer import Tokenizer

        self.tokenizer = Tokenizer.from_dir(model_dir)
        if self.tokenizer is None:
            raise UserError("has no tokenizer.json: task prompts are text", model_dir)
        self.chat, self.template, self.max_positions = chat, None, max_positions
        if chat is not None:
            try:
                self.template = ChatTemplate.from_dir(model_dir)
            except ChatTemplateError as e:
                raise UserError(str(e)) from None
            if self.template is None:
                raise UserError("--apply-chat-template: the checkpoint has no chat template "
                                "(tokenizer_config.json's chat_template, or chat_template.jinja)", model_dir)

    def ids(self, doc: Doc) -> list[int]:
        return self._fits(doc, self._encode(doc.prompt))

    def pair(self, doc: Doc, choice: str) -> tuple[list[int], list[int]]:
        if self.template is not None:
            context, continuation = self._encode(doc.prompt), self.tokenizer.encode(choice, add_special_tokens=False)
        else:
            context = self.tokenizer.encode(doc.prompt)
            continuation = self.tokenizer.encode(doc.prompt + choice)[len(context):]
        if not continuation:
            raise doc.error(f"choice {doc.choices.index(choice)} adds no token after the prompt ({choice!r})")
        self._fits(doc, context + continuation)
        return context, continuation

    def _encode(self, prompt: str) -> list[int]:
        if self.template is None:
            return self.tokenizer.encode(prompt)
        from trtx.engine.chat_template import ChatTemplateError
        messages = ([{"role": "system", "content": self.chat.system}] if self.chat.system else []) + \
            [{"role": "user", "content": prompt}]
        try:
            return self.tokenizer.encode(self.template.render(messages), add_special_tokens=False)
        except ChatTemplateError as e:
            raise UserError(str(e)) from None

    def _fits(self, doc: Doc, ids: list[int]) -> list[int]:
        if not ids:
            raise doc.error("the prompt encodes to no token")
        if len(ids) >= self.max_positions:
            raise doc.error(f"{len(ids)} tokens, but the model takes at most {self.max_positions - 1} "
                            f"(max_position_embeddings {self.max_positions}, one left to generate)")
        return ids


def _generation_sample(task: Task, doc: Doc, out: dict) -> dict:
    return {"index": doc.index, "prompt": doc.prompt, "target": doc.target, "output": out["text"],
            "token_ids": out["token_ids"], "extracted": extracted(task, out["text"]),
            "metrics": score_generation(task, doc, out["text"])}


def _choice_samples(docs: list[Doc], run: CallResult) -> list[dict]:
    samples, outs = [], iter(run.outputs)
    for doc in docs:
        scores = [next(outs) for _ in doc.choices]
        logprobs, greedy = [sum(s["logprobs"]) for s in scores], [all(s["greedy"]) for s in scores]
        samples.append({"index": doc.index, "prompt": doc.prompt, "choices": doc.choices, "gold": doc.gold,
                        "logprobs": logprobs, "greedy": greedy, "metrics": score_choices(doc, logprobs, greedy)})
    return samples
