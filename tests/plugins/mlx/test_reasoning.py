"""A reasoning model's thinking comes apart from its answer: the splitter on text streams, and
the bundled model with a tokenizer that has think markers (two of its unused special tokens
renamed ``<think>`` / ``</think>``, so mlx-lm recognises a thinking model) and a chat template
that opens the block in the prompt unless ``enable_thinking`` is false."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import add_models, running_app, write_conf

from ddx_llm.plugins.mlx.reasoning import CONTENT, REASONING, ThinkSplitter
from ddx_llm.plugins.mlx_models.bundled import BUNDLED_MODEL_ID

CHAT = "/v1/chat/completions"


def split(pieces: list[str], *, thinking: bool) -> list[tuple[str, str]]:
    splitter = ThinkSplitter("<think>", "</think>", thinking=thinking)
    out = [item for piece in pieces for item in splitter.feed(piece)] + splitter.flush()
    merged: list[tuple[str, str]] = []
    for kind, text in out:  # adjacent pieces of one kind, joined, to compare the meaning
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + text)
        else:
            merged.append((kind, text))
    return merged


def test_a_prompt_that_opened_the_block_starts_with_thoughts():
    pieces = ["Let me", " think.</th", "ink>\n\nParis", "."]
    assert split(pieces, thinking=True) == [(REASONING, "Let me think."), (CONTENT, "\n\nParis.")]


def test_a_model_that_opens_the_block_itself_and_markers_split_across_pieces():
    pieces = ["<thi", "nk>hmm</think>", "Yes", " <think"]
    assert split(pieces, thinking=False) == [(REASONING, "hmm"), (CONTENT, "Yes <think")]


def test_without_markers_everything_is_the_answer_and_nothing_is_held_for_long():
    splitter = ThinkSplitter("<think>", "</think>", thinking=False)
    assert splitter.feed("plain text") == [(CONTENT, "plain text")]
    assert splitter.feed(" a <") == [(CONTENT, " a ")]  # "<" may begin a marker
    assert splitter.flush() == [(CONTENT, "<")]


TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is not defined or enable_thinking %}<think>\n{% endif %}{% endif %}"
)


@pytest.fixture(scope="module")
def thinking_model(mlx_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model with think markers: special tokens 3 and 4 renamed."""
    folder = tmp_path_factory.mktemp("thinking") / "smollm2-thinking"
    shutil.copytree(mlx_models_dir / BUNDLED_MODEL_ID, folder)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    renamed = {3: "<think>", 4: "</think>"}
    for token in tokenizer["added_tokens"]:
        if token["id"] in renamed:
            old, token["content"], token["special"] = token["content"], renamed[token["id"]], False
            tokenizer["model"]["vocab"][token["content"]] = tokenizer["model"]["vocab"].pop(old)
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    for token_id, content in renamed.items():
        config.get("added_tokens_decoder", {}).get(str(token_id), {}).update(
            content=content, special=False
        )
    config["chat_template"] = TEMPLATE
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.model
@pytest.mark.anyio
async def test_thinking_goes_to_reasoning_content_unless_turned_off(mlx_conf, thinking_model):
    add_models(mlx_conf, {
        "id": "thinker", "family": "smollm2", "arch": "llama", "total_params_b": 0.135,
        "quantization": "q4", "context_window": 2048, "label": "thinker",
        "path": str(thinking_model),
    })  # fmt: skip
    write_conf(mlx_conf, {"core": {"default_model": "thinker"}})
    # the end tokens banned: the model writes 5 tokens whatever the renamed markers mean to it
    ask = {
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 5,
        "temperature": 0,
        "logit_bias": {"0": -100, "2": -100},
    }
    async with running_app(mlx_conf) as (_, client):
        thinking = (await client.post(CHAT, json=ask)).json()
        plain = await client.post(
            CHAT, json={**ask, "chat_template_kwargs": {"enable_thinking": False}}
        )
        wrong = await client.post(CHAT, json={**ask, "chat_template_kwargs": "off"})
    message = thinking["choices"][0]["message"]
    assert message["reasoning_content"], message  # the block never closed in 5 tokens
    assert message["content"] == "" and thinking["choices"][0]["finish_reason"] == "length"
    assert "<think>" not in message["reasoning_content"]
    plain_message = plain.json()["choices"][0]["message"]
    assert plain_message["content"] and "reasoning_content" not in plain_message
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["field"] == "chat_template_kwargs"
