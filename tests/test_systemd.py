"""The systemd unit, its board drop-ins and scripts/install.sh / uninstall.sh, without a running systemd.

How the unit is checked here: ``systemd-analyze verify`` and ``systemd-analyze security --offline``
work without PID 1. ``verify`` also insists that every ``ExecStart=``/``ExecReload=`` binary exists
and is executable ("Command ... is not executable"), and ``/opt/edge-runtime/venv`` is not on a
test machine. With ``--root=DIR`` both commands read the unit and its drop-ins
(``DIR/etc/systemd/system/edge-runtime.service.d/*.conf``) and resolve the binaries under DIR. So
each test stages a real install with ``install.sh --root DIR`` (which writes the unit and the
board's drop-ins exactly as on a board) and puts small stub executables where the target would
have ``edge-runtime`` and ``kill``. That checks the files the installer really ships, drop-ins
included, and no test edits the unit to make it pass.

Board detection is pointed at fake ``/proc``, ``/sys``, ``/dev`` and ``/etc`` trees through
``EDGE_RUNTIME_DETECT_ROOT``. Under ``--root`` the installer never creates a virtualenv (a venv
hard-codes its own path and would not work once moved), never calls ``useradd`` or ``systemctl``,
so these tests need neither network nor root and take a fraction of a second each.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.timeouts import scaled

from .certs import make_ca, make_server_cert

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "scripts" / "install.sh"
UNINSTALL = REPO / "scripts" / "uninstall.sh"
UNIT_NAME = "edge-runtime.service"
UNIT_PATH = Path("etc/systemd/system") / UNIT_NAME
DROPIN_DIR = Path("etc/systemd/system") / f"{UNIT_NAME}.d"
PREFIX = "/opt/edge-runtime"

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")

# `systemd-analyze security --offline=true` (systemd 252) on the unit, alone and with every board's
# drop-ins, measured "Overall exposure level: 1.5 OK" (0.0 = fully sandboxed, 10.0 = none). What is
# left is what the daemon needs: network to the broker (PrivateNetwork=, IPAddressDeny=, AF_INET),
# AF_UNIX for sd_notify, cameras and accelerators (PrivateDevices=, DeviceAllow=, groups), and the
# /proc files psutil and the runtimes read (ProcSubset=). --threshold= takes that level times ten
# as an integer (it rejects "1.5"), so the bound below is exactly the measured level.
MEASURED_EXPOSURE = 1.5
SECURITY_THRESHOLD = 15

# --board -> the drop-ins it installs and the example config it starts from
BOARDS: dict[str, tuple[set[str], str]] = {
    "jetson": ({"board-jetson.conf"}, "jetson.yaml"),
    "rpi": ({"board-rpi.conf"}, "generic-arm.yaml"),
    "rpi-coral": ({"board-rpi.conf", "board-coral-usb.conf"}, "rpi-coral.yaml"),
    "rpi-coral-pcie": ({"board-rpi.conf", "board-coral-pcie.conf"}, "rpi-coral.yaml"),
    "coral-usb": ({"board-generic.conf", "board-coral-usb.conf"}, "rpi-coral.yaml"),
    "coral-pcie": ({"board-generic.conf", "board-coral-pcie.conf"}, "rpi-coral.yaml"),
    "generic": ({"board-generic.conf"}, "generic-arm.yaml"),
}


# -- helpers --------------------------------------------------------------------------------------
def run_script(
    script: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run install.sh/uninstall.sh; on an unexpected exit status fail with its output."""
    outside = ("EDGE_RUNTIME_DETECT_ROOT", "CREDENTIALS_DIRECTORY", "SYSTEMCTL")  # as from a shell
    full_env = {k: v for k, v in os.environ.items() if k not in outside}
    full_env.update(env or {})
    proc = subprocess.run(
        ["bash", str(script), *args],
        check=False,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=scaled(120),
    )
    if check:
        assert proc.returncode == 0, (
            f"{script.name} {args}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
        )
    return proc


