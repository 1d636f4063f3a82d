"""What the tests share: checkpoints.py (random checkpoints written by transformers), engine.py (the
bundled model and one-rank runs, from the engine alone) and ranks.py (real multi-rank jobs, through
the harness's launcher)."""
