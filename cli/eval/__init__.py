"""Evaluating an engine configuration on a task. taskfile (task files), documents (their rows as
prompts, few-shot examples and choices), metrics (answer filters, acc and acc_norm), engines (the
engine in this process or on tp x pp ranks, and the calls it runs), rank (what each rank of a job
runs: `python -m trtx.cli.eval.rank`), evaluate (one configuration on one task: EvalResult), gate
(the metric and acceptance gates, and the references they compare with), models (bundled models
and tasks by name), lm_eval_model / lm_eval_task (lm-evaluation-harness on the same engines)."""
