#!/usr/bin/env bash
# Run the test suite (or any pytest selection) on arm64, emulated, on an x86_64 Debian/Ubuntu host.
#
#   sudo scripts/arm64.sh                        # the not-slow suite
#   sudo scripts/arm64.sh tests/model -k golden  # any pytest arguments
#   sudo scripts/arm64.sh --shell                # a shell inside the root
#   sudo scripts/arm64.sh --exec CMD ARGS...     # any command inside the root (in /src)
#
# Builds a Debian bookworm arm64 root (Python 3.11, mosquitto, systemd's tools) with mmdebstrap,
# puts aarch64 wheels of every dependency into a venv inside it (the host's pip downloads them:
# emulated pip is slow), copies this working tree into it and runs pytest there under
# qemu-user. Idempotent: the root is built once (ARM64_ROOT, default /var/tmp/edge-runtime-arm64)
# and reused while pyproject.toml is unchanged; ARM64_FRESH=1 rebuilds it. Mounts are removed on
# exit, whatever happens. Each step prints its time.
#
# Traps handled (measured, docs/arm64.md):
# - QEMU_CPU=cortex-a76 (a Pi 5's core): qemu's default "max" CPU mis-emulates SME and LiteRT's
#   XNNPACK then classifies the espresso photo as a plunger.
# - qemu 7.2 shows the host's x86 /proc/cpuinfo, on which onnxruntime crashes at import: an
#   aarch64 cpuinfo is bind-mounted over it.
# - a minimal root has no /etc/hosts (localhost does not resolve: TLS tests fail).
# - pip uses the host's CA bundle (PIP_CERT) where traffic goes through an intercepting proxy.
#
# The emulated run sets EDGE_RUNTIME_TEST_TIMEOUT_SCALE (tests/timeouts.py; 8 unless set) and
# EDGE_RUNTIME_EMULATED=qemu-aarch64 (the few tests that measure what emulation changes skip
# with that reason).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

ROOT="${ARM64_ROOT:-/var/tmp/edge-runtime-arm64}"
SUITE="${ARM64_SUITE:-bookworm}"
QEMU_CPU="${QEMU_CPU:-cortex-a76}"
SCALE="${EDGE_RUNTIME_TEST_TIMEOUT_SCALE:-8}"
VENV=/opt/venv
SITE="$ROOT$VENV/lib/python3.11/site-packages"
STAMP="$ROOT/.edge-runtime-root"

[[ $(id -u) -eq 0 ]] || { echo "scripts/arm64.sh: run as root (mmdebstrap, chroot, mounts)" >&2; exit 1; }
[[ $(uname -m) == x86_64 || $(uname -m) == aarch64 ]] || { echo "unsupported host $(uname -m)" >&2; exit 1; }

T0=$(date +%s)
step_start=$T0
step() {  # step NAME: print how long the previous step took, then the new step's name
    local now
    now=$(date +%s)
    [[ -n "${STEP:-}" ]] && printf 'arm64: %-28s %4ds\n' "$STEP" $((now - step_start))
    STEP="$1"
    step_start=$now
    [[ -n "$1" ]] && echo "arm64: -> $1"
    return 0
}

MOUNTS=()
cleanup() {  # unmount in reverse order; lazily, so a busy mount still goes once its users exit
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount -l "${MOUNTS[i]}" 2>/dev/null || true
    done
    MOUNTS=()
}
trap cleanup EXIT INT TERM
bind() {  # bind SRC DEST (DEST inside the root)
    mkdir -p "$2"
    mount --bind "$1" "$2"
    MOUNTS+=("$2")
}

apt_install() {  # apt_install PKG...: waits for another apt to finish rather than failing
    apt-get -o DPkg::Lock::Timeout=900 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq "$@" >/dev/null
}

# -- 1. host tools -------------------------------------------------------------------------------
step "host tools"
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if [[ $(uname -m) != aarch64 ]]; then
    command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
    command -v update-binfmts >/dev/null || need+=(binfmt-support)
