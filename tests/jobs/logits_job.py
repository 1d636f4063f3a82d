"""One rank of a tp x pp job that saves the context logits of a few prompts (ranks.prompts_of) on
the last stage's first rank, which computes them, then leaves the job and prints the
torch.distributed backend threads still alive (there must be none: see Parallel.shutdown):

    python logits_job.py MODEL_DIR TP PP OUT.pt [NUM_PROMPTS]
"""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from ranks import prompts_of  # noqa: E402

from trtx.engine import LLM, SamplingParams  # noqa: E402

model, tp, pp, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
n = int(sys.argv[5]) if len(sys.argv) > 5 else 8
llm = LLM(model, tensor_parallel_size=tp, pipeline_parallel_size=pp)
outs = llm.generate(prompts_of(Path(model), n), SamplingParams(max_tokens=1, return_context_logits=True))
m = llm.parallel.mapping
if m.rank == m.last_stage_root:
    torch.save([o.context_logits for o in outs], out)
llm.shutdown()
threads = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
backend = sorted(t for t in threads if "gloo" in t or "nccl" in t.lower())
print(f"backend threads after shutdown: {', '.join(backend) or 'none'}", flush=True)
