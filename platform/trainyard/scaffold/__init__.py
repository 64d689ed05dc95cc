"""`trainyard plugin new NAME [--kind model|rl]`: a new, installable plugin package in a new folder.

The templates are the files under `model/`, `rl/` and `common/`, with $name (the plugin's name,
the prefix of its components) and $package (its import name) filled in by string.Template.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).parent
KINDS = ("model", "rl")
PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def new_plugin(name: str, kind: str, parent: Path) -> Path:
    """Write the plugin `name` into parent/trainyard-<name>. Raises ValueError on bad input."""
    if not PLUGIN_NAME.match(name):
        raise ValueError(f"plugin name {name!r} must be lower case letters, digits and '_', starting with a letter")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    folder = parent / f"trainyard-{name.replace('_', '-')}"
    if folder.exists():
        raise ValueError(f"{folder} already exists")
    values = {"name": name, "package": f"trainyard_{name}"}
    for source_root in (TEMPLATES / "common", TEMPLATES / kind):
        for source in sorted(source_root.rglob("*.tmpl")):
            relative = source.relative_to(source_root).with_suffix("")
            target = folder / Template(str(relative)).substitute(values)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(Template(source.read_text()).substitute(values))
    return folder
