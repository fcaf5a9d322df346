"""Packaging (pyproject.toml): the [project] dependencies agree with requirements*.txt, the wheel ships what the
code reads at run time, and an installed wheel works from a fresh virtual environment (slow)."""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ui import serve

from .conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
NAME = PROJECT["name"]
# What the wheel is built from (copied, so that the build leaves nothing in the checkout).
SOURCES = ("pyproject.toml", "README.md", "app.py", "explainers", "ui", "app_pages", "assets")


def _key(requirement: str | Requirement) -> tuple:
    req = requirement if isinstance(requirement, Requirement) else Requirement(requirement)
    return canonicalize_name(req.name), tuple(sorted(req.extras)), str(req.specifier), str(req.marker or "")


def _requirements_file(name: str) -> set[tuple]:
    """A requirements file's own requirements (comments, blank lines and ``-r`` includes left out)."""
    lines = (line.split("#", 1)[0].strip() for line in (ROOT / name).read_text().splitlines())
    return {_key(line) for line in lines if line and not line.startswith("-")}


def _is_self(requirement: str) -> bool:
    return canonicalize_name(Requirement(requirement).name) == canonicalize_name(NAME)


# ---------------------------------------------------------------------------------------------------------
# Fast: the metadata and the files it names
# ---------------------------------------------------------------------------------------------------------


def test_dependencies_agree_with_requirements_txt():
    """requirements.txt (what `make run` installs) = the dependencies + the `ray` extra, line for line."""
    dependencies = {_key(r) for r in PROJECT["dependencies"]}
    ray = {_key(r) for r in PROJECT["optional-dependencies"]["ray"]}
    required = _requirements_file("requirements.txt")
    assert dependencies | ray == required, (
        f"only in pyproject.toml: {sorted((dependencies | ray) - required)}; "
        f"only in requirements.txt: {sorted(required - dependencies - ray)}"
    )
    assert not dependencies & ray
    assert {name for name, *_ in ray} == {"ray"}
    pins = {name: spec for name, _, spec, _ in dependencies}
    assert pins["torch"] == "==2.14.1" and pins["torchvision"] == "==0.29.1"  # the local wheel store's releases


def test_dev_extra_agrees_with_requirements_dev_txt():
    """The `dev` extra = requirements-dev.txt's own lines, plus this project's `ray` extra (the suite tests the
    Ray engine)."""
    dev = PROJECT["optional-dependencies"]["dev"]
    own = {_key(r) for r in dev if not _is_self(r)}
    required = _requirements_file("requirements-dev.txt")
    assert own == required, f"only in pyproject.toml: {sorted(own - required)}; only in requirements-dev.txt: " \
                            f"{sorted(required - own)}"
    assert [Requirement(r).extras for r in dev if _is_self(r)] == [{"ray"}]
    assert (ROOT / "requirements-dev.txt").read_text().startswith("-r requirements.txt")


def test_no_deps_oracles_are_pinned_apart_and_installed_without_dependencies():
    """requirements-nodeps.txt (oracles whose own pins conflict with ours): exact pins, in neither the `dev` extra
    nor requirements-dev.txt, installed by the Makefile's dev step with --no-deps after requirements-dev.txt."""
    nodeps = _requirements_file("requirements-nodeps.txt")
    assert nodeps and all(spec.startswith("==") for _, _, spec, _ in nodeps), nodeps
    names = {name for name, *_ in nodeps}
    dev = {canonicalize_name(Requirement(r).name) for r in PROJECT["optional-dependencies"]["dev"]}
    assert not names & dev and not names & {name for name, *_ in _requirements_file("requirements-dev.txt")}
    makefile = (ROOT / "Makefile").read_text()
    rule = makefile.split("$(VENV)/.dev-installed:", 1)[1].split("\n\n", 1)[0]
    prerequisites, recipe = rule.split("\n", 1)
    assert "requirements-nodeps.txt" in prerequisites
    steps = [line.strip() for line in recipe.splitlines() if "pip install" in line]
    assert [("-r requirements-dev.txt" in s, "--no-deps -r requirements-nodeps.txt" in s) for s in steps] == \
        [(True, False), (False, True)], steps


