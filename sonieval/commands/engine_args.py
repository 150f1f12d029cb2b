"""``--engine``, ``--address`` and ``--threads``: shared by ``run`` and the stage commands (prepare to score)."""

from __future__ import annotations

import argparse

ENGINE_HELP = (
    "where the work runs: local (this process, the default) or ray (Ray workers: a local cluster on "
    "this machine's CPUs and GPUs, or the cluster named by --address; pip install 'sonieval[ray]')"
)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=["local", "ray"], default="local", help=ENGINE_HELP)
    parser.add_argument(
        "--address",
        metavar="auto|HOST:PORT",
        help="with --engine ray: join a running cluster (auto: the one `ray start` began on this "
        "machine); default: start a local one for this run",
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch and BLAS threads of every task (default: local, one per core; ray, 1, each task holding N "
        "CPUs); on CPU the same N under either engine gives byte-identical results",
    )


def open_engine(args: argparse.Namespace):
    """The engine the arguments name (close it, or use it in a ``with``)."""
    from sonieval.engines import make_engine

    engine = make_engine(
        getattr(args, "engine", "local"), getattr(args, "address", None), getattr(args, "threads", None)
    )
    if engine.name != "local":
        print(f"engine: {engine.describe()}")
    return engine
