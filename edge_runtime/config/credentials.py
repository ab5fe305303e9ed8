"""The service's systemd credentials as systemd will find them, seen from outside the unit.

Inside the unit, systemd copies each credential into ``$CREDENTIALS_DIRECTORY``
(``/run/credentials/edge-runtime.service``) and the config names them there
(``password_file: mqtt_password``, ``key_file: ${CREDENTIALS_DIRECTORY}/tls_key``). Outside it (an
operator's ``edge-runtime validate`` before ``systemctl reload``, ``install.sh`` before a restart)
that directory does not exist. So :class:`UnitCredentials` reads the unit's ``LoadCredential=``,
``LoadCredentialEncrypted=`` and ``SetCredential=`` lines (the unit file and its drop-ins, in
systemd's order) and looks each source up the way systemd does when it starts the service
(systemd.exec(5), "Credentials"):

* an absolute path is read as it is; when it is missing the start fails (243/CREDENTIALS);
* a name is searched in ``/etc/credstore``, ``/run/credstore``, ``/usr/local/lib/credstore`` and
  ``/usr/lib/credstore`` (``LoadCredentialEncrypted=``: the ``credstore.encrypted`` folders first);
  a name found nowhere is skipped, so the credential is simply absent.

Credentials that systemd itself received (from a container manager) are not visible from here.
When one ID is given twice, the later line wins; ``LoadCredential=`` with no value forgets the
lines before it (the optional ``credentials-paths.conf`` drop-in relies on that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

UNIT = "edge-runtime.service"
SERVICE_DIRECTORY = Path("/run/credentials") / UNIT  # $CREDENTIALS_DIRECTORY inside the unit
# systemd's unit search path for system units, highest priority first (systemd.unit(5))
UNIT_DIRS = (
    "etc/systemd/system",
    "run/systemd/system",
    "usr/local/lib/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
)
CREDSTORE = ("etc/credstore", "run/credstore", "usr/local/lib/credstore", "usr/lib/credstore")
CREDSTORE_ENCRYPTED = tuple(f"{d}.encrypted" for d in CREDSTORE)
_LOAD_KEYS = {"LoadCredential": False, "LoadCredentialEncrypted": True}
_SET_KEYS = ("SetCredential", "SetCredentialEncrypted")


@dataclass(frozen=True, slots=True)
class Source:
    """Where the unit loads one credential from (``LoadCredential=ID:SOURCE``)."""

    source: str
    encrypted: bool
    where: str  # unit file and line, for messages


@dataclass(frozen=True, slots=True)
class Found:
    """A credential looked up as systemd will: the file here, or why there is none."""

    path: Path | None  # the file on this machine (None: not found, or set in the unit itself)
    note: str  # where it comes from, or why it is missing
    encrypted: bool = False
    set_in_unit: bool = False

    @property
    def ok(self) -> bool:
        """The service will have this credential."""
        return self.path is not None or self.set_in_unit


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """A unit file's lines with continuations (a trailing backslash) joined, with line numbers."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def unit_files(root: Path, unit: str = UNIT) -> list[Path]:
    """The unit file systemd would use and its drop-ins, in the order systemd applies them."""
    main = next((root / d / unit for d in UNIT_DIRS if (root / d / unit).is_file()), None)
    if main is None:
        return []
    dropins: dict[str, Path] = {}
    for d in UNIT_DIRS:  # a drop-in's name in a higher-priority folder hides the same name below
        folder = root / d / f"{unit}.d"
        if folder.is_dir():
            for conf in folder.glob("*.conf"):
                dropins.setdefault(conf.name, conf)
    return [main, *(dropins[name] for name in sorted(dropins))]


class UnitCredentials:
    """The credentials ``edge-runtime.service`` will get, read from its unit files under ``root``."""

    def __init__(self, root: Path, files: list[Path]) -> None:
        self.root, self.files = root, files
        self.loads: dict[str, Source] = {}
        self.sets: set[str] = set()
        for path in files:
            self._read(path)

    @classmethod
    def find(cls, root: Path = Path("/"), unit: str = UNIT) -> UnitCredentials | None:
        """The installed unit's credentials, or None when no such unit is installed under ``root``."""
        files = unit_files(root, unit)
        return cls(root, files) if files else None

    def _read(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return  # an unreadable drop-in: systemd would not apply it either
        section = ""
        for number, line in _logical_lines(text):
            if line.startswith("["):
                section = line.strip("[] ")
                continue
            key, sep, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if section != "Service" or not sep:
                continue
            if key in _LOAD_KEYS:
                self._load(value, _LOAD_KEYS[key], f"{self._shown(path)}:{number}")
            elif key in _SET_KEYS:
                if value:
                    self.sets.add(value.partition(":")[0])
                else:
                    self.sets.clear()

    def _load(self, value: str, encrypted: bool, where: str) -> None:
        if not value:
            self.loads.clear()
            return
        ident, _, source = value.partition(":")
        self.loads[ident] = Source(source or ident, encrypted, where)

    def _shown(self, path: Path) -> str:
        """``path`` as it is on the target (without the root prefix)."""
        return "/" + str(path.relative_to(self.root)) if self.root != Path("/") else str(path)

    def lookup(self, ident: str) -> Found:
        """Where systemd will take credential ``ident`` from when it starts the service."""
        src = self.loads.get(ident)
        if src is None:
            if ident in self.sets:
                return Found(None, f"credential {ident} is set in the unit", set_in_unit=True)
            units = ", ".join(self._shown(p) for p in self.files)
            return Found(
                None, f"the unit passes no credential {ident} (no LoadCredential={ident}:... in {units})"
            )
        if src.source.startswith("/"):
            here = self.root / src.source.lstrip("/")
            try:
                here.stat()
            except PermissionError:  # there, maybe: the file check says it cannot be reached
                return Found(here, f"credential {ident} from {src.source}", src.encrypted)
            except (OSError, ValueError):
                pass
            else:
                return Found(here, f"credential {ident} from {src.source}", src.encrypted)
            return Found(
                None,
                f"credential {ident}: {src.source} ({src.where}) does not exist, "
                "so the service would not start (243/CREDENTIALS)",
            )
        folders = (CREDSTORE_ENCRYPTED + CREDSTORE) if src.encrypted else CREDSTORE
        closed = []
        for folder in folders:
            here = self.root / folder / src.source
            try:
                here.stat()
            except PermissionError:  # /etc/credstore is 0700 root: systemd reads it as root
                closed.append(f"/{folder}")
                continue
            except (OSError, ValueError):
                continue
            encrypted = src.encrypted or folder.endswith(".encrypted")
            return Found(here, f"credential {ident} from /{folder}/{src.source}", encrypted)
        looked = ", ".join(f"/{f}" for f in folders)
        unseen = f" (could not look into {', '.join(closed)}: run validate as root)" if closed else ""
        return Found(
            None,
            f"credential {ident} ({src.where}) is {src.source} in none of {looked}{unseen}, "
            "so systemd leaves it out",
        )