def install(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_script(INSTALL, "--root", str(root), *args, env=env)


def add_stub_binaries(root: Path, prefix: str = PREFIX) -> None:
    """Executables that verify looks for under --root: edge-runtime (ExecStart) and kill (ExecReload)."""
    for rel in (f"{prefix.lstrip('/')}/venv/bin/edge-runtime", "bin/kill"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)


def staged(tmp_path: Path, board: str = "generic") -> Path:
    """A target tree with the unit and the board's drop-ins installed, ready for systemd-analyze."""
    root = tmp_path / "root"
    install(root, "--board", board)
    add_stub_binaries(root)
    return root


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args], check=False, capture_output=True, text=True, timeout=scaled(60)
    )


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    # Without --recursive-errors=no, verify exits 0 even on unknown keys.
    return analyze("verify", "--recursive-errors=no", f"--root={root}", UNIT_NAME)


def security(root: Path, threshold: int = SECURITY_THRESHOLD) -> subprocess.CompletedProcess[str]:
    return analyze("security", "--offline=true", f"--threshold={threshold}", f"--root={root}", UNIT_NAME)


def exposure(output: str) -> float:
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", output)
    assert match, output
    return float(match.group(1))


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and folder below root: relative path -> (mode, sha256 of the content or "dir")."""
    out: dict[str, tuple[int, str]] = {}
    for path in sorted(root.rglob("*")):
        mode = path.stat().st_mode & 0o7777
        digest = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        out[str(path.relative_to(root))] = (mode, digest)
    return out


def actions(output: str) -> list[str]:
    """The lines install.sh/uninstall.sh print for what they do (or, in a dry run, would do)."""
    return [line for line in output.splitlines() if line.startswith("+ ")]


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


# -- the unit -------------------------------------------------------------------------------------
@needs_analyze
@pytest.mark.parametrize("board", sorted(BOARDS))
def test_unit_with_board_dropins_verifies_clean(tmp_path: Path, board: str) -> None:
    """The shipped unit plus each board's drop-ins: no unknown key, no bad value, binaries found."""
    proc = verify(staged(tmp_path, board))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout + proc.stderr == ""


