"""A checkpoint the engine cannot use is a one-line error that names the file and the tensor."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers.checkpoints import make_checkpoint
from trtx.engine import LLM
from trtx.engine.checkpoint import CheckpointError
from trtx.engine.config import ConfigError, ModelConfig


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("good"))


def _copy(src, dst, edit_config=None, edit_tensors=None):
    dst.mkdir()
    config = json.loads((src / "config.json").read_text())
    if edit_config:
        edit_config(config)
    (dst / "config.json").write_text(json.dumps(config))
    tensors = load_file(src / "model.safetensors")
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, dst / "model.safetensors")
    return dst


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_unsupported_architecture(good, tmp_path):
    bad = _copy(good, tmp_path / "m", edit_config=lambda c: c.update(architectures=["GPT2LMHeadModel"]))
    with pytest.raises(ConfigError) as err:
        LLM(bad)
    msg = _one_line(err)
    assert "config.json" in msg and "GPT2LMHeadModel" in msg and "LlamaForCausalLM" in msg


def test_missing_tensor_is_named(good, tmp_path):
    bad = _copy(good, tmp_path / "m", edit_tensors=lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError) as err:
        LLM(bad, num_kv_blocks=8)
    assert "missing tensor 'model.layers.1.mlp.up_proj.weight'" in _one_line(err)


def test_shape_mismatch_is_named(good, tmp_path):
    def shrink(t):
        t["model.layers.2.self_attn.k_proj.weight"] = t["model.layers.2.self_attn.k_proj.weight"][:16]
    bad = _copy(good, tmp_path / "m", edit_tensors=shrink)
    with pytest.raises(CheckpointError) as err:
        LLM(bad, num_kv_blocks=8)
    msg = _one_line(err)
    assert "model.layers.2.self_attn.k_proj.weight" in msg and "(32, 64)" in msg and "(16, 64)" in msg


def test_unexpected_tensor_is_named(good, tmp_path):
    bad = _copy(good, tmp_path / "m", edit_tensors=lambda t: t.update({"model.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError) as err:
        LLM(bad, num_kv_blocks=8)
    assert "unexpected tensor 'model.extra.weight'" in _one_line(err)


def test_bad_json_names_file_and_line(tmp_path):
    (tmp_path / "config.json").write_text('{\n  "hidden_size": 64,\n  oops\n}')
    with pytest.raises(ConfigError) as err:
        ModelConfig.from_dir(tmp_path)
    assert f"{tmp_path / 'config.json'}:3:" in _one_line(err)


def test_unsupported_activation_and_rope(tmp_path):
    base = {"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2}
    with pytest.raises(ConfigError, match="hidden_act 'gelu'"):
        ModelConfig.from_dict({**base, "hidden_act": "gelu"})
    with pytest.raises(ConfigError, match="rope scaling type 'yarn'"):
        ModelConfig.from_dict({**base, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})


def test_old_and_new_rope_fields_mean_the_same():
    base = {"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2}
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    old = ModelConfig.from_dict({**base, "rope_theta": 500000.0, "rope_scaling": scaling})
    new = ModelConfig.from_dict({**base, "rope_parameters": {**scaling, "rope_theta": 500000.0}})
    assert old.rope == new.rope and old.rope.theta == 500000.0 and old.rope.rope_type == "llama3"


def test_generation_config_eos_ids(good, tmp_path):
    m = _copy(good, tmp_path / "m")
    (m / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    assert ModelConfig.from_dir(m).eos_token_ids == (2, 7)
