"""The broker flags every operator command shares (``--broker``, auth, TLS), as connection settings.

``cli.add_broker_args`` declares the flags; :func:`broker_from_args` reads them. One
implementation, so every operator command connects the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_runtime.errors import InputError
from edge_runtime.mqttclient import Broker, BrokerTls


def parse_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 address may contain colons: the port is after the last one)."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--broker {value!r}: expected HOST:PORT")
    return host, int(port)


def broker_from_args(args: argparse.Namespace) -> Broker:
    """Connection settings from ``--broker``, ``--username``, ``--password-file``, ``--ca-file``."""
    host, port = parse_host_port(args.broker)
    password = None
    if args.username and args.password_file:  # a password goes with a user name (as MQTT has it)
        try:
            password = Path(args.password_file).read_text().strip()
        except OSError as exc:
            raise InputError(f"--password-file {args.password_file}: {exc.strerror or exc}") from exc
    tls = BrokerTls(ca_file=Path(args.ca_file)) if args.ca_file else None
    return Broker(
        host=host,
        port=port,
        username=args.username or None,
        password=password,
        tls=tls,
        tls_source="--ca-file",
    )
