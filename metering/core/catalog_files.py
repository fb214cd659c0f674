"""Reading a catalog file (the meters, the plans): TOML from a path, or the file that ships with the package.

Each catalog checks its own document; this only finds the text and names it in errors, so a bad file's message
says which file.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any


def read_toml(
    path: str | Path | None, *, packaged: str, package: str, label: str, error: type[ValueError]
) -> tuple[dict[str, Any], str]:
    """A catalog file's TOML document and the name its errors give it: the file at `path`, or the one named
    `packaged` that ships with `package`. A file that cannot be read or parsed raises `error`."""
    if path is None:
        text = resources.files(package).joinpath(packaged).read_text(encoding="utf-8")
        source = f"default {packaged}"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as problem:
            raise error(f"{label} {path}: cannot be read ({problem.strerror})") from None
        source = str(path)
    try:
        return tomllib.loads(text), source
    except tomllib.TOMLDecodeError as problem:
        raise error(f"{source}: not valid TOML: {problem}") from None
