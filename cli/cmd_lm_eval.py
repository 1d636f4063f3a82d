"""`trtx lm-eval ...`: lm-evaluation-harness's own command line, with trtx's model registered."""
from __future__ import annotations

import importlib
import sys

import click

from .errors import UserError


@click.command("lm-eval", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                            "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def lm_eval_cmd(args):
    """lm-evaluation-harness with the bundled engine as `--model trtx` (all arguments go to lm_eval).

    \b
    trtx lm-eval run --model trtx --model_args pretrained=DIR,tp=2,mtp_nextn=2 --tasks gsm8k
    trtx lm-eval --help              lm_eval's own help

    lm_eval finds models only in its registry, which its own command cannot extend: this is that
    command with the model registered (cli/eval/lm_eval_model.py). Needs `pip install trtx[lm-eval]`.
    To gate an lm-eval task's metric like a task file's, use `trtx eval --lm-eval TASK`."""
    try:
        from lm_eval.__main__ import cli_evaluate
        importlib.import_module(f"{__package__}.eval.lm_eval_model")      # registers "trtx"
    except ImportError:
        raise UserError("trtx lm-eval needs lm-evaluation-harness: pip install 'trtx[lm-eval]'") from None
    sys.argv = ["lm_eval", *args]
    cli_evaluate()
