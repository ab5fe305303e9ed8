#!/usr/bin/env bash
# Install edge-runtime as a hardened systemd service on this board.
#
#   sudo scripts/install.sh                  detect the board, install, enable and start
#   scripts/install.sh --dry-run             print every action, change nothing
#   scripts/install.sh --root DIR --board B  stage the files under DIR (packaging, tests)
#
# What it installs (paths as seen on the target; under --root they are staged below DIR):
#   PREFIX/venv                           virtualenv with edge-runtime and the board's extras
#   PREFIX/models/                        the bundled models (the example configs point here)
#   PREFIX/share/systemd/                 the unit, board drop-ins and optional drop-ins, for reference
#   /etc/edge-runtime/config.yaml         the board's example config, ONLY if there is none yet
#   /etc/edge-runtime/config.yaml.example the same example, refreshed on every run
#   /etc/systemd/system/edge-runtime.service
#   /etc/systemd/system/edge-runtime.service.d/board-*.conf   the board's drop-ins
# plus the system user "edge-runtime" and the groups video, plugdev (and apex for Coral PCIe).
#
# Running it again is safe: files are rewritten only when their content changed, a config you
# edited is never touched, drop-ins of another board are removed, and a running service is
# restarted so it picks up the new code (after its config passes validation by that code).
#
# Options:
#   --board B     auto (default) | jetson | rpi | rpi-coral | rpi-coral-pcie | coral-usb |
#                 coral-pcie | generic      (see boards() below for what each one installs)
#   --prefix DIR  install prefix (default /opt/edge-runtime)
#   --root DIR    stage everything under DIR: no useradd/groupadd/chown/systemctl (printed
#                 instead) and no virtualenv (a venv hard-codes its own path, so one built under
#                 DIR would not work once moved; build it on the target)
#   --extras E    pip extras instead of the board's default (e.g. "onnx", "all"; "none" for none)
#   --no-venv     do not create the virtualenv or run pip (you provide PREFIX/venv yourself)
#   --no-start    install and enable the service, but do not start it
#   --dry-run     print every action, change nothing
#   -h, --help    this text
# Environment: PYTHON (default python3) creates the venv; EDGE_RUNTIME_DETECT_ROOT makes board
# detection read /proc, /sys, /dev and /etc below that folder instead (for tests); SYSTEMCTL is
# the systemctl to call (for tests: with --root, the service steps then run against it, and the
# config is validated with the staged edge-runtime and unit, instead of being skipped).
#
# An upgrade (the service was running) validates the config with the new code first, then
# restarts the service; if the config is not valid for the new version it exits 1 and says so,
# and the service keeps running the previous version until you fix the config and restart it.
#
# Exit status: 0 done, 2 bad usage, 1 an action failed (or an upgrade could not restart).
set -euo pipefail
umask 022

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
UNIT="edge-runtime.service"
UNIT_DIR=/etc/systemd/system
CONF_DIR=/etc/edge-runtime
SERVICE_USER="edge-runtime"
STATE_DIR=/var/lib/edge-runtime
DEFAULT_PREFIX=/opt/edge-runtime

ROOT=""
PREFIX=$DEFAULT_PREFIX
BOARD=auto
EXTRAS=""
EXTRAS_SET=0
NO_VENV=0
NO_START=0
DRY_RUN=0
PYTHON=${PYTHON:-python3}
DETECT_ROOT=${EDGE_RUNTIME_DETECT_ROOT:-}
SYSTEMCTL=${SYSTEMCTL:-}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
bad_usage() { echo "install.sh: $*" >&2; echo "try: install.sh --help" >&2; exit 2; }
fail() { echo "install.sh: $*" >&2; exit 1; }
note() { echo "install.sh: $*"; }

# -- actions: printed, and skipped under --dry-run ------------------------------------------------
show() { local prefix=$1; shift; printf '%s' "$prefix"; printf ' %q' "$@"; printf '\n'; }

