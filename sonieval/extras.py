"""Which optional extra of the package provides which import, and the one line a missing one gives.

``pip install sonieval`` is the lean core: metrics and stats on arrays, files and DataFrames. The
parts that need big or conflicting libraries live in extras (pyproject.toml
``[project.optional-dependencies]``): ``sonify`` (encoders, codec, training), ``study`` (the
listening-study app and its database), ``ray`` (the Ray engine), ``dev`` (tests and lint).
Those imports stay inside functions, so a core install imports every module; using a feature whose
extra is missing raises :class:`MissingExtra` with one line naming the command and the install.
"""

from __future__ import annotations

import importlib.util

from sonieval.errors import SonievalError

__all__ = ["EXTRA_OF_MODULE", "MissingExtra", "extra_for", "missing_extra", "require"]

# top-level import name -> the extra that declares its distribution (pyproject.toml)
EXTRA_OF_MODULE: dict[str, str] = {
    "transformers": "sonify",
    "huggingface_hub": "sonify",
    "dac": "sonify",
    "audiotools": "sonify",
    "torchaudio": "sonify",
    "tensorboard": "sonify",
    "torchcrepe": "sonify",
    "resampy": "sonify",
    "streamlit": "study",
    "sqlalchemy": "study",
    "psycopg": "study",
    "pyloudnorm": "study",
    "ray": "ray",
}


class MissingExtra(SonievalError):
    """A feature needs an optional extra that is not installed."""


def extra_for(module: str | None) -> str | None:
    """The extra that provides a top-level import name (``"torch.utils.tensorboard"`` counts as
    ``tensorboard``), or None when it is not an optional import."""
    if not module:
        return None
    parts = module.split(".")
    for name in (parts[0], parts[-1]):
        if name in EXTRA_OF_MODULE:
            return EXTRA_OF_MODULE[name]
    return None


def missing_extra(what: str, extra: str) -> MissingExtra:
    """``sonieval train needs the 'sonify' extra: pip install 'sonieval[sonify]'``."""
    return MissingExtra(f"{what} needs the '{extra}' extra: pip install 'sonieval[{extra}]'")


def require(what: str, *modules: str) -> None:
    """Raise :class:`MissingExtra` for the first of ``modules`` that is not importable (found without
    importing it, so the check is cheap)."""
    for module in modules:
        if importlib.util.find_spec(module.split(".")[0]) is None:
            raise missing_extra(what, extra_for(module) or "sonify")
