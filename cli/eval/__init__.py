"""Evaluating an engine configuration. models (the bundled models, by name), evalset (eval sets
and grading), evaluate (one configuration on one rank or on tp x pp ranks: EvalResult), rank (what
each rank of a multi-rank eval runs: `python -m trtx.cli.eval.rank`) and gate (the accuracy and
acceptance gates, and the references they compare with)."""
