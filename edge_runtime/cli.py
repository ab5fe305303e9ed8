"""Command line: ``edge-runtime run | validate | config-schema | infer | bench | models | fleet``.

Exit codes: 0 success, 2 bad usage or bad input (one-line reason on stderr, no traceback),
1 internal or environmental failure. Under journald the reason carries ``<3>`` (priority err),
as the daemon's own error lines do, so ``journalctl -p warning`` shows why a start failed.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from edge_runtime import __version__
from edge_runtime.config.vocabulary import ACCELERATORS
from edge_runtime.errors import EdgeRuntimeError, InputError
from edge_runtime.health.logformat import configure_logging, print_error

logger = logging.getLogger("edge_runtime")


def _model_args(p: argparse.ArgumentParser, backend_help: str) -> None:
    p.add_argument("model", help="model file (.onnx, .tflite) or bundle folder with model.yaml")
    p.add_argument("--backend", choices=("auto", "onnx", "tflite"), default="auto", help=backend_help)
    p.add_argument(
        "--accelerator",
        default="auto",
        choices=ACCELERATORS,
        help="execution provider / delegate (default: auto = best available)",
    )
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: runtime's)")
    p.add_argument("--device", default=None, help="Edge TPU device: usb, usb:N or pci:N")
    p.add_argument(
        "--delegate", default=None, help="external TFLite delegate library (with --accelerator external)"
    )
    p.add_argument("--no-fallback", action="store_true", help="fail instead of falling back to CPU")
    p.add_argument(
        "--exact-int8",
        action="store_true",
        help="onnx: exact int8 products on x86 CPUs without VNNI (slower; see models/README.md)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree (kept separate so tests can walk it: every argument has help)."""
    parser = argparse.ArgumentParser(prog="edge-runtime", description="Inference daemon for edge boards.")
    parser.add_argument("--version", action="version", version=f"edge-runtime {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do (COMMAND -h for its options)"
    )

    p = sub.add_parser("infer", help="run a model on images and print one result per image")
    _model_args(p, "runtime (default: auto = tflite for edgetpu, gpu or external, else onnx if installed)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (for a video, use run)")
    p.add_argument("--top-k", type=int, default=None, help="classes per image (default: model.yaml)")
    p.add_argument("--score-threshold", type=float, default=None, help="minimum score")
    p.add_argument("--annotate", metavar="DIR", default=None, help="write images with results drawn")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = sub.add_parser("bench", help="latency and throughput of the bare runtime call")
    _model_args(p, "runtime to measure (default: auto = each installed one the bundle has a file for)")
    p.add_argument("--seconds", type=float, default=5.0, help="measuring time per backend")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs first")
    p.add_argument("--image", default=None, help="input image (default: a fixed synthetic image)")
    p.add_argument("--json", action="store_true", help="one JSON object per backend")

    p = sub.add_parser("run", help="the daemon (foreground; systemd runs exactly this)")
    p.add_argument("config", help="YAML config file")

    p = sub.add_parser("validate", help="check a config file; one FILE:LINE: key: message per problem")
    p.add_argument("config", help="YAML config file")
    p.add_argument(
        "--root",
        metavar="DIR",
        default=None,
        help="check a staged image: CONFIG, the files it names and the systemd unit below DIR",
    )

    sub.add_parser("config-schema", help="JSON Schema of the config file")

    _update_commands(sub)
    _fleet_commands(sub)

    p = sub.add_parser("models", help="bundled models and the backends/accelerators usable here")
    p.add_argument("--dir", default=None, help="folder of model bundles (default: ./models)")
    p.add_argument("--json", action="store_true", help="JSON instead of text")
    return parser