@needs_analyze
@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "systemd" / "optional").glob("*.conf")))
def test_optional_dropins_verify_clean(tmp_path: Path, name: str) -> None:
    """The optional drop-ins (credentials from paths, IP allow-list, sensors) are valid as shipped."""
    root = staged(tmp_path)
    shutil.copy(REPO / "systemd" / "optional" / name, root / DROPIN_DIR / name)
    proc = verify(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_analyze
@pytest.mark.parametrize(
    ("line", "broken", "message"),
    [
        ("ProtectSystem=strict", "ProtectSytem=strict", "Unknown key 'ProtectSytem'"),
        ("WatchdogSec=30s", "WatchdogSec=thirty", "Failed to parse sec value"),
        ("Restart=on-failure", "Restart=sometimes", "Failed to parse service restart specifier"),
        ("DevicePolicy=closed", "DevicePolicy=shut", "Failed to parse device policy"),
        ("RestrictAddressFamilies=AF_UNIX", "RestrictAddressFamilies=AF_BOGUS", "address family"),
        (f"ExecStart={PREFIX}/", "ExecStart=/nonexistent/", "is not executable"),
    ],
)
def test_broken_unit_fails_verify(tmp_path: Path, line: str, broken: str, message: str) -> None:
    """verify is a real check: a typo in a key, a bad value or a missing binary makes it fail."""
    root = staged(tmp_path)
    unit = root / UNIT_PATH
    text = unit.read_text()
    assert f"\n{line}" in text  # a setting at the start of a line, not the same words in a comment
    unit.write_text(text.replace(f"\n{line}", f"\n{broken}", 1))
    proc = verify(root)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


@needs_analyze
def test_broken_board_dropin_fails_verify(tmp_path: Path) -> None:
    """Drop-ins are verified too: a bad line in a board's drop-in fails the check."""
    root = staged(tmp_path, "rpi-coral")
    dropin = root / DROPIN_DIR / "board-coral-usb.conf"
    dropin.write_text(dropin.read_text() + "DeviceAlow=char-usb_device rw\n")
    proc = verify(root)
    assert proc.returncode != 0
    assert "Unknown key 'DeviceAlow'" in proc.stdout + proc.stderr


@needs_analyze
@pytest.mark.parametrize("board", sorted(BOARDS))
def test_security_exposure_within_threshold(tmp_path: Path, board: str) -> None:
    """The hardening score stays at the measured level with every board's relaxations applied."""
    proc = security(staged(tmp_path, board))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert exposure(proc.stdout) <= MEASURED_EXPOSURE


@needs_analyze
def test_security_threshold_catches_weakened_unit(tmp_path: Path) -> None:
    """The threshold bites: dropping the system call filter and kernel protections exceeds it."""
    root = staged(tmp_path)
    unit = root / UNIT_PATH
    weakened = [
        line
        for line in unit.read_text().splitlines()
        if not line.startswith(("SystemCall", "ProtectKernel", "CapabilityBoundingSet", "RestrictNamespaces"))
    ]
    unit.write_text("\n".join(weakened) + "\n")
    proc = security(root)
    assert proc.returncode != 0
    assert exposure(proc.stdout) > MEASURED_EXPOSURE


def test_unit_contract() -> None:
    """The settings other parts rely on: notify + watchdog, the daemon command, reload, state dir."""
    text = (REPO / "systemd" / UNIT_NAME).read_text()
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    for expected in (
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={PREFIX}/venv/bin/edge-runtime run /etc/edge-runtime/config.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartPreventExitStatus=2",
        "StateDirectory=edge-runtime",
        "ConfigurationDirectory=edge-runtime",
        "User=edge-runtime",
        "DevicePolicy=closed",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
    ):
        assert expected in settings, expected
    watchdog = [s for s in settings if s.startswith("WatchdogSec=")]
    assert watchdog == ["WatchdogSec=30s"]
    # Credentials by name (searched in /etc/credstore, skipped when absent), never by absolute
    # path: a missing absolute path would stop a user without a password from starting at all.
    credentials = [s.split("=", 1)[1] for s in settings if s.startswith("LoadCredential=")]
    assert credentials, "no LoadCredential="
    assert all(not source.split(":", 1)[1].startswith("/") for source in credentials)


def installed_settings(root: Path, key: str) -> list[str]:
    """The values of ``key=`` in the installed unit and its drop-ins, in order."""
    files = [root / UNIT_PATH, *sorted((root / DROPIN_DIR).glob("*.conf"))]
    lines = [line.strip() for f in files for line in f.read_text().splitlines()]
    return [line.split("=", 1)[1] for line in lines if line.startswith(f"{key}=")]


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_a_board_is_allowed_only_the_devices_it_has(tmp_path: Path, board: str) -> None:
    """The Coral PCIe's apex class and group only where the board has one, and no device named by
    path that the board may lack: systemd warns "Couldn't stat device" at every start for it."""
    root = tmp_path / "root"
    install(root, "--board", board)
    allowed = installed_settings(root, "DeviceAllow")
    groups = " ".join(installed_settings(root, "SupplementaryGroups")).split()
    coral_pcie = board.endswith("coral-pcie")
    assert any("apex" in entry for entry in allowed) == coral_pcie, allowed
    assert ("apex" in groups) == coral_pcie, groups
    by_path = {entry.split()[0] for entry in allowed if entry.startswith("/")}
    assert by_path <= ({"/dev/nvmap"} if board == "jetson" else set()), by_path  # nvmap: every Jetson


# -- install.sh -----------------------------------------------------------------------------------
def test_install_root_stages_expected_files_and_modes(tmp_path: Path) -> None:
    """--root: unit, drop-in, config (0640), example, models and share/systemd; no venv, no host changes."""
    root = tmp_path / "root"
    proc = install(root, "--board", "generic")
    models = sorted(p.relative_to(REPO) for p in (REPO / "models").rglob("*") if p.is_file())
    expected = {
        str(UNIT_PATH): 0o644,
        str(DROPIN_DIR / "board-generic.conf"): 0o644,
        "etc/edge-runtime/config.yaml": 0o640,
        "etc/edge-runtime/config.yaml.example": 0o644,
        **{f"opt/edge-runtime/{rel}": 0o644 for rel in models},
        **{
            f"opt/edge-runtime/share/systemd/{p.relative_to(REPO / 'systemd')}": 0o644
            for p in (REPO / "systemd").rglob("*")
            if p.is_file()
        },
    }
    files = {str(p.relative_to(root)): mode(p) for p in root.rglob("*") if p.is_file()}
    assert files == expected
    for rel in models:
        assert (root / "opt/edge-runtime" / rel).read_bytes() == (REPO / rel).read_bytes()
    assert not (root / "opt/edge-runtime/venv").exists()
    for skipped in ("useradd --system", "groupadd --system video", "chgrp edge-runtime", "systemctl"):
        assert f"skipped under --root: {skipped}" in proc.stdout, skipped


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_install_board_picks_dropins_and_config(tmp_path: Path, board: str) -> None:
    """Each --board installs its drop-ins and the matching example config."""
    dropins, template = BOARDS[board]
    root = tmp_path / "root"
    proc = install(root, "--board", board)
    assert {p.name for p in (root / DROPIN_DIR).iterdir()} == dropins
    assert f"config from configs/{template}" in proc.stdout
    for name in dropins:
        shipped = REPO / "systemd" / "boards" / name.removeprefix("board-")
        assert (root / DROPIN_DIR / name).read_bytes() == shipped.read_bytes()


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_installed_config_is_valid_with_models_in_prefix(tmp_path: Path, board: str) -> None:
    """The installed config names the models under PREFIX/models and passes `edge-runtime validate`
    of the staged image (``--root``: its paths, unit and credentials are looked up below it)."""
    root = tmp_path / "root"
    install(root, "--board", board)
    config = (root / "etc/edge-runtime/config.yaml").read_text()
    assert "../" not in config
    assert f"path: {PREFIX}/models/" in config
    if board.endswith("coral-pcie"):
        assert re.search(r"^\s+device: pci:0\b", config, re.MULTILINE)
    if "ca_file: /etc/edge-runtime/ca.crt" in config:  # the Jetson example talks TLS to its broker
        make_ca(root / "etc/edge-runtime", "ca")
    proc = validate(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_install_twice_is_idempotent(tmp_path: Path) -> None:
    """A second run finds nothing to do: same tree, modes and hashes, and no action printed."""
    root = tmp_path / "root"
    install(root, "--board", "rpi-coral")
    before = snapshot(root)
    again = install(root, "--board", "rpi-coral")
    assert snapshot(root) == before
    assert actions(again.stdout) == []


def test_install_never_overwrites_an_edited_config(tmp_path: Path) -> None:
    """A config the user changed survives a re-install; the example next to it is refreshed."""
    root = tmp_path / "root"
    install(root, "--board", "generic")
    config = root / "etc/edge-runtime/config.yaml"
    example = root / "etc/edge-runtime/config.yaml.example"
    edited = config.read_text().replace("threads: 4", "threads: 3")
    config.write_text(edited)
    example.write_text("stale\n")
    proc = install(root, "--board", "jetson")
    assert config.read_text() == edited
    assert "configs/jetson.yaml" in example.read_text()
    assert "keeping the existing /etc/edge-runtime/config.yaml" in proc.stdout


def test_reinstall_for_another_board_replaces_its_dropins(tmp_path: Path) -> None:
    """Board drop-ins of an earlier install go; a drop-in of the user's own stays."""
    root = tmp_path / "root"
    install(root, "--board", "rpi-coral")
    own = root / DROPIN_DIR / "override.conf"
    own.write_text("[Service]\nEnvironment=EDGE_DEVICE_ID=cam-07\n")
    install(root, "--board", "jetson")
    assert {p.name for p in (root / DROPIN_DIR).iterdir()} == {"board-jetson.conf", "override.conf"}


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    """--dry-run prints every action and writes nothing, on an empty tree and on an installed one."""
    root = tmp_path / "root"
    proc = install(root, "--board", "generic", "--dry-run")
    assert not root.exists()
    assert any(line.endswith("/etc/systemd/system/edge-runtime.service") for line in actions(proc.stdout))
    assert "dry run: nothing was changed" in proc.stdout

    install(root, "--board", "generic")
    before = snapshot(root)
    proc = install(root, "--board", "coral-pcie", "--dry-run")
    assert snapshot(root) == before
    assert any("board-coral-pcie.conf" in line for line in actions(proc.stdout))


def test_prefix_moves_the_install_and_the_paths_that_name_it(tmp_path: Path) -> None:
    """--prefix: venv command in ExecStart, models in the config and files all follow it."""
    root = tmp_path / "root"
    install(root, "--board", "generic", "--prefix", "/srv/edge")
    unit = (root / UNIT_PATH).read_text()
    assert "ExecStart=/srv/edge/venv/bin/edge-runtime run /etc/edge-runtime/config.yaml" in unit
    assert "/opt/edge-runtime" not in unit
    assert "path: /srv/edge/models/" in (root / "etc/edge-runtime/config.yaml").read_text()
    assert (root / "srv/edge/models/efficientnet_lite0/model.yaml").is_file()
    assert not (root / "opt").exists()


@needs_analyze
def test_prefix_install_still_verifies(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root, "--board", "generic", "--prefix", "/srv/edge")
    add_stub_binaries(root, "/srv/edge")
    proc = verify(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--board", "beaglebone"),
        ("--prefix", "relative/path"),
        ("--prefix", "/"),
        ("--extras", "tflite;rm"),
        ("--frobnicate",),
    ],
)
def test_bad_usage_exits_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Bad options: exit 2 with a one-line reason, nothing written."""
    root = tmp_path / "root"
    proc = run_script(INSTALL, "--root", str(root), *args, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("install.sh: ")
    assert not root.exists()


def fake_machine(base: Path, model: str | None = None, files: dict[str, str] | None = None) -> Path:
    """A fake /proc, /sys, /dev, /etc for board detection."""
    base.mkdir(parents=True)
    if model is not None:
        path = base / "proc/device-tree/model"
        path.parent.mkdir(parents=True)
        path.write_bytes(model.encode() + b"\0")  # device-tree strings end in NUL
    for rel, content in (files or {}).items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return base


CORAL_USB = {"sys/bus/usb/devices/2-1/idVendor": "18d1\n", "sys/bus/usb/devices/2-1/idProduct": "9302\n"}
CORAL_USB_BEFORE_FIRMWARE = {
    "sys/bus/usb/devices/1-1.2/idVendor": "1a6e\n",
    "sys/bus/usb/devices/1-1.2/idProduct": "089a\n",
}
OTHER_USB = {"sys/bus/usb/devices/1-1/idVendor": "046d\n", "sys/bus/usb/devices/1-1/idProduct": "0825\n"}


@pytest.mark.parametrize(
    ("model", "files", "board"),
    [
        (None, {"etc/nv_tegra_release": "# R36 (release), REVISION: 4.0\n"}, "jetson"),
        ("NVIDIA Jetson Orin Nano Developer Kit", {}, "jetson"),
        ("Raspberry Pi 5 Model B Rev 1.0", OTHER_USB, "rpi"),
        ("Raspberry Pi 4 Model B Rev 1.4", CORAL_USB, "rpi-coral"),
        ("Raspberry Pi 4 Model B Rev 1.4", CORAL_USB_BEFORE_FIRMWARE, "rpi-coral"),
        ("Raspberry Pi 5 Model B Rev 1.0", {"dev/apex_0": ""}, "rpi-coral-pcie"),
        ("Radxa ROCK 5B", CORAL_USB, "coral-usb"),
        (None, {"dev/apex_0": ""}, "coral-pcie"),
        ("Pine64 RockPro64 v2.1", OTHER_USB, "generic"),
        (None, {}, "generic"),
    ],
)
def test_auto_detects_board(tmp_path: Path, model: str | None, files: dict[str, str], board: str) -> None:
    """--board auto reads the device-tree model, Tegra release file, USB ids and /dev/apex_0."""
    machine = fake_machine(tmp_path / "machine", model, files)
    root = tmp_path / "root"
    install(root, env={"EDGE_RUNTIME_DETECT_ROOT": str(machine)})
    assert {p.name for p in (root / DROPIN_DIR).iterdir()} == BOARDS[board][0]


# -- uninstall.sh ---------------------------------------------------------------------------------
def test_uninstall_removes_what_install_put_and_keeps_config_and_state(tmp_path: Path) -> None:
    """Unit, board drop-ins, models, share go; config, state, credentials and own drop-ins stay."""
    root = tmp_path / "root"
    install(root, "--board", "rpi-coral")
    kept = {
        "etc/edge-runtime/config.yaml",
        "etc/edge-runtime/config.yaml.example",
        "var/lib/edge-runtime/outbox.db",
        "etc/credstore/edge-runtime.mqtt_password",
        str(DROPIN_DIR / "override.conf"),
    }
    for rel in kept - {"etc/edge-runtime/config.yaml", "etc/edge-runtime/config.yaml.example"}:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x\n")
    proc = run_script(UNINSTALL, "--root", str(root))
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert files == kept
    assert not (root / "opt/edge-runtime").exists()
    assert "skipped under --root: systemctl disable --now" in proc.stdout


def test_uninstall_twice_and_on_an_empty_tree_is_fine(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root, "--board", "generic")
    run_script(UNINSTALL, "--root", str(root))
    before = snapshot(root)
    proc = run_script(UNINSTALL, "--root", str(root))
    assert snapshot(root) == before
    assert actions(proc.stdout) == []
    run_script(UNINSTALL, "--root", str(tmp_path / "empty"))


def test_uninstall_purge_removes_config_state_and_credentials(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root, "--board", "coral-pcie")
    for rel in (
        "var/lib/edge-runtime/outbox.db",
        "etc/credstore/edge-runtime.tls_key",
        "etc/credstore/other",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x\n")
    (root / DROPIN_DIR / "override.conf").write_text("[Service]\n")
    proc = run_script(UNINSTALL, "--root", str(root), "--purge")
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert files == {"etc/credstore/other"}  # only what is not ours
    assert "skipped under --root: userdel edge-runtime" in proc.stdout


def test_uninstall_dry_run_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root, "--board", "jetson")
    before = snapshot(root)
    proc = run_script(UNINSTALL, "--root", str(root), "--purge", "--dry-run")
    assert snapshot(root) == before
    assert any(line.endswith("/etc/edge-runtime") for line in actions(proc.stdout))
    assert "dry run: nothing was changed" in proc.stdout


# -- validation as the service will see its files, and upgrades ----------------------------------
# install.sh validates the installed config with the new edge-runtime before it restarts the
# service. Here the staged image gets an edge-runtime that runs this checkout, and SYSTEMCTL points
# install.sh at a stand-in that records its calls (is-active answers as the test says), so the
# service steps run under --root without a systemd.
def validate(root: Path, config: str = "/etc/edge-runtime/config.yaml") -> subprocess.CompletedProcess[str]:
    """`edge-runtime validate --root ROOT CONFIG` as an operator runs it: outside the unit."""
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime", "validate", "--root", str(root), config],
        check=False,
        capture_output=True,
        text=True,
        timeout=scaled(60),
        env=env,
    )


def stage_edge_runtime(root: Path, prefix: str = PREFIX) -> None:
    """PREFIX/venv/bin/edge-runtime in the image: this checkout, run by this interpreter."""
    path = root / prefix.lstrip("/") / "venv/bin/edge-runtime"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec {sys.executable} -m edge_runtime "$@"\n')
    path.chmod(0o755)


def fake_systemctl(tmp_path: Path, active: bool, failing: str = "none") -> tuple[Path, Path]:
    """A systemctl that logs each call; ``is-active`` says ``active``; the verb ``failing`` fails."""
    log, script = tmp_path / "systemctl.log", tmp_path / "systemctl"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{log}"\n'
        f'case "$1" in is-active) exit {0 if active else 3} ;; {failing}) exit 1 ;; esac\n'
    )
    script.chmod(0o755)
    return script, log


def upgrade(
    tmp_path: Path, root: Path, *, active: bool = True, failing: str = "none", args: tuple[str, ...] = ()
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """install.sh again over an installed image (the upgrade command): its result and systemctl calls."""
    script, log = fake_systemctl(tmp_path, active, failing)
    proc = run_script(
        INSTALL, "--root", str(root), "--board", "generic", *args, env={"SYSTEMCTL": str(script)}, check=False
    )
    return proc, log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A staged install for the generic board with a working edge-runtime in its venv."""
    root = tmp_path / "root"
    install(root, "--board", "generic")
    stage_edge_runtime(root)
    return root


def edit_config(root: Path, old: str, new: str) -> Path:
    config = root / "etc/edge-runtime/config.yaml"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))
    return config


