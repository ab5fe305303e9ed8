"""Command line: ``edge-runtime run | validate | config-schema | infer | bench | models``.

Exit codes: 0 success, 2 bad usage or bad input (one-line reason on stderr, no traceback),
1 internal or environmental failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from edge_runtime import __version__
from edge_runtime.errors import EdgeRuntimeError, InputError
from edge_runtime.inference.base import ACCELERATORS

logger = logging.getLogger("edge_runtime")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file (.onnx, .tflite) or bundle folder with model.yaml")
    p.add_argument("--backend", choices=("auto", "onnx", "tflite"), default="auto")
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


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree (kept separate so the README's CLI reference can be checked against it)."""
    parser = argparse.ArgumentParser(prog="edge-runtime", description="Inference daemon for edge boards.")
    parser.add_argument("--version", action="version", version=f"edge-runtime {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("infer", help="run a model on images and print one result per image")
    _model_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=int, default=None, help="classes per image (default: model.yaml)")
    p.add_argument("--score-threshold", type=float, default=None, help="minimum score")
    p.add_argument("--annotate", metavar="DIR", default=None, help="write images with results drawn")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = sub.add_parser("bench", help="latency and throughput of the bare runtime call")
    _model_args(p)
    p.add_argument("--seconds", type=float, default=5.0, help="measuring time per backend")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs first")
    p.add_argument("--image", default=None, help="input image (default: a fixed synthetic image)")
    p.add_argument("--json", action="store_true", help="one JSON object per backend")

    p = sub.add_parser("run", help="the daemon (foreground; systemd runs exactly this)")
    p.add_argument("config", help="YAML config file")

    p = sub.add_parser("validate", help="check a config file; one FILE:LINE: key: message per problem")
    p.add_argument("config", help="YAML config file")

    sub.add_parser("config-schema", help="JSON Schema of the config file")

    p = sub.add_parser("models", help="bundled models and the backends/accelerators usable here")
    p.add_argument("--dir", default=None, help="folder of model bundles (default: ./models)")
    p.add_argument("--json", action="store_true", help="JSON instead of text")
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-runtime`` console script."""
    args = build_parser().parse_args(argv)
    _configure_logging(args)
    from edge_runtime import commands

    handler = getattr(commands, f"cmd_{args.command.replace('-', '_')}")
    try:
        return int(handler(args))
    except InputError as exc:
        print(f"edge-runtime: error: {exc}", file=sys.stderr)
        return 2
    except EdgeRuntimeError as exc:
        print(f"edge-runtime: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge-runtime config-schema | head`
        return 0
    except Exception:
        logger.exception("internal error")
        return 1
