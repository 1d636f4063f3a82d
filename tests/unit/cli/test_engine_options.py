"""`trtx eval`'s engine options are made from EngineConfig's fields: one declaration each."""
from click.testing import CliRunner

from trtx.cli.cmd_eval import eval_cmd
from trtx.cli.main import cli
from trtx.engine.engine_config import options


def test_each_command_line_engine_option_is_the_config_field():
    params = {p.name: p for p in eval_cmd.params}
    on_cli = [f for f in options() if f.metadata["flags"] is not None]
    assert {"tensor_parallel_size", "pipeline_parallel_size", "attention_dp", "mtp_nextn",
            "decode_graphs"} <= {f.name for f in on_cli}
    for f in on_cli:
        p = params[f.name]
        assert p.help == f.metadata["help"] and p.default == f.default, f.name
        assert set(p.opts) == {"--" + f.name.replace("_", "-"), *f.metadata["flags"]}, f.name


def test_out_of_range_values_are_refused_by_the_command_line():
    res = CliRunner().invoke(cli, ["eval", "--mtp-nextn", "9"])
    assert res.exit_code == 2 and "0<=x<=8" in res.output
    res = CliRunner().invoke(cli, ["eval", "--warmup-oom", "retry"])
    assert res.exit_code == 2 and "'retry' is not one of 'skip', 'stop'" in res.output


def test_a_rule_between_options_is_one_line_before_anything_runs():
    res = CliRunner().invoke(cli, ["eval", "--graphs", "--pp", "2"])
    assert res.exit_code == 2 and res.stderr == "Error: decode graphs need pp 1 (pipeline stages exchange " \
                                                "micro-batches between forwards)\n"
