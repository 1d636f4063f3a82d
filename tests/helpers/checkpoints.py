"""Small random checkpoints written by `transformers`, the reference the engine is tested against."""
from __future__ import annotations

import functools
import importlib.util
import json
import string
import sys
from pathlib import Path

import torch

CHARS = string.ascii_letters + string.digits + string.punctuation + " \n"   # printable ASCII
TRAINING_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_tiny_model.py"


@functools.cache
def training_script():
    """scripts/train_tiny_model.py as a module, loaded by its path (scripts/ is no package): it
    defines the bundled model's kind of checkpoint."""
    spec = importlib.util.spec_from_file_location("train_tiny_model", TRAINING_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module           # as an import would (dataclasses look it up there)
    spec.loader.exec_module(module)
    return module


def write_char_tokenizer(model_dir: Path) -> None:
    """A tokenizer.json whose tokens are single characters (ids beyond them stay unused)."""
    training_script().write_tokenizer(model_dir, CHARS)


ARCHS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
}

BASE = dict(vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2)


def make_checkpoint(model_dir: Path, arch: str = "llama", seed: int = 0, dtype=torch.float32,
                    max_shard_size: str | None = None, **overrides) -> Path:
    """Save a randomly initialised HF model of `arch` with BASE + overrides as its config."""
    import transformers

    config_cls, model_cls = (getattr(transformers, n) for n in ARCHS[arch])
    torch.manual_seed(seed)
    config = config_cls(**{**BASE, **overrides})
    model = model_cls(config).to(dtype).eval()
    # Random init leaves norms at 1 and biases at 0; perturb them so a wrong load cannot pass.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(model_dir, **kwargs)
    write_char_tokenizer(model_dir)
    return model_dir


def load_reference(model_dir: Path, dtype=torch.float32):
    import transformers

    arch = json.loads((model_dir / "config.json").read_text())["architectures"][0]
    return getattr(transformers, arch).from_pretrained(model_dir, dtype=dtype).eval()


def make_mtp_checkpoint(model_dir: Path, seed: int = 0, init_std: float = 0.3, **overrides) -> Path:
    """A random checkpoint of the bundled model's kind (Llama + one MTP module), written by the
    training script itself (scripts/train_tiny_model.py), with a larger init than training uses
    so that greedy choices have clear margins."""
    t = training_script()
    config = {**t.CONFIG, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, **overrides}
    torch.manual_seed(seed)
    model_dir.mkdir(parents=True, exist_ok=True)
    tok = t.write_tokenizer(model_dir)
    model = t.TrainModel(config, tok.get_vocab_size())
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * init_std if p.dim() == 2 else 1 + 0.1 * torch.randn_like(p))
    t.save(model, tok, model_dir, tok.get_vocab_size())
    return model_dir
