"""The ``sonieval`` command: parses arguments and calls stage functions, nothing more.

Each subcommand lives in ``sonieval/commands/<name>.py`` with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import only light
modules at top level; heavy or side-effecting packages (torch, transformers, dac, kadtk)
are imported inside ``run`` so that ``sonieval --help`` stays fast and offline.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

# Order is the order shown in --help: the pipeline's stages first.
COMMANDS = [
    "run",
    "demo",
    "data",
    "prepare",
    "train",
    "sonify",
    "score",
    "study",
    "report",
    "gallery",
    "gates",
    "finetune",
]


def _available_commands() -> list[tuple[str, object]]:
    found = []
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"sonieval.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"sonieval.commands.{name}":
                continue  # not built yet
            raise
        found.append((name, module))
    return found


def build_parser() -> argparse.ArgumentParser:
    from sonieval import __version__

    parser = argparse.ArgumentParser(
        prog="sonieval",
        description="Evaluation and listening-study toolkit for embedding sonification.",
        epilog="Each stage reads a protocol (protocols/*.yaml) and the previous stages' tables. "
        "Set SONIEVAL_DEBUG=1 to see tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"sonieval {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _available_commands():
        p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP))
        module.add_arguments(p)
        if "--no-progress" not in p._option_string_actions:  # one flag, the same in every command
            p.add_argument("--no-progress", action="store_true", help="hide progress bars")
        p.set_defaults(_run=module.run)
    return parser


@contextlib.contextmanager
def _progress_bars(shown: bool):
    """With ``--no-progress`` every tqdm bar of the command is off (stages pass ``disable=`` themselves,
    so tqdm's own TQDM_DISABLE default, read once at import, would not reach them)."""
    if shown:
        yield
        return
    from tqdm import std

    original = std.tqdm.__init__

    def quiet(self, *a, **kw):
        kw["disable"] = True
        original(self, *a, **kw)

    std.tqdm.__init__ = quiet
    try:
        yield
    finally:
        std.tqdm.__init__ = original


def main(argv: list[str] | None = None) -> int:
    from sonieval.errors import SonievalError
    from sonieval.extras import MissingExtra

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        with _progress_bars(not getattr(args, "no_progress", False)):
            return int(args._run(args) or 0)
    except SonievalError as exc:
        if os.environ.get("SONIEVAL_DEBUG"):
            raise
        # a missing extra's line already names the command ("sonieval train needs the 'sonify' extra: ...")
        print(exc if isinstance(exc, MissingExtra) else f"sonieval {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        from sonieval.extras import extra_for, missing_extra

        extra = extra_for(exc.name)
        if extra is None or os.environ.get("SONIEVAL_DEBUG"):
            raise
        # a feature of an optional extra that is not installed: one line that says which to install
        print(missing_extra(f"sonieval {args.command}", extra), file=sys.stderr)
        return 2
    except BrokenPipeError:  # `sonieval gates | head`: the reader left; no traceback, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(f"sonieval {args.command}: interrupted; finished items are kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
