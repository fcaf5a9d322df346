"""Which run folders a server's Batch page may open, and the paths inside a run it may follow.

The command line, run by the machine's owner, reads any path; the page serves whoever reaches it, so it opens only
folders inside the roots of ``[batch] roots`` in the server settings (``saliency.toml``, or the file SALIENCY_CONFIG
names; entries relative to the working folder; default ``["runs"]``) and the runs a session launched itself. Paths
are compared resolved (symlinks followed, ``..`` collapsed), so neither can lead out of a root.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from pathlib import Path

from ..errors import SaliencyError
from ..models.user import config_path

DEFAULT_ROOTS = ("runs",)


def configured_roots() -> list[str]:
    """The roots as the settings spell them (``[batch] roots``; default ``["runs"]``)."""
    path = config_path()
    if not path.is_file():
        return list(DEFAULT_ROOTS)
    try:
        settings = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SaliencyError(f"cannot read the server settings {path}: {exc}; expected TOML such as "
                            "'[batch]\\nroots = [\"runs\"]'") from exc
    roots = settings.get("batch", {}).get("roots", list(DEFAULT_ROOTS))
    if not isinstance(roots, list) or not all(isinstance(r, str) and r.strip() for r in roots):
        raise SaliencyError(f"[batch] roots in {path} must be a list of folder names, got {roots!r}")
    return roots


def resolved(path: str | os.PathLike, base: Path | None = None) -> Path | None:
    """``path`` made absolute (relative to ``base``, else the working folder) with symlinks and ``..`` resolved;
    None when it cannot be (a symlink loop)."""
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = (base or Path.cwd()) / candidate
    try:
        return candidate.resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def root_paths(extra: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """The configured roots, then ``extra`` (a session's launched runs), resolved."""
    found = [resolved(r) for r in [*configured_roots(), *extra]]
    return [r for r in found if r is not None]


def inside(path: str | os.PathLike, roots: Iterable[Path], base: Path | None = None) -> Path | None:
    """``path`` resolved when it lies inside (or is) one of ``roots`` (resolved), else None."""
    target = resolved(path, base)
    if target is None:
        return None
    return target if any(target == root or target.is_relative_to(root) for root in roots) else None


def map_path(out: str | os.PathLike, map_file: str) -> Path:
    """Where a row's ``map_file`` is: inside the run's maps/ folder, or a SaliencyError (a run folder's table is
    data, and a crafted one must not open files elsewhere)."""
    maps = resolved(Path(out) / "maps")
    found = inside(str(map_file), [maps] if maps is not None else [], base=Path(out))
    if found is None or found == maps:
        raise SaliencyError(f"the map file {str(map_file)!r} is not inside the run's maps/ folder")
    return found
