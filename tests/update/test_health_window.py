"""A new model that passes the acceptance gate but fails in service is rolled back: real daemon,
real broker, the real ``push``.

The bundle's ONNX graph is the person detector wrapped so that it answers exactly on its golden
input and fails on any other (a reshape to a shape computed from the data that cannot fit): the
trial's golden vectors and latency check pass, then every real frame fails once it is swapped
in. With ``updates.max_errors`` 0 the health window swaps version 1 back at once.
"""

from __future__ import annotations

import hashlib
import io
import re
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from tests.broker import Broker, wait_for
from tests.timeouts import scaled
from tests.update.test_updates import Device, _members, kit, push, signed, update_id

pytestmark = pytest.mark.slow
__all__ = ["kit"]  # the module-scoped fixture, shared with test_updates.py


def golden_only(model: bytes, golden_input: np.ndarray) -> bytes:
    """``model`` answering as before on ``golden_input`` and raising on any other input."""
    m = onnx.load_from_string(model)
    g = m.graph
    outs = [o.name for o in g.output]
    raw = {name: f"{name}_raw" for name in outs}
    for node in g.node:
        node.output[:] = [raw.get(o, o) for o in node.output]
    g.initializer.extend(
        [
            numpy_helper.from_array(golden_input.astype(np.float32), "golden_input"),
            numpy_helper.from_array(np.array(1e-6, np.float32), "golden_tol"),
        ]
    )
    g.node.extend(
        [
            helper.make_node("Sub", [g.input[0].name, "golden_input"], ["g_diff"]),
            helper.make_node("Abs", ["g_diff"], ["g_abs"]),
            helper.make_node("ReduceMax", ["g_abs"], ["g_max"], keepdims=0),
            helper.make_node("Less", ["g_max", "golden_tol"], ["g_is_golden"]),
        ]
    )
    then_branch = helper.make_graph(
        [helper.make_node("Identity", [raw[n]], [f"{n}_then"]) for n in outs],
        "golden",
        [],
        [helper.make_tensor_value_info(f"{n}_then", TensorProto.FLOAT, None) for n in outs],
    )
    # Any other input: reshape to (-1, 7), the 7 computed from the data so that no load-time
    # check sees it; no output's size is a multiple of 7, so the run fails.
    consts = {"zero": np.array(0, np.float32), "seven": np.array(7, np.float32)}
    consts |= {"one_d": np.array([1], np.int64), "minus_one": np.array([-1], np.int64)}
    else_branch = helper.make_graph(
        [
            helper.make_node("Mul", ["g_max", "zero"], ["e_zero"]),
            helper.make_node("Add", ["e_zero", "seven"], ["e_seven"]),
            helper.make_node("Cast", ["e_seven"], ["e_seven_i"], to=TensorProto.INT64),
            helper.make_node("Reshape", ["e_seven_i", "one_d"], ["e_seven_1d"]),
            helper.make_node("Concat", ["minus_one", "e_seven_1d"], ["e_shape"], axis=0),
            *(helper.make_node("Reshape", [raw[n], "e_shape"], [f"{n}_else"]) for n in outs),
        ],
        "other",
        [],
        [helper.make_tensor_value_info(f"{n}_else", TensorProto.FLOAT, None) for n in outs],
        initializer=[numpy_helper.from_array(a, name) for name, a in consts.items()],
    )
    g.node.append(
        helper.make_node("If", ["g_is_golden"], outs, then_branch=then_branch, else_branch=else_branch)
    )
    return m.SerializeToString()


def _golden_only_members(kit: dict[str, Path]) -> dict[str, bytes]:
    """The v2 bundle's members with its ONNX file replaced by :func:`golden_only` (sha256 updated)."""
    members = _members(kit["bundle"])
    meta = yaml.safe_load(members["model.yaml"])
    name = meta["files"]["onnx"]
    golden = np.load(io.BytesIO(members["golden/onnx.npz"]))
    inputs = sorted(k for k in golden.files if "_in" in k)
    assert inputs == ["v0_in0"], golden.files  # one golden vector, one input: the wrapper's premise
    model = golden_only(members[name], golden["v0_in0"])
    meta["sha256"][name] = hashlib.sha256(model).hexdigest()
    return {name: model, "model.yaml": yaml.safe_dump(meta, sort_keys=False).encode()}


def test_a_model_failing_in_the_health_window_is_rolled_back(
    tmp_path: Path, broker: Broker, kit: dict[str, Path]
) -> None:
    """The update passes its golden vectors (testing), is swapped in, fails on real frames; the
    health window (``max_errors`` 0) rolls it back: ``rolled_back`` naming the rule, push exits 1,
    version 1 serves again and stays active in the store, no result lost (every seq), the only
    frames without a prediction are the ones version 2 failed."""
    # a long window: the rollback comes at the first failed frame, however slow the machine
    dev = Device(tmp_path / "dev", broker, kit, updates={"health_window_s": scaled(30), "max_errors": 0})
    dev.start()
    try:
        bundle = signed(kit, tmp_path / "b" / "v2.tar", members=_golden_only_members(kit))
        done = push(bundle, broker, "--device", "cam-test")
        uid = update_id(bundle)
        final = dev.final(uid)
        assert final["state"] == "rolled_back", (final, dev.log()[-3000:])
        assert "frame(s) failed in the health window" in (final["reason"] or ""), final
        assert final["active_version"] == "1", final
        assert done.returncode == 1 and "rolled_back" in done.stdout, (done.stdout, done.stderr)
        log = dev.log()
        assert re.search(r"update: \S+ passed \d+ golden vector\(s\)", log), log[-3000:]
        assert "version 2 serving; health window" in log, log[-3000:]
        assert "rolled back to the previous model" in log, log[-3000:]
        # version 1 serves again, and keeps serving
        mark, seen = time.time(), len(dev.predictions())
        assert wait_for(lambda: len(dev.predictions()) > seen + 5, 30)
        assert dev.versions_after(mark) == {"1"}
        store = tmp_path / "dev" / "state" / "models" / "ssdlite_mobilenet_v2_person"
        assert not (store / "active.json").exists()  # the config's model (v1) is what a restart serves
        # every result committed is there (seq); the frames missing are exactly those v2 failed
        preds = sorted({p["id"]: p for p in dev.predictions()}.values(), key=lambda p: p["seq"])
        seqs = [p["seq"] for p in preds]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a committed result was lost"
        frames = [p["frame"]["index"] for p in preds]
        assert frames == sorted(frames)
        lost = sorted(set(range(frames[0], frames[-1])) - set(frames))
        failed = sorted(int(i) for i in re.findall(r"frame (\d+) failed in", log))
        assert lost and lost == failed, (lost, failed)
        assert {p["model"]["version"] for p in preds} == {"1"}
    finally:
        dev.stop()
