"""`nameplate demo` from a clean folder: it starts, serves the shop page, and the printed logins work."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx

from tests.demo_process import running_demo


def test_demo_starts_serves_the_shop_and_agents_can_log_in(tmp_path: Path) -> None:
    with running_demo([sys.executable, "-m", "nameplate"], tmp_path) as demo:
        output, base = demo.output, demo.base_url
        logins = re.findall(r"(\S+@acme\.example)\s+/\s+(\S+)", output)
        assert len(logins) == 3
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
