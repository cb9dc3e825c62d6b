"""A built wheel runs on its own: installed into a fresh venv outside the checkout, `nameplate demo` serves
the shop, the widget, the login page and the console's static files.

The wheel is the artefact people deploy (a container image, pipx, a wheel cache); a file that only the
checkout has would make it a server that cannot start, so this builds and installs the real thing.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import httpx
import pytest

from tests.demo_process import running_demo

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str], cwd: Path, timeout: float = 600) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv)}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with only the wheel (and its dependencies) in it; returns its `nameplate` command."""
    work = tmp_path_factory.mktemp("wheel")
    # No build isolation: the build backend (setuptools) is the test environment's own, so nothing is fetched.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(work), str(ROOT)], work)
    wheels = list(work.glob("nameplate-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", str(wheels[0])], work)
    return env_dir / "bin" / "nameplate"


def test_the_wheel_carries_the_assets_and_no_top_level_server_package(installed: Path) -> None:
    site_packages = next((installed.parent.parent / "lib").glob("python3*/site-packages"))
    package = site_packages / "nameplate"
    for needed in (
        "widget/nameplate.js",
        "widget/demo.html",
        "agent_console/templates/console.html",
        "agent_console/static/console.js",
        "demo/assets/jane.png",
        "store/migrations/env.py",
    ):
        assert (package / needed).is_file(), needed
    assert list((package / "store" / "migrations" / "versions").glob("0001_*.py"))
    assert not (site_packages / "server").exists(), "the wheel must not install a top-level `server` package"


def test_the_installed_demo_starts_from_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with running_demo([str(installed)], empty, timeout=90) as demo:
        for path in ("/demo", "/widget.js", "/login", "/static/console.css"):
            response = httpx.get(demo.base_url + path, timeout=10)
            assert response.status_code == 200, (path, response.status_code, response.text[:300])
        assert (empty / "nameplate-demo.db").exists()