def test_upgrade_restarts_the_service_once_the_new_version_validates_the_config(
    tmp_path: Path, image: Path
) -> None:
    proc, calls = upgrade(tmp_path, image)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls == [
        "is-active --quiet edge-runtime.service",
        "daemon-reload",
        "enable edge-runtime.service",
        "restart edge-runtime.service",
    ]
    assert "/etc/edge-runtime/config.yaml: ok" in proc.stdout


def test_upgrade_with_a_config_the_new_version_refuses_exits_1_and_does_not_restart(
    tmp_path: Path, image: Path
) -> None:
    """Before: "not valid yet", exit 0, no restart: the old version went on running unnoticed."""
    config = edit_config(
        image, "  host: ${MQTT_HOST:-localhost}", "  host: ${MQTT_HOST:-localhost}\n  port: nope"
    )
    proc, calls = upgrade(tmp_path, image)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{config}:10: mqtt.port: Input should be a valid integer" in proc.stderr
    assert "was NOT restarted and still runs the previous version" in proc.stderr
    assert not any(c.startswith(("restart", "start", "stop")) for c in calls), calls


def test_first_install_with_a_config_not_valid_yet_leaves_the_service_stopped(
    tmp_path: Path, image: Path
) -> None:
    edit_config(image, "  host: ${MQTT_HOST:-localhost}", "  hots: broker")
    proc, calls = upgrade(tmp_path, image, active=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "is not valid yet (see above): fix it, then systemctl start" in proc.stdout
    assert "mqtt.hots: unknown key; did you mean 'host'?" in proc.stderr
    assert not any(c.startswith(("restart", "start")) for c in calls), calls


def test_upgrade_whose_restart_fails_exits_1(tmp_path: Path, image: Path) -> None:
    proc, calls = upgrade(tmp_path, image, failing="restart")
    assert proc.returncode == 1
    assert "did not restart with the new version" in proc.stderr
    assert calls[-1] == "restart edge-runtime.service"


def test_upgrade_with_no_start_says_the_previous_version_keeps_running(tmp_path: Path, image: Path) -> None:
    proc, calls = upgrade(tmp_path, image, args=("--no-start",))
    assert proc.returncode == 0
    assert "keeps running the previous version until systemctl restart" in proc.stdout
    assert "restart edge-runtime.service" not in calls


MQTT_WITH_CREDENTIALS = """\
  host: ${MQTT_HOST:-localhost}
  username: edge
  password_file: mqtt_password
  tls:
    ca_file: /etc/edge-runtime/ca.crt
    cert_file: /etc/edge-runtime/client.crt
    key_file: ${CREDENTIALS_DIRECTORY}/tls_key"""


def documented_credentials(root: Path) -> Path:
    """The credential set-up of docs/systemd.md: credstore files, the config naming them."""
    etc = root / "etc/edge-runtime"
    _, ca_key, ca_cert = make_ca(etc, "ca")
    cert, key = make_server_cert(etc, ca_key, ca_cert)
    cert.rename(etc / "client.crt")
    store = root / "etc/credstore"
    store.mkdir(mode=0o700)
    (store / "edge-runtime.mqtt_password").write_text("the-password")
    key.rename(store / "edge-runtime.tls_key")
    return edit_config(root, "  host: ${MQTT_HOST:-localhost}", MQTT_WITH_CREDENTIALS)


def test_validate_outside_the_unit_finds_the_credentials_where_systemd_will(image: Path) -> None:
    """Before: "password file mqtt_password not found (looked in /etc/edge-runtime/mqtt_password)"
    and "environment variable CREDENTIALS_DIRECTORY is not set", so the documented reload
    procedure failed at its validate step."""
    documented_credentials(image)
    proc = validate(image)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("missing", "key", "message"),
    [
        (
            "edge-runtime.mqtt_password",
            "mqtt.password_file",
            "password file mqtt_password not found (looked in "
            "/run/credentials/edge-runtime.service/mqtt_password: credential mqtt_password "
            "(/etc/systemd/system/edge-runtime.service:103) is edge-runtime.mqtt_password in none of "
            "/etc/credstore, /run/credstore, /usr/local/lib/credstore, /usr/lib/credstore, so systemd "
            "leaves it out; /etc/edge-runtime/mqtt_password (here {image}/etc/edge-runtime/mqtt_password) "
            "does not exist)",
        ),
        (
            "edge-runtime.tls_key",
            "mqtt.tls.key_file",
            "/run/credentials/edge-runtime.service/tls_key: credential tls_key "
            "(/etc/systemd/system/edge-runtime.service:104) is edge-runtime.tls_key in none of "
            "/etc/credstore, /run/credstore, /usr/local/lib/credstore, /usr/lib/credstore, so systemd "
            "leaves it out",
        ),
    ],
)
def test_a_credential_systemd_will_not_find_fails_validation_and_the_upgrade(
    tmp_path: Path, image: Path, missing: str, key: str, message: str
) -> None:
    config = documented_credentials(image)
    (image / "etc/credstore" / missing).unlink()
    line = next(
        i
        for i, text in enumerate(config.read_text().splitlines(), 1)
        if text.strip().startswith(key.rsplit(".", maxsplit=1)[-1])
    )
    proc = validate(image)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"{config}:{line}: {key}: {message.format(image=image)}"]
    upgraded, calls = upgrade(tmp_path, image)
    assert upgraded.returncode == 1 and "restart edge-runtime.service" not in calls


