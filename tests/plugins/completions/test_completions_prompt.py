"""What the model sees of a completion's prompt: ``[completions] prompt`` against the backend's
abilities, decided at start-up; and, on the real model, a prompt that reaches it as it is."""

from __future__ import annotations

from typing import Any

import pytest
from support import add_models, running_app, write_conf

from ddx_llm import hookimpl
from ddx_llm.backend import BackendBase, Delta, Prompt, Usage
from ddx_llm.config import ConfigError
from ddx_llm.factory import create_app
from ddx_llm.plugins.completions import takes_raw_prompts

pytestmark = pytest.mark.anyio

PATH = "/v1/completions"
MODEL = "mlx-community/Qwen3-4B-Instruct-2507-4bit"


class Recording(BackendBase):
    """A backend with real models (as far as the core knows) that keeps every chat request it
    is asked to generate and answers ``ok``."""

    name = "recording"

    def __init__(self, raw_prompts: bool | None, real_model_mode: bool = True) -> None:
        if raw_prompts is not None:
            self.raw_prompts = raw_prompts
        self.real_model_mode = real_model_mode
        self.requests: list[Any] = []

    async def load(self, entry):
        return entry

    async def unload(self, handle):
        return None

    async def prepare(self, handle, entry, request):
        self.requests.append(request)
        return Prompt(tokens=3)

    async def generate(self, handle, entry, prompt, request):
        yield Delta(content="ok", tokens=1)
        yield Delta(finish_reason="stop", usage=Usage(3, 1))


class Offer:
    """A plugin offering one backend object under the name ``recording``."""

    def __init__(self, backend: Recording) -> None:
        self.backend = backend

    @hookimpl
    def ddx_llm_backends(self):
        return {"recording": lambda app: self.backend}


def conf_with(conf_dir, backend: str = "mock", **completions: Any):
    sections = {
        "core": {"backend": backend},
        "completions": {"enabled": True, **completions},
        "mock": {"scenario": "echo"},
    }
    write_conf(conf_dir, sections)
    return conf_dir


@pytest.mark.parametrize(
    ("declared", "real", "expected"),
    [(None, False, True), (None, True, False), (True, True, True), (False, False, False)],
)
def test_who_takes_raw_prompts(declared, real, expected):
    assert takes_raw_prompts(Recording(declared, real)) is expected


def test_raw_prompts_on_a_templating_backend_stop_start_up(conf_dir):
    """A backend with real models that does not declare raw prompts (omni, a third-party
    one) renders every prompt through a chat template: start-up stops, naming the fix."""
    conf_with(conf_dir, backend="recording")
    offer = (("offer", Offer(Recording(raw_prompts=None))),)
    with pytest.raises(
        ConfigError, match=r'prompt = "raw": the recording backend renders every'
    ) as caught:
        create_app(conf_dir, extra_plugins=offer)
    assert 'set prompt = "template"' in str(caught.value)


def test_the_mlx_backend_takes_raw_prompts(conf_dir):
    conf_with(conf_dir, backend="mlx")
    app = create_app(conf_dir)
    assert PATH in [getattr(route, "path", None) for route in app.context.routes]


def test_off_it_asks_nothing_of_the_backend(conf_dir):
    write_conf(conf_dir, {"core": {"backend": "mlx"}, "completions": {"prompt": "raw"}})
    app = create_app(conf_dir)
    assert PATH not in [getattr(route, "path", None) for route in app.context.routes]


def test_template_mode_serves_on_a_templating_backend(conf_dir):
    conf_with(conf_dir, backend="mlx", prompt="template")
    app = create_app(conf_dir)
    assert PATH in [getattr(route, "path", None) for route in app.context.routes]


async def test_a_backend_declaring_raw_prompts_gets_them_marked(conf_dir):
    backend = Recording(raw_prompts=True)
    conf_with(conf_dir, backend="recording")
    async with running_app(conf_dir, extra_plugins=(("offer", Offer(backend)),)) as (_, client):
        response = await client.post(PATH, json={"model": MODEL, "prompt": "The sky is"})
    assert response.status_code == 200
    assert response.json()["choices"][0]["text"] == "ok"
    (chat,) = backend.requests
    assert chat.model_extra["raw_prompt"] is True
    assert [(m.role, m.text()) for m in chat.messages] == [("user", "The sky is")]
    assert chat.max_tokens == 16


