"""The ``ddx-llm`` command: serve, check the configuration, inspect plugins, start a plugin.

``ddx-llm serve`` runs Hypercorn with ``conf/hypercorn.toml`` in this process and, unlike
``hypercorn ddx_llm:app``, ends with a non-zero status when start-up fails: Hypercorn's
multi-process runner loses its worker's exit status (pgjones/hypercorn#269), and its asyncio
worker may go on serving after a failed lifespan.  It also drains on SIGTERM before Hypercorn
closes (:func:`serve_here`) and keeps HTTP/2 streams safe (:func:`apply_serving_defaults`).
Plugins add subcommands through ``ddx_llm_commands`` (the ``mlx`` plugin's ``convert``).

Exit statuses: 0 success, 1 a command's own failure, 2 a configuration or plugin error, 3 a
start-up failure while serving.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pluggy import PluginValidationError

from .config import ConfigError, find_conf_dir, load_core
from .errors import leaf_exception
from .manager import PluginManager, build_plugin_manager

STARTUP_FAILED = 3
DEFAULT_HYPERCORN_CONF = Path("conf/hypercorn.toml")


def _build(conf_dir: str | None) -> Any:
    from .factory import create_app

    return create_app(Path(conf_dir) if conf_dir else None)


def cmd_plugins(args: argparse.Namespace) -> int:
    """List the loaded plugins (name, source, version, hooks), disabled ones, middleware order."""
    context = _build(args.conf).context
    pm = context.pm
    chain = [{"name": s.name, "order": s.order, "plugin": s.plugin} for s in context.middleware]
    if args.json:
        report = {
            "plugins": [
                {"name": i.name, "source": i.source, "version": i.version, "hooks": list(i.hooks)}
                for i in pm.get_plugin_infos()
            ],
            "disabled": pm.blocked_names(),
            "middleware": chain,
            "backend": context.backend.name,
            "default_model": context.host.default_model,
        }
        print(json.dumps(report, indent=2))
        return 0
    for info in pm.get_plugin_infos():
        version = f" {info.version}" if info.version else ""
        print(f"{info.name}{version}  [{info.source}]")
        print(f"    hooks: {', '.join(info.hooks) or '(none)'}")
    if pm.blocked_names():
        print(f"disabled: {', '.join(pm.blocked_names())}")
    order = " -> ".join(f"{s['name']}({s['order']})" for s in chain)
    print(f"middleware (outermost first): {order or '(none)'} -> router")
    print(f"backend: {context.backend.name}; default model: {context.host.default_model}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Build the app from conf without serving: exit 0 when the configuration is valid."""
    context = _build(args.conf).context
    print(
        f"configuration OK: backend {context.backend.name}, {len(context.settings.registry)} models"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve with Hypercorn (``conf/hypercorn.toml``); non-zero exit when start-up fails."""
    from hypercorn.config import Config

    config = Config.from_toml(args.config) if Path(args.config).is_file() else Config()
    apply_serving_defaults(config, Path(args.config))
    if args.bind:
        config.bind = args.bind
    if args.worker_class:
        config.worker_class = args.worker_class
    if args.workers is not None:
        config.workers = args.workers
    config.application_path = "ddx_llm:app"
    if args.conf:
        os.environ["DDX_LLM_CONF_DIR"] = str(Path(args.conf).resolve())
    _build(args.conf)  # a configuration error ends here, before anything listens (status 2)
    if config.workers > 1:
        from hypercorn.run import run

        # Several processes: Hypercorn's own runner (which loses a worker's failure status,
        # pgjones/hypercorn#269; each worker still refuses to serve after a failed start-up).
        return run(config) or 0
    return serve_here(config)


H2_STREAM_IDS = 2**30
"""Client-initiated streams one HTTP/2 connection can carry (odd ids below 2**31)."""


def apply_serving_defaults(config: Any, path: Path) -> None:
    """Hypercorn settings ``ddx-llm serve`` changes unless the TOML file sets them.

    ``keep_alive_max_requests``: Hypercorn (0.18) answers the request past it on an HTTP/2
    connection with h2's ``close_connection()``, whose GOAWAY puts the connection in a state
    where no frame can be sent any more: the streams already accepted get no headers, no data
    and no reset.  ``H2_STREAM_IDS`` is more than a connection can ever carry, so the limit is
    never reached.  A lower value in the file is kept, with a warning.
    """
    import tomllib

    chosen = tomllib.loads(path.read_text()) if path.is_file() else {}
    if "keep_alive_max_requests" not in chosen:
        config.keep_alive_max_requests = H2_STREAM_IDS
    elif config.keep_alive_max_requests < H2_STREAM_IDS:
        print(
            f"ddx-llm: warning: keep_alive_max_requests = {config.keep_alive_max_requests} in "
            f"{path}: Hypercorn drops the HTTP/2 streams in flight on a connection that reaches "
            f"it; {H2_STREAM_IDS} avoids that",
            file=sys.stderr,
        )


def serve_here(config: Any) -> int:
    """Serve ``ddx_llm:app`` in this process until SIGINT/SIGTERM, or until its start-up fails
    (then status 3 and one line naming the cause).

    The first signal drains (:class:`ddx_llm.host.Drain`): new generations get 503, admitted
    ones have ``[core] drain_seconds`` to finish, then are cut; only then does Hypercorn's own
    shutdown (``graceful_timeout``) begin.  A second signal cuts at once, a third stops at once.
    """
    import signal

    import anyio

    from .asgi import app as lazy_app

    async def stop_when_signalled_or_failed() -> None:
        """Hypercorn's shutdown trigger: returns once a signal's drain is over, at a third
        signal, or when start-up failed."""
        async with anyio.create_task_group() as tg:

            async def drain_then_stop(host: Any, seconds: float) -> None:
                await host.drain.run(seconds, host.admission.wait_idle)
                tg.cancel_scope.cancel()

            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        context = getattr(lazy_app.built, "context", None)
                        host = getattr(context, "host", None)
                        if host is None or host.drain.is_cut:
                            tg.cancel_scope.cancel()
                        elif host.drain.draining:
                            host.drain.cut()
                        else:
                            seconds = context.settings.core.drain_seconds
                            tg.start_soon(drain_then_stop, host, seconds)

            async def on_failure() -> None:
                await lazy_app.wait_failed()
                tg.cancel_scope.cancel()

            tg.start_soon(on_signal)
            tg.start_soon(on_failure)

    async def serve() -> None:
        if config.worker_class == "trio":
            from hypercorn.trio import serve as hypercorn_serve
        else:
            from hypercorn.asyncio import serve as hypercorn_serve
        await hypercorn_serve(lazy_app, config, shutdown_trigger=stop_when_signalled_or_failed)

    backend = "trio" if config.worker_class == "trio" else "asyncio"
    try:
        anyio.run(serve, backend=backend)
    except Exception as exc:  # Hypercorn's LifespanFailureError (trio), a bind error ...
        if lazy_app.startup_error is None:
            print(f"ddx-llm: serving failed: {leaf_exception(exc)}", file=sys.stderr)
            return 1
    if lazy_app.startup_error is not None:
        print(f"ddx-llm: start-up failed: {lazy_app.startup_error}", file=sys.stderr)
        return STARTUP_FAILED
    return 0


def cmd_new_plugin(args: argparse.Namespace) -> int:
    """Write a new plugin package (entry point, hook skeleton, a passing test) to start from."""
    from .scaffold import write_plugin

    folder = write_plugin(args.name, Path(args.dest))
    print(folder)
    return 0


def command_plugins(conf: str | None) -> PluginManager:
    """The plugins whose subcommands ``ddx-llm`` offers: those of the conf when it can be read,
    else the built-ins and installed ones (so ``ddx-llm convert`` works without a conf)."""
    try:
        settings = load_core(Path(conf) if conf else find_conf_dir())
        return build_plugin_manager(
            disabled=settings.core.disabled_plugins,
            plugins_dir=settings.resolve_path(settings.core.plugins_dir),
        )
    except (ConfigError, PluginValidationError):
        return build_plugin_manager()


def build_parser(pm: PluginManager) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddx-llm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--conf", help="conf directory (default: $DDX_LLM_CONF_DIR or ./conf)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help=cmd_serve.__doc__)
    serve.add_argument("--config", default=str(DEFAULT_HYPERCORN_CONF), help="Hypercorn TOML")
    serve.add_argument("-b", "--bind", action="append", help="address to bind (repeatable)")
    serve.add_argument("-k", "--worker-class", choices=["asyncio", "uvloop", "trio"])
    serve.add_argument("-w", "--workers", type=int, help="worker processes")
    serve.set_defaults(run=cmd_serve)
    sub.add_parser("check", help=cmd_check.__doc__).set_defaults(run=cmd_check)
    plugins = sub.add_parser("plugins", help=cmd_plugins.__doc__)
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(run=cmd_plugins)
    new = sub.add_parser("new-plugin", help=cmd_new_plugin.__doc__)
    new.add_argument("name", help="plugin name, e.g. token_budget")
    new.add_argument("--dest", default=".", help="folder to create the package in")
    new.set_defaults(run=cmd_new_plugin)
    pm.hook.ddx_llm_commands(subcommands=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--conf")
    conf = early.parse_known_args(argv)[0].conf
    args = build_parser(command_plugins(conf)).parse_args(argv)
    if args.run is not cmd_serve:  # serving logs as the app and Hypercorn configure it
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger().handlers[0].setLevel(logging.WARNING)  # start-up logs at INFO
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"ddx-llm: configuration error: {exc}", file=sys.stderr)
        return 2
    except PluginValidationError as exc:
        print(f"ddx-llm: plugin error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"ddx-llm: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
