#!/usr/bin/env bash
# Remove the edge-runtime service that scripts/install.sh installed.
#
#   sudo scripts/uninstall.sh            stop and disable the service; remove the unit, the board
#                                        drop-ins, the virtualenv, the models and PREFIX/share
#   sudo scripts/uninstall.sh --purge    also the config (/etc/edge-runtime), the state (outbox,
#                                        model store: /var/lib/edge-runtime), the credentials in
#                                        /etc/credstore/edge-runtime.*, your own drop-ins and the
#                                        edge-runtime user
#
# Without --purge, what you made stays: config.yaml, the outbox with undelivered results, model
# updates, credentials, drop-ins of your own (edge-runtime.service.d/*.conf other than board-*),
# and the user (so the files keep their owner for a re-install).
# The shared groups (video, plugdev, apex) are never removed.
#
# Options: --root DIR, --prefix DIR, --dry-run, --purge, -h/--help (as for install.sh).
# Exit status: 0 done (also when there was nothing to remove), 2 bad usage, 1 an action failed.
set -euo pipefail

UNIT="edge-runtime.service"
UNIT_DIR=/etc/systemd/system
CONF_DIR=/etc/edge-runtime
STATE_DIR=/var/lib/edge-runtime
CREDSTORE=/etc/credstore
SERVICE_USER="edge-runtime"

ROOT=""
PREFIX=/opt/edge-runtime
PURGE=0
DRY_RUN=0

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
bad_usage() { echo "uninstall.sh: $*" >&2; echo "try: uninstall.sh --help" >&2; exit 2; }
note() { echo "uninstall.sh: $*"; }
show() { local prefix=$1; shift; printf '%s' "$prefix"; printf ' %q' "$@"; printf '\n'; }

act() {
    show "+" "$@"
    [[ $DRY_RUN == 1 ]] || "$@"
}

# remove PATH... (target paths): only those that exist, so a second run prints nothing
remove() {
    local p
    for p in "$@"; do
        if [[ -e $ROOT$p || -L $ROOT$p ]]; then
            act rm -rf -- "$ROOT$p"
        fi
    done
}

remove_dir_if_empty() {
    local d=$ROOT$1
    if [[ -d $d ]] && [[ -z $(ls -A "$d") ]]; then
        act rmdir -- "$d"
    fi
}

while (($#)); do
    case $1 in
        --prefix) PREFIX=${2:?--prefix needs a value}; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --root) ROOT=${2:?--root needs a value}; shift 2 ;;
        --root=*) ROOT=${1#*=}; shift ;;
        --purge) PURGE=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) bad_usage "unknown argument: $1" ;;
    esac
done

# PREFIX's known subfolders are deleted recursively: refuse anything that is not a plain,
# absolute, non-root path.
[[ $PREFIX == /* && $PREFIX != / && $PREFIX =~ ^[A-Za-z0-9._/-]+$ && $PREFIX != *..* ]] \
    || bad_usage "--prefix must be an absolute path of letters, digits, . _ - / (got: $PREFIX)"
PREFIX=${PREFIX%/}
if [[ -n $ROOT ]]; then
    ROOT=$(realpath -m -- "$ROOT")
    [[ $ROOT != / ]] || ROOT=""
fi
if [[ -z $ROOT && $DRY_RUN == 0 && $EUID != 0 ]]; then
    bad_usage "uninstalling from this machine needs root (or use --root DIR, or --dry-run)"
fi

# -- the service ----------------------------------------------------------------------------------
if [[ -n $ROOT ]]; then
    show "skipped under --root:" systemctl disable --now "$UNIT"
elif [[ -d /run/systemd/system ]] && [[ -e $UNIT_DIR/$UNIT ]]; then
    # disable --now: stops it (a clean stop publishes the retained offline status) and removes
    # the multi-user.target.wants link.
    act systemctl disable --now "$UNIT"
fi

# -- files ----------------------------------------------------------------------------------------
remove "$UNIT_DIR/$UNIT" "$UNIT_DIR/multi-user.target.wants/$UNIT"
shopt -s nullglob
for f in "$ROOT$UNIT_DIR/$UNIT.d"/board-*.conf; do
    act rm -f -- "$f"
done
shopt -u nullglob
if [[ $PURGE == 1 ]]; then
    remove "$UNIT_DIR/$UNIT.d"
else
    remove_dir_if_empty "$UNIT_DIR/$UNIT.d"
fi
remove "$PREFIX/venv" "$PREFIX/models" "$PREFIX/share"
remove_dir_if_empty "$PREFIX"

if [[ $PURGE == 1 ]]; then
    remove "$CONF_DIR" "$STATE_DIR" "$CREDSTORE/edge-runtime.mqtt_password" "$CREDSTORE/edge-runtime.tls_key"
    if [[ -n $ROOT ]]; then
        show "skipped under --root:" userdel "$SERVICE_USER"
    elif getent passwd "$SERVICE_USER" >/dev/null; then
        act userdel "$SERVICE_USER"
    fi
else
    [[ -e $ROOT$CONF_DIR ]] && note "kept $CONF_DIR (config) and $STATE_DIR (state); --purge removes them"
fi

if [[ -z $ROOT && -d /run/systemd/system ]]; then
    act systemctl daemon-reload
    # forget a failed state so `systemctl status` does not report a unit that no longer exists
    act systemctl reset-failed "$UNIT" 2>/dev/null || true
fi
if [[ $DRY_RUN == 1 ]]; then
    note "dry run: nothing was changed"
fi
exit 0
