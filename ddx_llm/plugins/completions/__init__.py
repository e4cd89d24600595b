"""The ``completions`` plugin: OpenAI's legacy ``POST /v1/completions`` on the core's pipeline.

Off by default, as the seed's service has no such route: ``[completions] enabled = true``
(``DDX_LLM_COMPLETIONS_ENABLED=1``) adds it.  Inference gateways need it — the Gateway API
Inference Extension's model-server protocol asks for OpenAI's Completions and Chat APIs.  The
route (surface ``completions``, protected: an API key is needed when auth is on) validates
OpenAI's ``CreateCompletionRequest`` (:mod:`.request`), generates through
:func:`ddx_llm.api.chat.generation` — admission, the model lease, the backend, the context
check, lifecycle events and metrics as for chat — and answers OpenAI's ``text_completion``
object, streamed or whole (:mod:`.shaping`).

**A completion continues a prompt; a chat answers a turn.**  The backend protocol takes chat
requests, so the prompt travels as the one user message of a chat request, and
``[completions] prompt`` says what the model must see:

- ``"raw"`` (default): the prompt as it is — OpenAI's and vLLM's meaning.  The chat request is
  marked with the vendor field ``raw_prompt: true``; it needs a backend that takes raw prompts:
  one that declares ``raw_prompts = True`` (it then gives that message's text to the model
  without a chat template: ``mlx`` does), or one without real models (``real_model_mode =
  False``: the mock, which has no template to apply and echoes the prompt).  Any other backend
  (``omni`` renders every prompt through the model's chat template) stops start-up with a
  configuration error (exit 2) rather than answering completions as chat turns.
- ``"template"``: the prompt as one user turn of the model's chat template — an explicit
  choice to serve completions on such a backend: a chat model then *answers* the prompt rather
  than continuing it.  A registry entry whose ``options.tokenizer_config.chat_template`` is
  ``{{ messages[0]['content'] }}`` (a base model: it has no chat template of its own) gives
  the model the prompt as it is, on any backend.

Settings (``[completions]``, env ``DDX_LLM_COMPLETIONS_<KEY>``): ``enabled``, ``prompt``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from ddx_llm import hookimpl
from ddx_llm.config import ConfigError, SectionSettings
from ddx_llm.routing import Route

from . import openapi
from .routes import NAME, create_completion

if TYPE_CHECKING:
    from ddx_llm.backend import Backend
    from ddx_llm.context import AppContext

SURFACE = "completions"
PATH = "/v1/completions"


class CompletionsSettings(SectionSettings):
    """``[completions]``: the legacy text-completion surface."""

    enabled: bool = False
    """Serve ``POST /v1/completions`` (off: the route answers 404, as without the plugin)."""
    prompt: Literal["raw", "template"] = "raw"
    """What the model sees: the prompt as it is, or the prompt as a chat turn (see above)."""


def takes_raw_prompts(backend: Backend) -> bool:
    """Whether ``backend`` gives a ``raw_prompt`` chat request's text to the model as it is:
    its ``raw_prompts`` declaration, else True exactly when it serves no real models (no
    model, no chat template)."""
    declared = getattr(backend, "raw_prompts", None)
    if isinstance(declared, bool):
        return declared
    return not backend.real_model_mode


def prompt_mode(app: AppContext) -> str:
    """``"raw"`` or ``"template"`` for this app; ConfigError when raw prompts are asked of a
    backend that cannot take them."""
    section: CompletionsSettings = app.settings.section(NAME)
    if section.prompt == "raw" and not takes_raw_prompts(app.backend):
        raise ConfigError(
            f'[completions] prompt = "raw": the {app.backend.name} backend renders every '
            "prompt through the model's chat template, so it cannot continue a raw prompt; "
            'set prompt = "template" (DDX_LLM_COMPLETIONS_PROMPT=template) to answer '
            "completions as chat turns, or turn completions off"
        )
    return section.prompt


@hookimpl
def ddx_llm_settings() -> tuple[str, type]:
    return (NAME, CompletionsSettings)


@hookimpl
def ddx_llm_routes(app: AppContext) -> list[Route] | None:
    if not app.settings.section(NAME).enabled:
        return None
    mode = prompt_mode(app)
    app.state(NAME, lambda: mode)
    return [Route(PATH, create_completion, methods=["POST"], protected=True, surface=SURFACE)]


@hookimpl
def ddx_llm_openapi(document: dict[str, Any], app: AppContext) -> None:
    if app.settings.section(NAME).enabled:
        openapi.add_path(document, PATH)
