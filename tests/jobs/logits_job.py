"""One rank of a tp x pp job that prints nothing and saves the context logits of the first
prompts of the bundled eval set (on the last stage's first rank, which computes them):

    python logits_job.py MODEL_DIR TP PP OUT.pt [NUM_PROMPTS]
"""
import json
import sys
from pathlib import Path

import torch

from trtx.engine import LLM, SamplingParams

model, tp, pp, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
n = int(sys.argv[5]) if len(sys.argv) > 5 else 8
with open(Path(model) / "eval.jsonl") as f:
    prompts = [json.loads(line)["prompt"] for line, _ in zip(f, range(n))]
llm = LLM(model, tensor_parallel_size=tp, pipeline_parallel_size=pp)
outs = llm.generate(prompts, SamplingParams(max_tokens=1, return_context_logits=True))
m = llm.parallel.mapping
if m.rank == m.last_stage_root:
    torch.save([o.context_logits for o in outs], out)
llm.shutdown()
