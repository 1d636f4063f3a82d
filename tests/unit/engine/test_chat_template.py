"""Chat templates (engine/chat_template.py) against transformers' apply_chat_template: the same
text and token ids for Llama 3, Qwen2 and Mistral style templates and one that uses the jinja
features templates rely on, written into checkpoints laid out like a release; the same errors
for conversations a template refuses; and a checkpoint without a template says so."""
import json

import pytest

from tests.helpers.checkpoints import CHAT_TEMPLATES, make_checkpoint, make_release_checkpoint
from trtx.engine import LLM
from trtx.engine.chat_template import ChatTemplate, ChatTemplateError

CHATS = [
    [{"role": "user", "content": "What is 2+3?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "  Sum 4 and 5.  "}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
     {"role": "user", "content": "Count: \"1, 2\" & <3>", "name": None}],
]


@pytest.fixture(scope="module", params=list(CHAT_TEMPLATES))
def release(request, tmp_path_factory):
    import transformers
    model = make_release_checkpoint(tmp_path_factory.mktemp(request.param), request.param)
    return model, transformers.AutoTokenizer.from_pretrained(model), LLM(model, num_kv_blocks=16)


@pytest.mark.parametrize("chat", range(len(CHATS)))
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_text_and_tokens_match_transformers(release, chat, generation_prompt):
    model, hf, llm = release
    messages = CHATS[chat]
    try:
        expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as e:               # the template refuses this conversation: so must we
        with pytest.raises(ChatTemplateError, match=str(e).splitlines()[0][:40]):
            llm.apply_chat_template(messages, generation_prompt)
        return
    assert ChatTemplate.from_dir(model).render(messages, generation_prompt) == expected
    ids = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt, return_dict=False)
    assert llm.apply_chat_template(messages, generation_prompt) == list(ids)


def test_a_release_checkpoint_stops_at_either_eos_and_starts_with_bos(tmp_path):
    model = make_release_checkpoint(tmp_path)
    llm = LLM(model, num_kv_blocks=16)
    assert len(llm.model_config.eos_token_ids) == 2
    assert llm.tokenizer.encode("Hi")[0] == llm.tokenizer.encode("<|begin_of_text|>", add_special_tokens=False)[0]
    ids = llm.apply_chat_template(CHATS[0])
    assert ids.count(ids[0]) == 1, "the template's BOS only, none added by the tokenizer"


def test_named_templates_syntax_errors_and_no_template(tmp_path):
    model = make_checkpoint(tmp_path / "plain")
    assert ChatTemplate.from_dir(model) is None
    with pytest.raises(ValueError, match="has no chat template"):
        LLM(model, num_kv_blocks=16).apply_chat_template(CHATS[0])
    config = model / "tokenizer_config.json"
    config.write_text(json.dumps({"chat_template": [{"name": "tool_use", "template": "x"},
                                                    {"name": "default", "template": "{{ messages[0]['content'] }}!"}]}))
    assert ChatTemplate.from_dir(model).render(CHATS[0]) == "What is 2+3?!"
    config.write_text(json.dumps({"chat_template": [{"name": "tool_use", "template": "x"}]}))
    with pytest.raises(ChatTemplateError, match="names no 'default' template \\(has: tool_use\\)"):
        ChatTemplate.from_dir(model)
    (model / "chat_template.jinja").write_text("{% for m in messages %}\n{{ m['content'] }\n{% endfor %}")
    with pytest.raises(ChatTemplateError, match="chat_template.jinja: chat template line 2: unexpected '}'"):
        ChatTemplate.from_dir(model).render(CHATS[0])
