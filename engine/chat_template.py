"""A checkpoint's chat template, rendered as transformers' `apply_chat_template` renders it.

The template is jinja2 source from `chat_template.jinja` beside the tokenizer or, failing that,
the `chat_template` of `tokenizer_config.json` (a string, or a list of named templates, of which
"default" is used). It sees what transformers passes: `messages` (role and content dicts, keys
whose value is None dropped), `add_generation_prompt`, and the special tokens of
tokenizer_config.json as text (`bos_token`, `eos_token`, ...). The environment matches
transformers' in what changes the text: a sandbox, `trim_blocks` and `lstrip_blocks`, loop
controls, `tojson` without HTML escaping, `raise_exception`, `strftime_now`, and a
`{% generation %}` block that renders its body. The rendered text carries its special tokens
itself, so it is tokenized without the tokenizer adding any (Tokenizer.encode(...,
add_special_tokens=False)).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class ChatTemplateError(ValueError):
    """A template that cannot be read, parsed or rendered; the message names its file."""


@dataclass(frozen=True)
class ChatTemplate:
    source: str                            # the jinja2 text
    origin: str                            # the file it came from, for messages
    special_tokens: dict[str, str]         # bos_token, eos_token, ... as text

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "ChatTemplate | None":
        """The checkpoint's chat template, or None when it has none."""
        model_dir = Path(model_dir)
        config_path = model_dir / "tokenizer_config.json"
        config = {}
        if config_path.exists():
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise ChatTemplateError(f"{config_path}: not valid JSON ({e})") from None
        special = {name: _token_text(config[name]) for name in SPECIAL_TOKENS if config.get(name) is not None}
        jinja_path = model_dir / "chat_template.jinja"
        if jinja_path.exists():
            return cls(jinja_path.read_text(encoding="utf-8"), str(jinja_path), special)
        source = config.get("chat_template")
        if source is None:
            return None
        if isinstance(source, list):            # named templates: [{"name": ..., "template": ...}]
            named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
            if "default" not in named:
                raise ChatTemplateError(f"{config_path}: chat_template names no 'default' template "
                                        f"(has: {', '.join(map(str, named)) or 'none'})")
            source = named["default"]
        if not isinstance(source, str):
            raise ChatTemplateError(f"{config_path}: chat_template must be a string or a list of named templates")
        return cls(source, str(config_path), special)

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The conversation as the model's prompt text; with add_generation_prompt, ending where
        the assistant's reply starts."""
        if not messages:
            raise ChatTemplateError("a chat needs at least one message")
        messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
        try:
            return _compile(self.source).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                                **self.special_tokens)
        except Exception as e:
            import jinja2
            if isinstance(e, jinja2.TemplateSyntaxError):
                raise ChatTemplateError(f"{self.origin}: chat template line {e.lineno}: {e.message}") from None
            if isinstance(e, jinja2.TemplateError):
                raise ChatTemplateError(f"{self.origin}: the chat template failed: {e}") from None
            raise


def _token_text(token) -> str:
    """A special token as tokenizer_config.json writes it: text, or an AddedToken's dict."""
    return token["content"] if isinstance(token, dict) else str(token)


_compiled: dict[str, object] = {}


def _compile(source: str):
    if source not in _compiled:
        _compiled[source] = _environment().from_string(source)
    return _compiled[source]


def _environment():
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` marks the assistant's tokens for training
        masks; rendering keeps its body as it is."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    return env
