"""argparse built from the config dataclasses: every field is a flag (``exit_layer`` → ``--exit-layer``).

Each flag's help is the field's meaning and default; a ``Literal`` field's values are its choices. Renamed
fields keep their old flags (hidden from ``--help``) with a one-line warning. Precedence: preset <
``--config`` file < flags. Errors are one line on stderr and exit code 2; warnings are one line too.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
import warnings
from dataclasses import MISSING, fields
from typing import Any, NoReturn

from sift_fast.config import DEPRECATED, PRESETS, SECTIONS, Config, build_config, literal_choices, load_config_file
from sift_fast.errors import ConfigError, TrainingHalted, UserError


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
    if hints and int in hints and all(h is int or h is str or literal_choices(h) for h in hints):
        return _int_or_auto
    if hints and float in hints:  # a number or a name: the section's __post_init__ parses and checks it
        return str
    if literal_choices(tp) is not None:
        return str
    if tp is bool:
        return _bool
    if typing.get_origin(tp) is tuple:
        return _floats
    return tp


# Flags that stay as plain synonyms (``--data`` reads well on a command line; only ``cfg.data.data`` did not).
FLAG_SYNONYMS = {"corpus": ("--data",)}


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def field_help(f: Any) -> str:
    """A field's ``--help`` text: its meaning and its default."""
    default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
    if isinstance(default, tuple):
        default = ",".join(f"{x:g}" for x in default)
    meaning = f.metadata.get("help", "")
    return f"{meaning} (default {default})".replace("%", "%%") if meaning else f"(default {default})"


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default=None,
                        help=f"base preset: {' / '.join(PRESETS)} (default proxy-12; README.md lists their values)")
    parser.add_argument("--config", default=None, help="yaml/json config file (nested by section or flat)")
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(section)
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            tp = hints[f.name]
            kw: dict[str, Any] = {"default": None, "dest": f.name, "help": field_help(f)}
            if tp is bool:
                kw.update(nargs="?", const=True, type=_bool)
            else:
                kw.update(type=_converter(tp), choices=literal_choices(tp))
            group.add_argument(flag_of(f.name), *FLAG_SYNONYMS.get(f.name, ()), **kw)
            old = [o for o, (sec, new) in DEPRECATED.items() if (sec, new) == (section, f.name)]
            for name in (o for o in old if flag_of(o) not in FLAG_SYNONYMS.get(f.name, ())):
                kw = {**kw, "dest": f"deprecated:{name}", "help": argparse.SUPPRESS}
                group.add_argument(flag_of(name), **kw)


def config_from_args(args: argparse.Namespace) -> Config:
    layers: list[dict[str, Any]] = []
    file_layer = load_config_file(args.config) if args.config else {}
    preset = args.preset or file_layer.get("preset")
    if preset is not None:
        layers.append({"preset": preset})
    layers.append({k: v for k, v in file_layer.items() if k != "preset"})
    flags = {}
    for old, (_, new) in DEPRECATED.items():
        value = getattr(args, f"deprecated:{old}", None)
        if value is not None:
            warnings.warn(f"{flag_of(old)} is deprecated; use {flag_of(new)}", FutureWarning, stacklevel=2)
            flags[new] = value
    for cls in SECTIONS.values():
        for f in fields(cls):
            value = getattr(args, f.name, None)
            if value is not None:
                flags[f.name] = value
    layers.append(flags)
    cfg = build_config(*layers)
    check_lr_warmup(cfg, explicit="lr_warmup_steps" in flags or _mentions(file_layer, "lr_warmup_steps"))
    return cfg


def _mentions(layer: Any, key: str) -> bool:
    return isinstance(layer, dict) and any(k == key or _mentions(v, key) for k, v in layer.items())


def check_lr_warmup(cfg: Config, explicit: bool) -> None:
    """An LR warmup asked for (flag or config file) longer than ``max_steps`` is refused: the LR would never
    reach its peak. Also with a time budget: ``max_steps`` still bounds the steps (warmup counts steps), so
    the warmup could never finish. A preset's own warmup past a short ``max_steps`` (smoke runs) only warns
    (at the start of the run)."""
    w, steps = cfg.optim.lr_warmup_steps, cfg.train.max_steps
    if explicit and w > steps:
        raise ConfigError(f"--lr-warmup-steps {w} is past --max-steps {steps}: the learning rate would never reach "
                          "its peak; lower --lr-warmup-steps or raise --max-steps")


def _one_line_warnings(prog: str):
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prog}: warning: {message}", file=sys.stderr if file is None else file)

    return show


def run_cli(prog: str, main_fn, argv: list[str] | None = None) -> int:
    """Run ``main_fn(argv)``, turning a UserError into one stderr line and exit code 2 (warnings: one line)."""
    saved = warnings.showwarning
    warnings.showwarning = _one_line_warnings(prog)
    try:
        return int(main_fn(argv) or 0)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except TrainingHalted as exc:
        print(f"{prog}: halted: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = saved


__all__ = ["OneLineParser", "add_config_flags", "config_from_args", "run_cli", "ConfigError"]