def _module_level_imports(path: Path) -> set[str]:
    """Top-level names imported when the module is imported (not inside functions or classes' methods)."""
    names = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.If | ast.Try | ast.With | ast.ClassDef):
                visit(ast.iter_child_nodes(node))

    visit(ast.parse(path.read_text()).body)
    return names


def test_ray_is_only_imported_lazily():
    """Ray can be an extra only while no module imports it when it is itself imported."""
    files = [ROOT / "app.py", *(p for d in ("explainers", "ui", "app_pages") for p in (ROOT / d).rglob("*.py"))]
    eager = [str(p.relative_to(ROOT)) for p in files if "ray" in _module_level_imports(p)]
    assert not eager, f"these import ray at module level; make ray a plain dependency or import it lazily: {eager}"


def _package_data_patterns() -> dict[str, list[str]]:
    return SETUPTOOLS["package-data"]


def test_every_asset_is_package_data():
    """Every file under assets/ is in the wheel (a new asset needs its pattern in [tool.setuptools.package-data])."""
    patterns = _package_data_patterns()
    missing = []
    for path in sorted((ROOT / "assets").rglob("*")):
        if not path.is_file():
            continue
        package = ".".join(path.parent.relative_to(ROOT).parts)
        if not any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns.get(package, [])):
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"not shipped in the wheel: {missing}"


def test_console_scripts_point_at_callables():
    import importlib

    scripts = PROJECT["scripts"]
    assert set(scripts) == {"saliency", "saliency-studio"}
    for target in scripts.values():
        module, attr = target.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), target


def test_launcher_settings_are_the_streamlit_config_and_make_run_flags():
    """ui/serve.py passes what an installed copy lacks: .streamlit/config.toml's settings and `make run`'s flags."""
    import streamlit.config

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    flat = {f"{section}.{key}": value for section, table in config.items() for key, value in table.items()}
    assert serve.CONFIG == flat

    run = next(line for line in (ROOT / "Makefile").read_text().splitlines() if "streamlit run" in line)
    flags = dict(re.findall(r"--([\w.]+)[ =](\S+)", run))
    flags.pop("server.port")  # PORT defaults to 8501, Streamlit's own default; saliency-studio passes --server.port
    defaults = {**serve.CONFIG, **serve.RUN_FLAGS}
    assert {key: serve._flag_value(defaults.get(key)) for key in flags} == flags

    for key in defaults:  # real settings, under the environment variable Streamlit reads
        assert serve.env_var(key) == streamlit.config._config_options_template[key].env_var


