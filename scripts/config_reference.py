"""Print the configuration reference (Markdown table) from the dataclasses in sift_fast/config.py."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path

from sift_fast.config import PRESETS, SECTIONS

SRC = (Path(__file__).resolve().parents[1] / "sift_fast" / "config.py").read_text()
COMMENT = {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s{4}(\w+): [^\n#]*#\s*([^\n]*)$", SRC, re.M)}


def main() -> None:
    print("| flag | section | default | meaning |\n|---|---|---|---|")
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            flag = "--" + f.name.replace("_", "-")
            print(f"| `{flag}` | {section} | `{default}` | {COMMENT.get(f.name, '').replace(' | ', ' / ')} |")
    print("\nPresets (each overrides the defaults above):\n")
    for name, values in PRESETS.items():
        print(f"- `{name}`: " + ", ".join(f"{k}={v}" for k, v in values.items()))


if __name__ == "__main__":
    main()
