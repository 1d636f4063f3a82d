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


# Chat templates in the styles of three model families' releases (written for these tests, not
# copied): Llama 3 (headers, eot, bos in the template), Qwen2 (im_start/im_end and a default
# system prompt) and Mistral (alternating [INST] turns, raise_exception on anything else).
CHAT_TEMPLATES = {
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
        " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
        "{{ content }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    "qwen2": (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    "mistral": (
        "{{ bos_token }}{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
        "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"),
    # What the three above do not reach: block whitespace control over several lines, tojson,
    # namespace, loop controls and a generation block.
    "features": (
        "{%- set ns = namespace(system='') -%}\n"
        "{% for m in messages %}\n"
        "  {% if m['role'] == 'system' %}{% set ns.system = m['content'] %}{% continue %}{% endif %}\n"
        "  <{{ m['role'] }}>{{ m | tojson }}\n"
        "  {% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}{% endgeneration %}{% endif %}\n"
        "{% endfor %}\n"
        "{% if ns.system %}[system: {{ ns.system }}]{% endif %}\n"
        "{% if add_generation_prompt %}<assistant>{% endif %}"),
}
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def make_release_checkpoint(model_dir: Path, template: str = "llama3", seed: int = 0) -> Path:
    """A random Llama checkpoint laid out like a Llama 3 instruct release: tokenizer.json with the
    release's special tokens added (and a post-processor that puts BOS first), tokenizer_config.json
    with its chat template and special tokens, generation_config.json with two eos ids."""
    from tokenizers import Tokenizer, processors

    make_checkpoint(model_dir, "llama", seed)
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.add_special_tokens(LLAMA3_SPECIALS)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)])
    tok.save(str(model_dir / "tokenizer.json"))
    eot, eos = tok.token_to_id("<|eot_id|>"), tok.token_to_id("<|end_of_text|>")
    (model_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
        "eos_token": {"__type": "AddedToken", "content": "<|eot_id|>", "special": True}, "chat_template": CHAT_TEMPLATES[template]}))
    (model_dir / "generation_config.json").write_text(json.dumps({"bos_token_id": bos, "eos_token_id": [eos, eot]}))
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(dict(config, bos_token_id=bos, eos_token_id=eos)))
    return model_dir
