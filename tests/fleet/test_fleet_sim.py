"""The fleet simulation's three rollouts with six real daemons on one mosquitto (scripts/fleet_sim.py).

1. ``push --waves 1,10%,50%,100%`` reaches every device, wave by wave, and exits 0;
2. a device stopped as the push starts is ``pending`` (not a failure); started again with only
   ``fleet serve`` running, it becomes ``active``; ``fleet status --json`` then lists every device
   online on the new version;
3. a model whose golden vectors fail stops the rollout after its first wave: one device refused
   it, nothing was sent to the others, the refused device's retained update is cleared.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.daemon import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import fleet_sim  # the simulation script

pytestmark = pytest.mark.slow
N = 6


def test_three_rollouts_on_six_daemons(tmp_path: Path) -> None:
    r = fleet_sim.run(N, tmp_path, away_timeout=20)
    every, away, bad = r["all"], r["away"], r["bad"]

    assert every["exit"] == 0 and every["active"] == N, every["output"]
    out = every["output"]
    assert "waves of 1+2+3" in out and "wave 1/3: 1 device(s): sim-000" in out, out
    assert out.index("sim-000: active") < out.index("wave 2/3") < out.index("sim-005: active"), out

    assert away["away"] == ["sim-004"]
    assert away["exit"] == 1, away["output"]  # not every targeted device is active yet
    assert "sim-004  2     pending" in away["output"] and "0 failed, 1 pending" in away["output"]
    assert away["updated_while_away"] == 0 and away["active_before_return"] == N - 1
    assert away["seconds_after_return_to_all_active"] is not None, away
    assert away["status_rows"] == N and away["status_online_on_3"] == N

    assert bad["exit"] == 1 and "stopped after wave 1/3" in bad["output"], bad["output"]
    assert bad["tried"] == ["sim-000"] and bad["failed"] == 1
    assert bad["serving_3"] == N and bad["retained_bad"] == []
    assert "5 not reached" in bad["output"]