def _update_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """keys, bundle, push: signed model updates."""
    p = sub.add_parser("keys", help="signing keys for model updates")
    keys = p.add_subparsers(dest="action", required=True, metavar="ACTION", help="what to do")
    g = keys.add_parser("generate", help="write DIR/signing.key (0600) and DIR/signing.pub (Ed25519, PEM)")
    g.add_argument("--out", required=True, metavar="DIR", help="folder for the key pair (made if missing)")
    g.add_argument("--force", action="store_true", help="replace an existing key pair")

    p = sub.add_parser("bundle", help="make and sign model update bundles")
    bundle = p.add_subparsers(dest="action", required=True, metavar="ACTION", help="what to do")
    c = bundle.add_parser("create", help="a bundle tar: model, labels, model.yaml, golden test vectors")
    c.add_argument("model", help="model bundle folder (with model.yaml)")
    c.add_argument("--version", required=True, help="the new version (numeric: 3, 1.4.2)")
    c.add_argument("--out", required=True, metavar="FILE", help="the bundle file to write (a tar)")
    c.add_argument("--golden", nargs="+", metavar="IMAGE", help="images for the golden vectors")
    s = bundle.add_parser("sign", help="write FILE.manifest.json, signed with an Ed25519 key")
    s.add_argument("file", metavar="FILE", help="the bundle file (from bundle create)")
    s.add_argument(
        "--key", required=True, metavar="PRIVATE_KEY", help="the private key (signing.key of keys generate)"
    )
    s.add_argument("--target", default=None, help="device:ID or group:G (default: any device)")
    s.add_argument(
        "--expires-in",
        type=float,
        default=7 * 86400,
        metavar="S",
        help="seconds until the manifest expires (default 7 days; 0 = never)",
    )
    s.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        metavar="N",
        help="bytes per MQTT chunk, signed with each chunk's digest (default 64 KiB; raised for big bundles)",
    )
    s.add_argument("--url", default=None, help="sign this URL as where devices download the bundle")
    s.add_argument(
        "--format",
        type=int,
        choices=(1, 2),
        default=2,
        help="2 (default) signs the chunks; 1 for devices older than format 2 (signs no transfer)",
    )

    p = sub.add_parser("push", help="publish a signed update over MQTT and follow the devices")
    p.add_argument(
        "bundle", metavar="BUNDLE", nargs="?", help="a signed bundle file (BUNDLE.manifest.json beside it)"
    )
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--device", metavar="ID", help="the device to update (its device.id)")
    who.add_argument("--group", metavar="G", help="update the devices of group G (their device.groups)")
    add_broker_args(p)
    p.add_argument("--prefix", default="edge", help="topic prefix (default: edge)")
    p.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="S",
        help="follow the devices up to S seconds; exit 0 only if all report active",
    )
    p.add_argument(
        "--url", default=None, help="devices download the bundle from this URL (format 2: the signed one)"
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="bytes per MQTT chunk for a format 1 manifest (default 64 KiB; format 2 signs its own)",
    )
    p.add_argument(
        "--serve-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="without --wait: serve chunks at most this long",
    )
    p.add_argument(
        "--no-retain",
        action="store_true",
        help="publish the update once, not retained (only devices online now get it)",
    )
    p.add_argument(
        "--clear",
        action="store_true",
        help="remove the desired (retained) update of --device or --group from the broker; no BUNDLE",
    )
    _wave_args(p)


def _wave_args(p: argparse.ArgumentParser) -> None:
    """push --group's staged rollout (docs/fleet.md#staged-rollouts)."""
    p.add_argument(
        "--waves",
        default=None,
        metavar="LIST",
        help="staged rollout: devices reached after each wave, counts or percents (1,10%%,50%%,100%%)",
    )
    p.add_argument(
        "--max-failures",
        default=None,
        metavar="N|P%",
        help="with --waves: stop when more devices than this failed (default 0; P%% of those targeted)",
    )
    p.add_argument(
        "--wave-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="with --waves: how long a wave waits for its devices (default 600); offline ones stay pending",
    )


def _fleet_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """fleet: operator commands for many devices (one subcommand each)."""
    p = sub.add_parser("fleet", help="operator commands for a fleet of devices")
    fleet = p.add_subparsers(dest="action", required=True, metavar="ACTION", help="what to do")
    s = fleet.add_parser("serve", help="serve the MQTT chunks of every signed bundle in DIR until stopped")
    s.add_argument("dir", metavar="DIR", help="folder of signed bundles (FILE and FILE.manifest.json)")
    add_broker_args(s)
    s.add_argument("--prefix", default="edge", help="topic prefix (default: edge)")
    s.add_argument(
        "--rescan", type=float, default=10.0, metavar="S", help="read DIR again every S seconds (default 10)"
    )
    s.add_argument(
        "--max-rate",
        type=float,
        default=8.0,
        metavar="MIB_S",
        help="chunk bytes sent per second, all devices together, in MiB (default 8)",
    )
    _fleet_status_args(fleet)
    _fleet_cmd_command(fleet)
    _fleet_config_command(fleet)


