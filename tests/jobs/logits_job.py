"""One rank of a tp x pp job that saves the context logits of the prompts in PROMPTS.json (a JSON
list of strings: the tests write tests.helpers.engine.prompts_of there) on the last stage's first
rank, which computes them, then leaves the job and prints the torch.distributed backend threads
still alive (there must be none: see Parallel.shutdown):

    python logits_job.py MODEL_DIR TP PP OUT.pt PROMPTS.json
"""
import json
import os
import sys
from pathlib import Path

import torch

from trtx.engine import LLM, SamplingParams

model, tp, pp, out, prompts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
llm = LLM(model, tensor_parallel_size=tp, pipeline_parallel_size=pp)
outs = llm.generate(json.loads(Path(prompts).read_text()), SamplingParams(max_tokens=1, return_context_logits=True))
m = llm.parallel.mapping
if m.rank == m.last_stage_root:
    torch.save([o.context_logits for o in outs], out)
llm.shutdown()
threads = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
backend = sorted(t for t in threads if "gloo" in t or "nccl" in t.lower())
print(f"backend threads after shutdown: {', '.join(backend) or 'none'}", flush=True)
