"""The ``ddx-llm`` command: inspect plugins, check the configuration, convert a GGUF model.

Serving is Hypercorn's job: ``hypercorn --config conf/hypercorn.toml ddx_llm:app``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pluggy import PluginValidationError

from .config import ConfigError


def _build(conf_dir: str | None):
    from .app import create_app

    return create_app(Path(conf_dir) if conf_dir else None)


def cmd_plugins(args: argparse.Namespace) -> int:
    """List the loaded plugins (name, source, version, hooks), disabled ones, middleware order."""
    app = _build(args.conf)
    pm = app.context.pm
    for info in pm.get_plugin_infos():
        version = f" {info.version}" if info.version else ""
        print(f"{info.name}{version}  [{info.source}]")
        print(f"    hooks: {', '.join(info.hooks) or '(none)'}")
    blocked = pm.blocked_names()
    if blocked:
        print(f"disabled: {', '.join(blocked)}")
    order = " -> ".join(f"{s.name}({s.order})" for s in app.context.middleware)
    print(f"middleware (outermost first): {order or '(none)'} -> router")
    print(f"backend: {app.context.backend.name}; default model: {app.context.host.default_model}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Build the app from conf without serving: exit 0 when the configuration is valid."""
    app = _build(args.conf)
    context = app.context
    print(
        f"configuration OK: backend {context.backend.name}, {len(context.settings.registry)} models"
    )
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a GGUF (llama architecture) into an mlx-lm model folder."""
    from .plugins.mlx.convert import convert_gguf

    folder = convert_gguf(Path(args.gguf), Path(args.dest))
    print(folder)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ddx-llm", description=__doc__)
    parser.add_argument("--conf", help="conf directory (default: $DDX_LLM_CONF_DIR or ./conf)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plugins", help=cmd_plugins.__doc__).set_defaults(func=cmd_plugins)
    sub.add_parser("check", help=cmd_check.__doc__).set_defaults(func=cmd_check)
    convert = sub.add_parser("convert", help=cmd_convert.__doc__)
    convert.add_argument("gguf", help="path of the .gguf file")
    convert.add_argument("dest", help="model folder to create")
    convert.set_defaults(func=cmd_convert)
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().handlers[0].setLevel(logging.WARNING)  # the app logs its start-up at INFO
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"ddx-llm: configuration error: {exc}", file=sys.stderr)
        return 2
    except (ImportError, PluginValidationError) as exc:
        print(f"ddx-llm: plugin error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"ddx-llm: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
