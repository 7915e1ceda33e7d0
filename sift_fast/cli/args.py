"""argparse built from the config dataclasses: every field is a flag (``exit_layer`` → ``--exit-layer``).

Precedence: preset < ``--config`` file < flags. Errors are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from dataclasses import MISSING, fields
from typing import Any, NoReturn

from sift_fast.config import PRESETS, SECTIONS, Config, build_config, load_config_file
from sift_fast.errors import ConfigError, UserError


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line (no usage dump) with exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _int_or_auto(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


def _converter(tp: Any):
    hints = typing.get_args(tp) if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union else ()
    if hints and set(hints) == {int, str}:
        return _int_or_auto
    if tp is bool:
        return _bool
    if typing.get_origin(tp) is tuple:
        return _floats
    return tp


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=None, default=None,
                        help=f"base preset: {', '.join(PRESETS)} (default proxy-12)")
    parser.add_argument("--config", default=None, help="yaml/json config file (nested by section or flat)")
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(section)
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            flag = "--" + f.name.replace("_", "-")
            tp = hints[f.name]
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            if tp is bool:
                group.add_argument(flag, nargs="?", const=True, type=_bool, default=None, dest=f.name,
                                   help=f"(default {default})")
            else:
                group.add_argument(flag, type=_converter(tp), default=None, dest=f.name, help=f"(default {default})")


def config_from_args(args: argparse.Namespace) -> Config:
    layers: list[dict[str, Any]] = []
    file_layer = load_config_file(args.config) if args.config else {}
    preset = args.preset or file_layer.get("preset")
    if preset is not None:
        layers.append({"preset": preset})
    layers.append({k: v for k, v in file_layer.items() if k != "preset"})
    flags = {}
    for cls in SECTIONS.values():
        for f in fields(cls):
            value = getattr(args, f.name, None)
            if value is not None:
                flags[f.name] = value
    layers.append(flags)
    return build_config(*layers)


def run_cli(prog: str, main_fn, argv: list[str] | None = None) -> int:
    """Run ``main_fn(argv)``, turning a UserError into one stderr line and exit code 2."""
    try:
        return int(main_fn(argv) or 0)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


__all__ = ["OneLineParser", "add_config_flags", "config_from_args", "run_cli", "ConfigError"]
