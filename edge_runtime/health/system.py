"""System probes: CPU, memory, temperatures, Raspberry Pi throttling, disk. None when unknown."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import psutil

logger = logging.getLogger(__name__)

THERMAL = Path("/sys/class/thermal")
# Raspberry Pi firmware exposes get_throttled here (no vcgencmd needed)
PI_THROTTLED = (Path("/sys/devices/platform/soc/soc:firmware/get_throttled"),)
THROTTLE_BITS = {
    0: "under_voltage",
    1: "arm_frequency_capped",
    2: "throttled",
    3: "soft_temp_limit",
    16: "under_voltage_occurred",
    17: "arm_frequency_capping_occurred",
    18: "throttling_occurred",
    19: "soft_temp_limit_occurred",
}


def temperatures_c(root: Path = THERMAL) -> dict[str, float] | None:
    """Every readable thermal zone, by its type (e.g. ``cpu-thermal``, ``GPU-therm`` on Jetson)."""
    out: dict[str, float] = {}
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip() or zone.name
            out[kind if kind not in out else f"{kind}-{zone.name}"] = (
                int((zone / "temp").read_text()) / 1000.0
            )
        except (OSError, ValueError):
            continue
    return out or None


def throttled(paths: tuple[Path, ...] = PI_THROTTLED) -> dict[str, Any] | None:
    """Raspberry Pi throttling flags decoded from the firmware's bit field, or None elsewhere."""
    for path in paths:
        try:
            value = int(path.read_text().strip(), 16)
        except (OSError, ValueError):
            continue
        return {"raw": hex(value), **{name: bool(value >> bit & 1) for bit, name in THROTTLE_BITS.items()}}
    return None


class SystemProbe:
    """Keeps the psutil objects whose CPU counters need a previous sample."""

    def __init__(self, disk_path: Path) -> None:
        self.disk_path = disk_path
        self._process = psutil.Process()
        psutil.cpu_percent(None)
        self._process.cpu_percent(None)

    def snapshot(self) -> dict[str, Any]:
        """The ``system`` object of the health payload."""
        temps = temperatures_c()
        return {
            "cpu_percent": psutil.cpu_percent(None),
            "process_cpu_percent": self._process.cpu_percent(None),
            "rss_bytes": self._process.memory_info().rss,
            "temperature_c": max(temps.values()) if temps else None,
            "temperatures_c": temps,
            "throttled": throttled(),
            "disk_free_bytes": self._disk_free(),
            "load_avg": list(psutil.getloadavg()),
        }

    def _disk_free(self) -> int | None:
        path = self.disk_path
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            return shutil.disk_usage(path).free
        except OSError:
            return None
