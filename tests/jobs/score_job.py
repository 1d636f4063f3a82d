"""One rank of a job that scores (context, continuation) pairs with LLM.score and writes what it
got, so a test can compare every rank's scores with transformers':

    python score_job.py MODEL_DIR TP PP ADP PAIRS.json OUT_DIR      (ADP: 0 or 1)

PAIRS.json holds [[context ids, continuation ids], ...]; each rank writes OUT_DIR/rank-R.json,
[[logprobs, greedy flags], ...] in pair order.
"""
import json
import os
import sys
from pathlib import Path

from trtx.engine import LLM

model, tp, pp, adp, pairs, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5], sys.argv[6]
llm = LLM(model, tensor_parallel_size=tp, pipeline_parallel_size=pp, attention_dp=adp, block_size=4)
scores = llm.score([tuple(p) for p in json.loads(Path(pairs).read_text())])
Path(out, f"rank-{os.environ['RANK']}.json").write_text(json.dumps([[s.logprobs, s.greedy] for s in scores]))
llm.shutdown()