fi
((${#need[@]} == 0)) || apt_install "${need[@]}"
if [[ $(uname -m) != aarch64 ]]; then
    [[ -e /proc/sys/fs/binfmt_misc/status ]] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    # qemu-user-static registers with flag F: the kernel keeps the interpreter open, nothing is
    # copied into the root
    [[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] || update-binfmts --enable qemu-aarch64 \
        || update-binfmts --import qemu-aarch64
    [[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] || { echo "arm64: qemu-aarch64 binfmt not registered" >&2; exit 1; }
fi

# -- 2. the root -----------------------------------------------------------------------------------
if [[ "${ARM64_FRESH:-0}" == 1 || ! -f "$STAMP" || "$(cat "$STAMP")" != "$SUITE v2" ]]; then
    step "root (mmdebstrap)"
    cleanup
    rm -rf --one-file-system "$ROOT"
    # apt runs natively (mmdebstrap), maintainer scripts under qemu. systemd: its tools
    # (systemd-analyze for tests/test_systemd.py), never PID 1 here; man-db: verify runs
    # `man` on the unit's Documentation= pages.
    mmdebstrap --arch=arm64 --variant=apt --mode=root \
        --include=python3,python3-venv,mosquitto,systemd,man-db,libglib2.0-0 \
        "$SUITE" "$ROOT" >/dev/null
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
    step "venv (emulated)"
    chroot "$ROOT" /usr/bin/python3 -m venv --without-pip "$VENV"
    echo "$SUITE v2" >"$STAMP"
else
    step "root (reused)"
fi

# the dependencies, again whenever pyproject.toml changes: the host's pip resolves and unpacks
# aarch64 wheels straight into the root's venv (ai-edge-litert has only a manylinux_2_27 wheel,
# onnxruntime a 2_28 one)
wanted="$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$STAMP.wheels" || "$(cat "$STAMP.wheels")" != "$wanted" ]]; then
    step "wheels (host pip, aarch64)"
    reqs=$(python3 - <<'PY'
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = p["optional-dependencies"]
print("\n".join(p["dependencies"] + extras["all"] + extras["test"]))
PY
)
    mapfile -t reqs <<<"$reqs"
    python3 -m pip install -q --upgrade --no-warn-script-location --no-warn-conflicts \
        --disable-pip-version-check --root-user-action=ignore \
        ${PIP_CERT:+--cert "$PIP_CERT"} \
        --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 \
        --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp \
        --only-binary=:all: --target "$SITE" "${reqs[@]}"
    echo "$wanted" >"$STAMP.wheels"
fi

# -- 3. the project from the working tree --------------------------------------------------------------
step "project (working tree)"
rm -rf "$ROOT/src"
mkdir -p "$ROOT/src"
# what git would commit: tracked files and new ones that are not ignored (no .venv, no caches)
git ls-files -z --cached --others --exclude-standard | (cd "$REPO" && xargs -0 tar -c --ignore-failed-read -f - 2>/dev/null) \
    | tar -x -C "$ROOT/src"
# the package itself, as pip would install it: a .pth to the copied tree (no emulated build)
echo /src >"$SITE/edge_runtime_src.pth"
cat >"$ROOT$VENV/bin/edge-runtime" <<EOF
#!$VENV/bin/python
import sys
from edge_runtime.cli import main
sys.exit(main())
EOF
chmod +x "$ROOT$VENV/bin/edge-runtime"

# -- 4. mounts -------------------------------------------------------------------------------------------
step "mounts"
mkdir -p "$ROOT/proc" "$ROOT/sys" "$ROOT/dev" "$ROOT/tmp"
mount -t proc proc "$ROOT/proc" && MOUNTS+=("$ROOT/proc")
bind /sys "$ROOT/sys"
bind /dev "$ROOT/dev"
bind /dev/pts "$ROOT/dev/pts"  # ptys (the serial sensor tests); a bind of /dev does not carry it
mount -t tmpfs -o mode=1777 tmpfs "$ROOT/tmp" && MOUNTS+=("$ROOT/tmp")
mount -t tmpfs -o mode=1777 tmpfs "$ROOT/dev/shm" && MOUNTS+=("$ROOT/dev/shm")
if [[ $(uname -m) != aarch64 ]] && ! grep -q '^CPU implementer' /proc/cpuinfo; then
    # what a 4-core Cortex-A76 (a Pi 5) reports; qemu 7.2 passes the host's file through
    mkdir -p "$ROOT/etc/edge-runtime-arm64"
    for i in 0 1 2 3; do
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n' "$i"
    done >"$ROOT/etc/edge-runtime-arm64/cpuinfo"
    mount --bind "$ROOT/etc/edge-runtime-arm64/cpuinfo" "$ROOT/proc/cpuinfo"
    MOUNTS+=("$ROOT/proc/cpuinfo")
fi

inside() {  # inside CMD...: run in the root as an arm64 process, with a clean environment
    chroot "$ROOT" /usr/bin/env -i \
        PATH="$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        HOME=/root LANG=C.UTF-8 TMPDIR=/tmp QEMU_CPU="$QEMU_CPU" \
        EDGE_RUNTIME_TEST_TIMEOUT_SCALE="$SCALE" EDGE_RUNTIME_EMULATED=qemu-aarch64 \
        PYTHONDONTWRITEBYTECODE=1 \
        /bin/sh -c 'cd /src && exec "$@"' sh "$@"
}

step "check (arch, golden answers)"
# the bundled classifier's golden answer on ARM's kernels, both runtimes (one emulated start)
inside python -c '
import platform, sys, cv2
from pathlib import Path
from edge_runtime.inference import BackendOptions
from edge_runtime.model import Runner, load_model
print("arm64:", platform.machine(), "Python", sys.version.split()[0])
image = cv2.imread("tests/data/coffee.jpg")
for kind in ("onnx", "tflite"):
    top = Runner(load_model(Path("models/efficientnet_lite0"), kind, BackendOptions(threads=2))).predict(image).classes[0]
    print(f"arm64: coffee.jpg on {kind}: {top.label} {top.score:.3f}")
    if top.label != "espresso":
        sys.exit(f"arm64: {kind} does not see the espresso")
'

if [[ "${1:-}" == "--shell" ]]; then
    step "shell"
    inside bash
    exit 0
fi
if [[ "${1:-}" == "--exec" ]]; then
    shift
    step "exec $*"
    status=0
    inside "$@" || status=$?
    step ""
    exit "$status"
fi
# -- 5. the tests ------------------------------------------------------------------------------------------
step "pytest $*"
status=0
inside python -m pytest -p no:cacheprovider "${@:--m not slow}" || status=$?
step ""
echo "arm64: total $(($(date +%s) - T0))s, pytest exit $status"
exit "$status"