def _fleet_status_args(fleet: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """fleet status (docs/fleet.md#fleet-status)."""
    s = fleet.add_parser("status", help="one row per device: online, models, update state, fps, backlog")
    s.set_defaults(command="fleet-status")
    add_broker_args(s)
    s.add_argument("--prefix", default="edge", help="topic prefix (default: edge)")
    s.add_argument("--group", metavar="G", default=None, help="only the devices of group G")
    s.add_argument("--json", action="store_true", help="a JSON list of objects (keys: docs/fleet.md)")
    s.add_argument("--watch", action="store_true", help="go on, printing again whenever something changed")
    s.add_argument(
        "--wait",
        type=float,
        default=12.0,
        metavar="S",
        help="wait up to S seconds for each online device's health (not retained; default 12)",
    )
    s.add_argument("--interval", type=float, default=2.0, metavar="S", help="--watch: refresh period")
    s.add_argument(
        "--max-devices", type=int, default=10_000, metavar="N", help="keep at most N devices (default 10000)"
    )


def _fleet_cmd_command(fleet: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """fleet cmd: one request to one device (docs/control.md)."""
    c = fleet.add_parser("cmd", help="send a command to a device and print its answer")
    c.set_defaults(command="fleet-cmd")
    c.add_argument("device_id", metavar="D", help="the device (its device.id)")
    c.add_argument("name", metavar="NAME", help="ping, health, rebirth, snapshot, pause, resume, reload")
    c.add_argument("args", nargs="*", metavar="key=value", help="the command's arguments")
    add_broker_args(c)
    c.add_argument("--prefix", default="edge", help="topic prefix (default: edge)")
    c.add_argument("--key", default=None, metavar="PRIVATE_KEY", help="sign the command with this key")
    c.add_argument("--wait", type=float, default=10.0, metavar="S", help="wait this long for the answer")


def _fleet_config_command(fleet: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """fleet config: a signed config for a device or a group (docs/control.md)."""
    c = fleet.add_parser("config", help="sign a config file and make it the desired config of devices")
    c.set_defaults(command="fleet-config")
    c.add_argument("config", metavar="CONFIG.yaml", help="the whole config file the devices should run")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--device", metavar="D", help="one device (its device.id)")
    who.add_argument("--group", metavar="G", help="the devices of group G (their device.groups)")
    c.add_argument("--key", required=True, metavar="PRIVATE_KEY", help="the signing key (keys generate)")
    add_broker_args(c)
    c.add_argument("--prefix", default="edge", help="topic prefix (default: edge)")
    c.add_argument(
        "--wait",
        type=float,
        default=120.0,
        metavar="S",
        help="follow the reports this long (0: only publish)",
    )
    c.add_argument("--version", type=int, default=None, help="the document's version (default: Unix ms now)")
    c.add_argument(
        "--expires-in", type=float, default=0.0, metavar="S", help="the document expires after S s (0: never)"
    )


def add_broker_args(p: argparse.ArgumentParser) -> None:
    """The broker flags of every operator command (read by commands/broker.py)."""
    p.add_argument("--broker", required=True, metavar="HOST:PORT", help="the MQTT broker of the devices")
    p.add_argument("--username", default=None, help="broker user name")
    p.add_argument(
        "--password-file",
        default=None,
        metavar="FILE",
        help="file holding the broker password (with --username)",
    )
    p.add_argument("--ca-file", default=None, metavar="FILE", help="CA certificate for a TLS broker")


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    configure_logging(level)  # journald format under systemd, timestamps otherwise


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-runtime`` console script."""
    args = build_parser().parse_args(argv)
    _configure_logging(args)
    from edge_runtime import commands

    handler = getattr(commands, f"cmd_{args.command.replace('-', '_')}")
    try:
        return int(handler(args))
    except InputError as exc:
        print_error(str(exc))
        return 2
    except EdgeRuntimeError as exc:
        print_error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge-runtime config-schema | head`
        return 0
    except Exception:
        logger.exception("internal error")
        return 1