act() {
    show "+" "$@"
    [[ $DRY_RUN == 1 ]] || "$@"
}

# Only on a live install (not under --root): user, groups, ownership, systemctl.
host_act() {
    if [[ -n $ROOT ]]; then
        show "skipped under --root:" "$@"
    else
        act "$@"
    fi
}

# install_file SRC DEST MODE: DEST (a target path) gets SRC's content and MODE, unless it already has both.
install_file() {
    local src=$1 dest=$ROOT$2 mode=$3
    if [[ -f $dest ]] && cmp -s "$src" "$dest" && [[ $(stat -c %a "$dest") == "${mode#0}" ]]; then
        return 0
    fi
    act install -D -m "$mode" "$src" "$dest"
}

# -- arguments ------------------------------------------------------------------------------------
while (($#)); do
    case $1 in
        --board) BOARD=${2:?--board needs a value}; shift 2 ;;
        --board=*) BOARD=${1#*=}; shift ;;
        --prefix) PREFIX=${2:?--prefix needs a value}; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --root) ROOT=${2:?--root needs a value}; shift 2 ;;
        --root=*) ROOT=${1#*=}; shift ;;
        --extras) EXTRAS=${2?--extras needs a value}; EXTRAS_SET=1; shift 2 ;;
        --extras=*) EXTRAS=${1#*=}; EXTRAS_SET=1; shift ;;
        --no-venv) NO_VENV=1; shift ;;
        --no-start) NO_START=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) bad_usage "unknown argument: $1" ;;
    esac
done

