"""``saliency-studio``: serve the dashboard, as ``make run`` does, from wherever the package is installed.

It runs ``python -m streamlit run <app.py> --server.headless true --browser.gatherUsageStats false`` with this
interpreter, plus the dashboard's server settings (:data:`CONFIG`, the same as the repository's
``.streamlit/config.toml``, which an installed copy does not have). Every other argument goes to ``streamlit run``
as given, e.g. ``saliency-studio --server.port 8600``. A setting given as an argument, or in Streamlit's environment
variable (``STREAMLIT_SERVER_MAX_UPLOAD_SIZE=500``), replaces the default here; being flags, the defaults outrank
``config.toml`` files. ``--print-command`` prints the command instead of running it.

Nothing here imports Streamlit or the explainers: the launcher starts at once and the server process does the rest.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app.py"  # beside the ui package, in the repository and installed
# `make run`'s flags (the port is Streamlit's default, 8501, unless given).
RUN_FLAGS: dict[str, object] = {"server.headless": True, "browser.gatherUsageStats": False}
# The repository's .streamlit/config.toml, flattened (tests/test_packaging.py checks that the two agree).
CONFIG: dict[str, object] = {
    "client.toolbarMode": "viewer",
    "browser.gatherUsageStats": False,
    "server.enableXsrfProtection": True,
    "server.maxUploadSize": 200,
}
PRINT_COMMAND = "--print-command"
USAGE = f"""usage: saliency-studio [{PRINT_COMMAND}] [STREAMLIT OPTIONS ...] [-- SCRIPT ARGS ...]

Serve the Saliency Studio dashboard (streamlit run app.py, headless, no usage statistics).
Options such as --server.port 8600 or --server.address 0.0.0.0 go to `streamlit run`
(see `python -m streamlit run --help`).

  {PRINT_COMMAND}  print the command and exit
  -h, --help       show this message and exit"""


def env_var(key: str) -> str:
    """Streamlit's environment variable for a setting (``server.maxUploadSize``:
    ``STREAMLIT_SERVER_MAX_UPLOAD_SIZE``)."""
    return "STREAMLIT_" + re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key.replace(".", "_")).upper()


def _flag_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def command(args: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> list[str]:
    """The ``streamlit run`` command line: the defaults not already given in ``args`` or the environment, then
    ``args`` unchanged."""
    environ = os.environ if environ is None else environ
    options = list(args[: list(args).index("--")] if "--" in args else args)
    given = {arg[2:].split("=", 1)[0] for arg in options if arg.startswith("--")}
    defaults = {**CONFIG, **RUN_FLAGS}
    flags = []
    for key, value in defaults.items():
        if key not in given and env_var(key) not in environ:
            flags += [f"--{key}", _flag_value(value)]
    return [sys.executable, "-m", "streamlit", "run", str(APP), *flags, *args]


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the dashboard (on POSIX this process becomes the server); returns an exit status otherwise."""
    args = list(sys.argv[1:] if argv is None else argv)
    options = args[: args.index("--")] if "--" in args else args
    if "-h" in options or "--help" in options:
        print(USAGE)
        return 0
    dry_run = PRINT_COMMAND in options
    if dry_run:
        args.remove(PRINT_COMMAND)
    if not APP.is_file():
        print(f"error: the dashboard's script is missing: {APP}", file=sys.stderr)
        return 2
    cmd = command(args)
    if dry_run:
        print(shlex.join(cmd))
        return 0
    sys.stdout.flush()
    if os.name == "posix":
        os.execv(cmd[0], cmd)  # signals (Ctrl+C, a service manager's SIGTERM) go straight to the server
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