def test_credentials_from_paths_of_the_optional_dropin(image: Path) -> None:
    """optional/credentials-paths.conf: absolute paths; a missing one would fail every start."""
    config = documented_credentials(image)
    shutil.copy(REPO / "systemd/optional/credentials-paths.conf", image / DROPIN_DIR / "credentials.conf")
    proc = validate(image)
    assert proc.returncode == 2
    assert "/etc/edge-runtime/secrets/client.key" in proc.stderr and "243/CREDENTIALS" in proc.stderr
    secrets = image / "etc/edge-runtime/secrets"
    secrets.mkdir()
    (image / "etc/credstore/edge-runtime.tls_key").rename(secrets / "client.key")
    (image / "etc/credstore/edge-runtime.mqtt_password").rename(secrets / "mqtt_password")
    proc = validate(image)
    assert proc.returncode == 0, proc.stderr
    assert config.is_file()


def test_inside_the_unit_the_credentials_directory_is_used_as_it_is(tmp_path: Path, image: Path) -> None:
    """ExecStartPre=edge-runtime validate, or run: $CREDENTIALS_DIRECTORY is the truth."""
    config = documented_credentials(image)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("pw\n")
    shutil.copy(image / "etc/credstore/edge-runtime.tls_key", creds / "tls_key")
    shutil.rmtree(image / "etc/credstore")
    text = config.read_text().replace("/etc/edge-runtime/", f"{image}/etc/edge-runtime/")
    config.write_text(text.replace(f"{PREFIX}/models/", f"{image}{PREFIX}/models/"))
    env = dict(os.environ, CREDENTIALS_DIRECTORY=str(creds))
    command = [sys.executable, "-m", "edge_runtime", "validate", str(config)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=scaled(60), env=env, check=False)
    assert proc.returncode == 0, proc.stderr


@needs_analyze
def test_the_ip_allowlist_dropin_lowers_the_exposure(tmp_path: Path) -> None:
    """With the status page or metrics port open, the unit is unchanged (same score); the optional
    allow-list drop-in pins who may connect, and the score drops (docs/integrations.md)."""
    root = staged(tmp_path)
    shutil.copy(REPO / "systemd" / "optional" / "ip-allowlist.conf", root / DROPIN_DIR / "ip-allowlist.conf")
    proc = security(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert exposure(proc.stdout) < MEASURED_EXPOSURE