async def test_template_mode_sends_a_plain_chat_turn_and_clients_cannot_mark_it(conf_dir):
    backend = Recording(raw_prompts=False)
    conf_with(conf_dir, backend="recording", prompt="template")
    async with running_app(conf_dir, extra_plugins=(("offer", Offer(backend)),)) as (_, client):
        body = {"model": MODEL, "prompt": "The sky is", "raw_prompt": True, "mock": {"x": 1}}
        assert (await client.post(PATH, json=body)).status_code == 200
    (chat,) = backend.requests
    assert "raw_prompt" not in chat.model_extra  # only the plugin marks a prompt raw
    assert chat.model_extra["mock"] == {"x": 1}  # vendor fields go on


def test_a_no_model_backend_that_declines_raw_prompts_stops_start_up(conf_dir):
    conf_with(conf_dir, backend="recording")
    backend = Recording(raw_prompts=False, real_model_mode=False)
    with pytest.raises(ConfigError, match="recording backend"):
        create_app(conf_dir, extra_plugins=(("offer", Offer(backend)),))


IDENTITY_TEMPLATE = "{{ messages[0]['content'] }}"


@pytest.mark.model
async def test_on_mlx_an_identity_template_gives_the_model_the_prompt_as_it_is(
    conf_dir, mlx_models_dir
):
    """``prompt = "template"`` with a registry entry whose chat template is the identity: the
    model continues the prompt, which reaches it unchanged (its token count is the
    tokenizer's own count of the text)."""
    write_conf(
        conf_dir,
        {
            "core": {"backend": "mlx", "models_dir": str(mlx_models_dir)},
            "completions": {"enabled": True, "prompt": "template"},
        },
    )
    add_models(
        conf_dir,
        {
            "id": "SmolLM2-135M-raw",
            "owned_by": "HuggingFaceTB",
            "family": "smollm2",
            "arch": "llama",
            "total_params_b": 0.135,
            "quantization": "Q4_1",
            "context_window": 8192,
            "label": "SmolLM2 135M, raw prompts (identity template)",
            "options": {
                "bundled": "SmolLM2-135M-Instruct",
                "tokenizer_config": {"chat_template": IDENTITY_TEMPLATE},
            },
        },
    )
    write_conf(conf_dir, {"core": {"default_model": "SmolLM2-135M-raw"}})
    from mlx_lm.utils import load_tokenizer

    from ddx_llm.plugins.mlx_models.bundled import BUNDLED_MODEL_ID

    tokenizer = load_tokenizer(mlx_models_dir / BUNDLED_MODEL_ID)
    prompt = "The capital of France is"
    async with running_app(conf_dir) as (_, client):
        body = {"model": "SmolLM2-135M-raw", "prompt": prompt, "max_tokens": 3, "temperature": 0}
        response = await client.post(PATH, json=body)
    assert response.status_code == 200, response.text
    completion = response.json()
    assert completion["usage"]["prompt_tokens"] == len(tokenizer.encode(prompt))
    assert completion["usage"]["completion_tokens"] == 3
    assert completion["choices"][0]["finish_reason"] == "length"
    assert completion["choices"][0]["text"].strip()


@pytest.mark.model
async def test_on_mlx_a_raw_prompt_reaches_the_model_as_it_is(conf_dir, mlx_models_dir):
    """``prompt = "raw"`` (the default) on mlx: the prompt is tokenized as it is — its token
    count is the tokenizer's own count of the text, not the chat template's — and the model
    continues it."""
    from mlx_lm.utils import load_tokenizer

    from ddx_llm.plugins.mlx_models.bundled import BUNDLED_MODEL_ID

    write_conf(
        conf_dir,
        {
            "core": {"backend": "mlx", "models_dir": str(mlx_models_dir)},
            "completions": {"enabled": True},
        },
    )
    tokenizer = load_tokenizer(mlx_models_dir / BUNDLED_MODEL_ID)
    prompt = "The capital of France is"
    async with running_app(conf_dir) as (_, client):
        body = {"prompt": prompt, "max_tokens": 3, "temperature": 0}
        response = await client.post(PATH, json=body)
        # a chat client cannot send several messages as one raw prompt
        chat = {"messages": [{"role": "user", "content": "a"}] * 2, "raw_prompt": True}
        refused = await client.post("/v1/chat/completions", json=chat)
    assert response.status_code == 200, response.text
    completion = response.json()
    assert completion["usage"]["prompt_tokens"] == len(tokenizer.encode(prompt))
    assert completion["usage"]["completion_tokens"] == 3
    assert completion["choices"][0]["text"].strip()
    assert refused.status_code == 422 and refused.json()["detail"][0]["field"] == "messages"
