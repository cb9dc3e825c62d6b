"""`nameplate demo` from a clean folder: it starts, serves the shop page, and the printed logins work."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.harness import free_port


def test_demo_starts_serves_the_shop_and_agents_can_log_in(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")}
    process = subprocess.Popen(
        [sys.executable, "-m", "nameplate", "demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "Uvicorn running" in line or process.poll() is not None:
                break
        output = "".join(lines)
        assert "Uvicorn running" in output, output
        logins = re.findall(r"(\S+@acme\.example)\s+/\s+(\S+)", output)
        assert len(logins) == 3
        base = f"http://127.0.0.1:{port}"
        page = httpx.get(f"{base}/demo", timeout=10)
        assert page.status_code == 200 and 'data-site="site_demo"' in page.text and "/widget.js" in page.text
        assert httpx.get(f"{base}/widget.js", timeout=10).status_code == 200
        for email, password in logins:
            response = httpx.post(f"{base}/login", json={"email": email, "password": password}, timeout=10)
            assert response.status_code == 200, response.text
            agent = response.json()["agent"]
            assert agent["given_name"] and agent["family_name"] and agent["photo_url"]
            photo = httpx.get(base + agent["photo_url"], timeout=10)
            assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
        assert (tmp_path / "nameplate-demo.db").exists()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
