"""Print the configuration reference (Markdown table) from the config dataclasses' field metadata.

The meanings are the ``help`` strings of ``sift_fast/config.py`` (the same text ``--help`` shows);
choices come from the ``Literal`` types. Paste the output into README.md's "Configuration reference".
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, fields

from sift_fast.config import DEPRECATED, PRESETS, SECTIONS, literal_choices


def main() -> None:
    print("| flag | section | default | meaning |\n|---|---|---|---|")
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            if isinstance(default, tuple):
                default = ",".join(f"{x:g}" for x in default)
            flag = "--" + f.name.replace("_", "-")
            meaning = f.metadata.get("help", "")
            choices = literal_choices(hints[f.name])
            if choices and not all(f"{c}" in meaning for c in choices):
                meaning += f" (one of {', '.join(map(str, choices))})"
            old = [o for o, (sec, new) in DEPRECATED.items() if (sec, new) == (section, f.name)]
            if old:
                meaning += f"; formerly `{'`, `'.join(old)}`"
            print(f"| `{flag}` | {section} | `{default}` | {meaning.replace('|', '/')} |")
    print("\nPresets (each overrides the defaults above):\n")
    for name, values in PRESETS.items():
        print(f"- `{name}`: " + ", ".join(f"{k}={v}" for k, v in values.items()))


if __name__ == "__main__":
    main()
