"""Real peers of the integrations tests: a Prometheus server scraping the daemon, plain HTTP GETs."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ..broker import free_port, wait_for
from ..timeouts import scaled

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def require(tool: str, package: str) -> None:
    """Skip with the reason where a Debian tool is absent (CI installs it: .ci/run)."""
    if not Path(tool).exists():
        pytest.skip(f"{tool} not found: apt-get install {package} (.ci/run installs it)")


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, bytes, Any]:
    """(status, body, headers) of a GET; status 0 when nothing answered."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=scaled(timeout)) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers
    except OSError:
        return 0, b"", {}


class Prometheus:
    """A real Prometheus server scraping ``target`` every second, its data in ``workdir``."""

    def __init__(self, workdir: Path, target: str) -> None:
        require(PROMETHEUS, "prometheus")
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: edge\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=self.log,
        )
        assert wait_for(lambda: get(f"http://127.0.0.1:{self.port}/-/ready")[0] == 200, 60), "no prometheus"

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` (``/api/v1/query``)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body, _ = get(url)
        assert status == 200, body[:300]
        result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of ``expr``, None when there is none yet."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def close(self) -> None:
        """Kill it by PID."""
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()


def promtool_check(exposition: bytes) -> subprocess.CompletedProcess[bytes]:
    """``promtool check metrics`` on an exposition (lint: names, units, help, types)."""
    require(PROMTOOL, "prometheus")
    return subprocess.run(
        [PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, timeout=scaled(60), check=False
    )