[[ $PREFIX == /* && $PREFIX != / && $PREFIX =~ ^[A-Za-z0-9._/-]+$ ]] \
    || bad_usage "--prefix must be an absolute path of letters, digits, . _ - / (got: $PREFIX)"
PREFIX=${PREFIX%/}
if [[ -n $ROOT ]]; then
    ROOT=$(realpath -m -- "$ROOT")
    [[ $ROOT != / ]] || ROOT=""
fi
[[ $EXTRAS == none ]] && EXTRAS=""
[[ $EXTRAS =~ ^[a-z0-9,_-]*$ ]] || bad_usage "--extras: a comma-separated list of extras (got: $EXTRAS)"
if [[ -z $ROOT && $DRY_RUN == 0 && $EUID != 0 ]]; then
    bad_usage "installing on this machine needs root (or use --root DIR, or --dry-run)"
fi

# -- the board ------------------------------------------------------------------------------------
# A board is a KIND (jetson | rpi | generic: the board's own drop-in, config and extras) plus the
# Coral Edge TPU on it, if any (none | usb | pcie: one more drop-in).
device_model() {
    local f=$DETECT_ROOT/proc/device-tree/model
    if [[ -r $f ]]; then tr -d '\0' <"$f"; fi
}

coral_usb_present() {
    local d vendor product
    for d in "$DETECT_ROOT"/sys/bus/usb/devices/*; do
        [[ -r $d/idVendor && -r $d/idProduct ]] || continue
        vendor=$(<"$d/idVendor") product=$(<"$d/idProduct")
        # 1a6e:089a before its firmware is loaded, 18d1:9302 after.
        [[ $vendor:$product == 1a6e:089a || $vendor:$product == 18d1:9302 ]] && return 0
    done
    if [[ -z $DETECT_ROOT ]] && command -v lsusb >/dev/null; then
        lsusb -d 1a6e:089a >/dev/null 2>&1 || lsusb -d 18d1:9302 >/dev/null 2>&1
        return
    fi
    return 1
}

detect_board() {
    local model kind=generic coral=none
    model=$(device_model)
    if [[ -e $DETECT_ROOT/etc/nv_tegra_release || $model == *NVIDIA* ]]; then
        kind=jetson
    elif [[ $model == *"Raspberry Pi"* ]]; then
        kind=rpi
    fi
    if [[ -e $DETECT_ROOT/dev/apex_0 ]]; then
        coral=pcie
    elif coral_usb_present; then
        coral=usb
    fi
    echo "$kind $coral"
}

# boards NAME -> "KIND CORAL"
boards() {
    case $1 in
        jetson) echo "jetson none" ;;
        rpi) echo "rpi none" ;;
        rpi-coral) echo "rpi usb" ;;
        rpi-coral-pcie) echo "rpi pcie" ;;
        coral-usb) echo "generic usb" ;;
        coral-pcie) echo "generic pcie" ;;
        generic) echo "generic none" ;;
        *) return 1 ;;
    esac
}

if [[ $BOARD == auto ]]; then
    read -r KIND CORAL < <(detect_board)
    note "detected board: $KIND, Coral: $CORAL (override with --board)"
else
    BOARD_SPEC=$(boards "$BOARD") || bad_usage "unknown board: $BOARD"
    read -r KIND CORAL <<<"$BOARD_SPEC"
fi

DROPINS=("$KIND")
[[ $CORAL == none ]] || DROPINS+=("coral-$CORAL")
GROUPS_NEEDED=(video plugdev)
[[ $CORAL == pcie ]] && GROUPS_NEEDED+=(apex)
if [[ $KIND == jetson ]]; then
    CONFIG_TEMPLATE=configs/jetson.yaml
elif [[ $CORAL != none ]]; then
    CONFIG_TEMPLATE=configs/rpi-coral.yaml
else
    CONFIG_TEMPLATE=configs/generic-arm.yaml
fi
if [[ $EXTRAS_SET == 0 ]]; then
    # Jetson: ONNX Runtime with CUDA/TensorRT is NVIDIA's onnxruntime-gpu wheel, not PyPI's
    # onnxruntime (CPU only, and it would shadow the GPU one). The venv sees system packages
    # instead, and the wheel is installed by you (see the note printed at the end).
    # Elsewhere: LiteRT (XNNPACK on the CPU, the Edge TPU delegate with a Coral).
    if [[ $KIND == jetson ]]; then EXTRAS=""; else EXTRAS="tflite"; fi
fi
note "installing for board $KIND, Coral $CORAL, into ${ROOT:-/}: prefix $PREFIX," \
    "extras ${EXTRAS:-none}, drop-ins ${DROPINS[*]}, config from $CONFIG_TEMPLATE"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# -- user and groups ------------------------------------------------------------------------------
create_identity() {
    local g nologin=/usr/sbin/nologin
    [[ -x $nologin ]] || nologin=/sbin/nologin
    [[ -x $nologin ]] || nologin=/bin/false
    for g in "${GROUPS_NEEDED[@]}"; do
        if [[ -n $ROOT ]] || ! getent group "$g" >/dev/null; then
            host_act groupadd --system "$g"
        fi
    done
    if [[ -n $ROOT ]] || ! getent passwd "$SERVICE_USER" >/dev/null; then
        # its own group, or the one a previous install (or an admin) already made
        local group_arg=--user-group
        [[ -z $ROOT ]] && getent group "$SERVICE_USER" >/dev/null && group_arg="--gid=$SERVICE_USER"
        host_act useradd --system "$group_arg" --home-dir "$STATE_DIR" --no-create-home \
            --shell "$nologin" --comment "edge-runtime daemon" "$SERVICE_USER"
    fi
}

# -- virtualenv -----------------------------------------------------------------------------------
create_venv() {
    local venv=$PREFIX/venv spec=$SRC venv_args=()
    if [[ $NO_VENV == 1 ]]; then
        note "--no-venv: expecting edge-runtime at $venv/bin/edge-runtime"
        return
    fi
    [[ -n $EXTRAS ]] && spec="${SRC}[$EXTRAS]"
    [[ $KIND == jetson ]] && venv_args+=(--system-site-packages)
    if [[ -n $ROOT ]]; then
        show "skipped under --root:" "$PYTHON" -m venv "${venv_args[@]}" "$venv"
        show "skipped under --root:" "$venv/bin/python" -m pip install --quiet --upgrade "$spec"
        return
    fi
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
        || fail "edge-runtime needs Python >= 3.10 ($PYTHON is older or missing; set PYTHON=...)"
    if [[ ! -x $venv/bin/python ]]; then
        if ! act "$PYTHON" -m venv "${venv_args[@]}" "$venv"; then
            command -v apt-get >/dev/null || fail "python venv is missing: install python3-venv"
            act rm -rf "$venv"
            act apt-get install -y -qq python3-venv
            act "$PYTHON" -m venv "${venv_args[@]}" "$venv"
        fi
    fi
    act "$venv/bin/python" -m pip install --quiet --upgrade "$spec"
}

# -- files ----------------------------------------------------------------------------------------
install_tree() {  # install_tree SRC_DIR TARGET_DIR: every file, mode 0644
    local src=$1 dest=$2 f
    while IFS= read -r -d '' f; do
        install_file "$src/$f" "$dest/$f" 0644
    done < <(cd "$src" && find . -type f ! -name '*.pyc' -printf '%P\0' | sort -z)
}

render_config() {  # the board's example config with model paths pointing at PREFIX/models
    local out=$1 sed_args=(-e "s#\\.\\./models/#$PREFIX/models/#g")
    [[ $CORAL == pcie ]] && sed_args+=(-e 's/^\([[:space:]]*device:[[:space:]]*\)usb\([[:space:]]\)/\1pci:0\2/')
    {
        echo "# edge-runtime config for this board (from $CONFIG_TEMPLATE; models in $PREFIX/models)."
        echo "# Yours to edit: install.sh never overwrites it (it refreshes config.yaml.example)."
        echo "# Check: $PREFIX/venv/bin/edge-runtime validate $CONF_DIR/config.yaml"
        echo "# Apply: systemctl reload edge-runtime"
        # Relative paths in a config are relative to its folder, /etc/edge-runtime: make the bundled
        # models absolute. A Coral on PCIe is device pci:0 rather than usb.
        sed "${sed_args[@]}" "$SRC/$CONFIG_TEMPLATE"
    } >"$out"
}

install_config() {
    local example=$TMP/config.yaml
    render_config "$example"
    install_file "$example" "$CONF_DIR/config.yaml.example" 0644
    if [[ -e $ROOT$CONF_DIR/config.yaml ]]; then
        note "keeping the existing $CONF_DIR/config.yaml (compare with config.yaml.example)"
    else
        # 0640 root:edge-runtime: it may hold passwords (camera URLs, ${VAR:-default} values).
        install_file "$example" "$CONF_DIR/config.yaml" 0640
        host_act chgrp "$SERVICE_USER" "$CONF_DIR/config.yaml"
    fi
}

install_unit() {
    local unit=$TMP/$UNIT name wanted f dropin_dir=$UNIT_DIR/$UNIT.d
    sed -e "s#/opt/edge-runtime/venv/bin/edge-runtime#$PREFIX/venv/bin/edge-runtime#" \
        -e "s#/opt/edge-runtime/share/systemd#$PREFIX/share/systemd#g" \
        "$SRC/systemd/$UNIT" >"$unit"
    install_file "$unit" "$UNIT_DIR/$UNIT" 0644
    for name in "${DROPINS[@]}"; do
        install_file "$SRC/systemd/boards/$name.conf" "$dropin_dir/board-$name.conf" 0644
    done
    # drop-ins of another board from an earlier run
    for f in "$ROOT$dropin_dir"/board-*.conf; do
        [[ -e $f ]] || continue
        name=$(basename "$f" .conf)
        name=${name#board-}
        wanted=0
        for w in "${DROPINS[@]}"; do [[ $w == "$name" ]] && wanted=1; done
        [[ $wanted == 1 ]] || act rm -f "$f"
    done
}

# -- systemd --------------------------------------------------------------------------------------
start_service() {
    local edge=$ROOT$PREFIX/venv/bin/edge-runtime was_active=0 systemctl=${SYSTEMCTL:-systemctl}
    if [[ -n $ROOT && -z $SYSTEMCTL ]]; then
        echo "skipped under --root: systemctl daemon-reload && systemctl enable --now $UNIT"
        return
    fi
    if [[ -z $SYSTEMCTL && ! -d /run/systemd/system ]]; then
        note "systemd is not running here (not PID 1): enable the service on the target with" \
            "systemctl daemon-reload && systemctl enable --now $UNIT"
        return
    fi
    "$systemctl" is-active --quiet "$UNIT" && was_active=1
    act "$systemctl" daemon-reload
    act "$systemctl" enable "$UNIT"
    if [[ $NO_START == 1 ]]; then
        if [[ $was_active == 1 ]]; then
            note "--no-start: $UNIT keeps running the previous version until systemctl restart $UNIT"
        else
            note "--no-start: start it with systemctl start $UNIT"
        fi
        return
    fi
    # Validate with the new code, outside the unit: it looks credentials up where systemd will.
    # An upgrade never leaves the old version running silently: it restarts into the new one, or
    # exits non-zero saying why it did not.
    if [[ $DRY_RUN == 0 ]] && ! validate_config "$edge"; then
        if [[ $was_active == 1 ]]; then
            fail "$CONF_DIR/config.yaml is not valid for the new version (see above): $UNIT was NOT" \
                "restarted and still runs the previous version; fix the config, then systemctl restart $UNIT"
        fi
        note "$CONF_DIR/config.yaml is not valid yet (see above): fix it, then systemctl start $UNIT"
        return
    fi
    if [[ $was_active == 1 ]]; then
        act "$systemctl" restart "$UNIT" || fail "$UNIT did not restart with the new version:" \
            "systemctl status $UNIT, journalctl -u $UNIT"
    else
        act "$systemctl" start "$UNIT" || fail "$UNIT did not start: systemctl status $UNIT, journalctl -u $UNIT"
    fi
    note "running: systemctl status $UNIT, journalctl -u $UNIT -f"
}

# validate_config EDGE: the installed config checked by the installed edge-runtime (under --root:
# the staged ones, with the staged unit and credentials).
validate_config() {
    local edge=$1
    if [[ ! -x $edge ]]; then
        fail "cannot check $CONF_DIR/config.yaml: $PREFIX/venv/bin/edge-runtime is missing" \
            "(with --no-venv, install edge-runtime there first)"
    fi
    if [[ -n $ROOT ]]; then
        "$edge" validate --root "$ROOT" "$CONF_DIR/config.yaml"
    else
        "$edge" validate "$CONF_DIR/config.yaml"
    fi
}

final_notes() {
    if [[ $CORAL != none ]] && [[ -z $ROOT ]] && ! ldconfig -p 2>/dev/null | grep -q 'libedgetpu\.so\.1'; then
        note "the Edge TPU runtime is not installed: apt-get install libedgetpu1-std" \
            "(from Coral's apt repository); until then the model runs on the CPU if the config allows it"
    fi
    if [[ $KIND == jetson ]]; then
        note "Jetson: install NVIDIA's onnxruntime-gpu wheel for your JetPack (system-wide or into" \
            "$PREFIX/venv) so the TensorRT and CUDA providers are available"
    fi
    if [[ $DRY_RUN == 1 ]]; then
        note "dry run: nothing was changed"
    fi
}

create_identity
create_venv
install_tree "$SRC/models" "$PREFIX/models"
install_tree "$SRC/systemd" "$PREFIX/share/systemd"
install_config
install_unit
start_service
final_notes