def test_launcher_command():
    cmd = serve.command(["--server.port", "8600", "--client.toolbarMode=auto"], environ={})
    assert cmd[:5] == [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py")]
    joined = shlex.join(cmd)
    assert "--server.headless true" in joined and "--browser.gatherUsageStats false" in joined
    assert cmd[-3:] == ["--server.port", "8600", "--client.toolbarMode=auto"]
    assert "--client.toolbarMode" not in cmd  # given by the user: no default beside it
    env = serve.command([], environ={"STREAMLIT_SERVER_MAX_UPLOAD_SIZE": "500"})
    assert "--server.maxUploadSize" not in env and "--server.enableXsrfProtection" in env


def test_launcher_prints_its_command_and_help(capsys):
    assert serve.main(["--print-command", "--server.port", "8600"]) == 0
    printed = capsys.readouterr().out
    assert shlex.split(printed)[:5] == [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py")]
    assert printed.rstrip().endswith("--server.port 8600")
    assert serve.main(["--help"]) == 0
    assert "saliency-studio" in capsys.readouterr().out


def test_launcher_imports_nothing_heavy():
    code = "import sys, ui.serve; print(sorted({'streamlit', 'explainers', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------------
# Slow: build the wheel, install it in a fresh virtual environment, run the console scripts
# ---------------------------------------------------------------------------------------------------------


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{shlex.join(map(str, cmd))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


CHECK_INSTALL = textwrap.dedent(
    """
    import json, sys
    from importlib import metadata
    from pathlib import Path
    from packaging.requirements import Requirement

    import app_pages, explainers, explainers.batch, explainers.cli, explainers.trust, ui

    modules = [explainers, explainers.batch, explainers.cli, explainers.trust, ui, app_pages]
    unmet = []
    for line in metadata.requires(sys.argv[1]):
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            found = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            found = None
        if found is None or not req.specifier.contains(found, prereleases=True):
            unmet.append(f"{line} (found {found})")
    # app_pages has no __init__.py (a namespace package): its __path__ lists every folder it comes from
    found = [str(Path(folder).resolve()) for module in modules for folder in module.__path__]
    print(json.dumps({"folders": found, "unmet": unmet}))
    """
)


RUN_APP = textwrap.dedent(
    """
    import json, sys
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(sys.argv[1], default_timeout=120).run()
    options = [option for box in at.sidebar.selectbox for option in box.options]
    print(json.dumps({"exceptions": [e.message for e in at.exception], "options": options}))
    """
)


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_fresh_venv(tmp_path):
    """`pip wheel .`, then the wheel alone in a fresh venv (its dependencies seen from this environment, not the
    checkout): the modules import from the venv, `saliency --help` and one `saliency explain` of a shipped sample
    on the shipped digits model work, `saliency-studio` names the installed app.py, and that app.py runs (AppTest)
    with the shipped samples in its sidebar."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, src / name)
    dist = tmp_path / "dist"
    # this environment's setuptools: no index needed
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(dist), str(src)])
    (wheel,) = dist.glob("*.whl")

    venv = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / ("python.exe" if os.name == "nt" else "python")
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # The dependencies (torch & co.) from this environment, after the fresh venv's own site-packages on sys.path;
    # plain paths, so that this environment's .pth files (an editable install of the checkout) are not read.
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_test_dependencies.pth").write_text("".join(f"{path}\n" for path in ours))

    work = tmp_path / "work"  # not the checkout: nothing may come from the repository
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    env.update(PYTHONNOUSERSITE="1", SALIENCY_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("SALIENCY_CONFIG", None)

    # this environment's pip, run by the fresh interpreter: installs there
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "--no-compile", "-q",
          str(wheel)], cwd=work, env=env)

    checked = json.loads(_run([str(python), "-c", CHECK_INSTALL, NAME], cwd=work, env=env).stdout)
    assert all(Path(f).is_relative_to(site.resolve()) for f in checked["folders"]), checked["folders"]
    assert not checked["unmet"], f"this environment does not meet the wheel's requirements: {checked['unmet']}"
    for shipped in ("app.py", "app_pages/explore.py", "assets/brand/favicon.png", "assets/samples/LICENSE.md",
                    "assets/digits/lenet_digits.safetensors", "assets/digits/lenet_digits_shuffled.safetensors"):
        assert (site / shipped).is_file(), shipped

    saliency = bin_dir / "saliency"
    assert "explain" in _run([str(saliency), "--help"], cwd=work, env=env).stdout
    out = work / "out"
    _run([str(saliency), "explain", str(site / "assets" / "samples" / "cat.png"), "--model", "lenet_digits",
          "--method", "vanilla", "--out", str(out), "--quiet"], cwd=work, env=env)
    made = {path.suffix for path in out.rglob("*") if path.is_file()}
    assert {".png", ".npy", ".json"} <= made, sorted(out.rglob("*"))

    printed = _run([str(bin_dir / "saliency-studio"), "--print-command", "--server.port", "8600"], cwd=work,
                   env=env).stdout
    cmd = shlex.split(printed)
    assert Path(cmd[0]) == python.absolute() or Path(cmd[0]).resolve() == python.resolve()
    assert cmd[1:4] == ["-m", "streamlit", "run"] and Path(cmd[4]) == (site / "app.py").resolve()
    assert cmd[-2:] == ["--server.port", "8600"]

    ran = _run([str(python), "-c", RUN_APP, str(site / "app.py")], cwd=work, env=env).stdout
    app = json.loads(ran.strip().splitlines()[-1])  # Streamlit prints a failing script's traceback above
    assert not app["exceptions"], app["exceptions"]
    assert {"cat.png", "coffee.png", "rocket.jpg"} <= set(app["options"]), app["options"]
