"""Fail when the running environment differs from requirements.lock.

`make install` calls this after installing, so a test run never starts on versions the suite was not
locked with. Only the lines whose environment marker applies to this interpreter are compared.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name


def locked_versions(lock_file: Path) -> dict[str, str]:
    """{canonical name: version} for the lock lines that apply to this interpreter and platform."""
    pins = {}
    for line in lock_file.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, _, marker = line.partition(";")
        name, _, version = requirement.partition("==")
        if not version:
            raise SystemExit(f"{lock_file}: '{line}' is not pinned with ==; regenerate it with `make lock`")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        pins[canonicalize_name(name.strip())] = version.strip()
    return pins


def mismatches(pins: dict[str, str]) -> list[str]:
    problems = []
    for name, version in sorted(pins.items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: locked {version}, not installed")
            continue
        if installed != version:
            problems.append(f"{name}: locked {version}, installed {installed}")
    return problems


def main(argv: list[str] | None = None) -> int:
    lock_file = Path((argv or sys.argv[1:] or ["requirements.lock"])[0])
    pins = locked_versions(lock_file)
    problems = mismatches(pins)
    if problems:
        print(f"environment differs from {lock_file} (run `make install`):", *problems, sep="\n  ", file=sys.stderr)
        return 1
    print(f"environment matches {lock_file}: {len(pins)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
