"""EngineConfig: every engine option declared once, checked once when the configuration is built,
and sent to ranks as data."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trtx.engine import LLM
from trtx.engine.engine_config import EngineConfig, options
from trtx.engine.errors import ConfigError

MODEL = Path(__file__).resolve().parents[3] / "models" / "tiny-arith"


@pytest.mark.parametrize("options_,message", [
    ({"mtp_nextn": 9}, "mtp_nextn must be between 0 and 8, got 9"),
    ({"max_num_seqs": 0}, "max_num_seqs must be >= 1, got 0"),
    ({"max_num_seqs": "8"}, "max_num_seqs must be an integer, got '8'"),
    ({"mtp_nextn": True}, "mtp_nextn must be an integer, got True"),
    ({"warmup": 1}, "warmup must be True or False, got 1"),
    ({"on_warmup_oom": "retry"}, "on_warmup_oom must be one of skip, stop, got 'retry'"),
    ({"dtype": "int8"}, "unsupported dtype 'int8'"),
    ({"num_kv_blocks": 1}, "num_kv_blocks must be >= 2, got 1"),
    ({"device": 3.5}, "device 3.5 is not a torch device"),
    ({"faults": 123}, "faults must be a TRTX_FAULTS string, got 123"),
    ({"attention_dp": True, "pipeline_parallel_size": 2}, "attention data parallelism runs on one pipeline stage"),
    ({"decode_graphs": True, "pipeline_parallel_size": 2}, "decode graphs need pp 1"),
    ({"attention_dp": True, "tensor_parallel_size": 2, "pipeline_parallel_size": 2},
     "attention data parallelism runs on one pipeline stage"),
    ({"tensor_parallel_size": 3}, "tp size 3"),
    ({"faults": "no_such_fault"}, "TRTX_FAULTS names unknown fault 'no_such_fault'"),
])
def test_a_bad_option_is_one_config_error_naming_it(options_, message):
    with pytest.raises(ConfigError, match=message):
        EngineConfig(MODEL, **options_)


def test_an_unknown_option_is_a_type_error_listing_the_known_ones():
    with pytest.raises(TypeError, match="unknown engine option.*enable_attention_dp.*known: .*attention_dp"):
        LLM(MODEL, enable_attention_dp=True)


def test_values_are_normalised_once():
    c = EngineConfig(MODEL, dtype=torch.bfloat16, device=torch.device("cpu"), decode_graphs=True, attention_dp=True,
                     max_num_seqs=np.int64(8))
    assert (c.dtype, c.device, c.warmup) == ("bfloat16", "cpu", True)      # graphs are captured in warmup
    assert type(c.max_num_seqs) is int and EngineConfig(MODEL, dtype="bf16") == EngineConfig(MODEL, dtype="bfloat16")
    assert c.attention_dp is False                                          # one rank shares with no one
    assert c.model_config.dtype == torch.bfloat16


def test_the_configuration_travels_as_data(monkeypatch):
    monkeypatch.setenv("TRTX_FAULTS", "idle_rank@1:30,all_rank_stats")
    sent = EngineConfig(MODEL, tensor_parallel_size=2, attention_dp=True, mtp_nextn=2, warmup=True)
    monkeypatch.delenv("TRTX_FAULTS")                   # the faults were read once, when it was built
    received = EngineConfig.from_dict(json.loads(json.dumps(sent.as_dict())))
    assert received == sent and received.faults.get("idle_rank", 1).arg == "30"
    assert received.faults.spec == "idle_rank@1:30,all_rank_stats"
    assert received.faults.get("idle_rank", 0) is None and received.faults.get("all_rank_stats", 0)


def test_every_option_has_its_help_and_a_default_that_passes_its_own_checks():
    fields = options()
    assert {f.name for f in fields} == {f.name for f in dataclasses.fields(EngineConfig)} - {"model", "faults",
                                                                                              "model_config"}
    for f in fields:
        assert f.metadata["help"].endswith("."), f.name
    EngineConfig(MODEL)                                 # every default at once


def test_readme_names_every_engine_option():
    readme = (MODEL.parents[1] / "README.md").read_text()
    assert [f.name for f in options() if f"`{f.name}`" not in readme] == []
