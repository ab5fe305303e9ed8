"""Staged rollouts, the pure part: wave sizes, the abort rule, when a wave is settled."""

from __future__ import annotations

import pytest

from edge_runtime.errors import InputError
from edge_runtime.fleet.waves import Amount, Seen, parse_amount, parse_waves, plan, settle, too_many_failures

DEVICES = [f"dev-{i:03d}" for i in range(100)]


def test_waves_are_cumulative_counts_or_percentages_of_the_sorted_group() -> None:
    waves = plan(list(reversed(DEVICES)), parse_waves("1,10%,50%,100%"))
    assert [len(w) for w in waves] == [1, 9, 40, 50]
    assert [d for w in waves for d in w] == DEVICES  # by device id, each once
    assert waves[0] == ["dev-000"]


def test_small_groups_round_percentages_up_and_drop_empty_waves() -> None:
    assert plan(["c", "a", "b"], parse_waves("1,10%,50%,100%")) == [["a"], ["b"], ["c"]]
    assert plan(["a", "b", "c", "d", "e"], parse_waves("1,10%,50%,100%")) == [["a"], ["b", "c"], ["d", "e"]]
    assert plan(["a"], parse_waves("5,100%")) == [["a"]]
    assert plan([], parse_waves("1,100%")) == []


def test_waves_that_stop_short_of_the_group_leave_the_rest_unreached() -> None:
    waves = plan(DEVICES, parse_waves("2,20%"))
    assert sum(map(len, waves)) == 20 and waves[0] == DEVICES[:2]


def test_a_step_below_the_one_before_adds_nobody() -> None:
    assert [len(w) for w in plan(DEVICES, parse_waves("10,5,50%"))] == [10, 40]


@pytest.mark.parametrize("text", ["", "0", "1,x", "-1", "150%", "nan%", "1.5"])
def test_bad_waves_are_refused(text: str) -> None:
    with pytest.raises(InputError, match="--waves"):
        parse_waves(text)


def test_the_abort_rule_counts_or_percent_of_the_targeted_devices() -> None:
    two = parse_amount("2", "--max-failures")
    assert not too_many_failures(two, 2, 3) and too_many_failures(two, 3, 100)
    ten = parse_amount("10%", "--max-failures")
    assert ten == Amount(10.0, True)
    assert too_many_failures(ten, 1, 1)  # the first wave of 1: 10% of 1 rounds down to 0
    assert not too_many_failures(ten, 1, 10) and too_many_failures(ten, 2, 10)
    zero = parse_amount("0", "--max-failures")
    assert not too_many_failures(zero, 0, 50) and too_many_failures(zero, 1, 50)


def test_a_wave_waits_for_every_device_and_offline_ones_are_pending_after_the_deadline() -> None:
    wave = {
        "a": Seen(online=True, state="active"),
        "b": Seen(online=True, state="rolled_back"),
        "c": Seen(online=False, state=None),
        "d": Seen(online=True, state="testing"),
    }
    assert settle(wave, timed_out=False) is None  # c and d are not settled yet
    assert settle(wave, timed_out=True) == {"a": "active", "b": "failed", "c": "pending", "d": "failed"}
    done = {"a": Seen(True, "active"), "b": Seen(False, "rejected")}
    assert settle(done, timed_out=False) == {"a": "active", "b": "failed"}
