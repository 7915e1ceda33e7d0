"""``sift-pretrain``: one pretraining run (baseline or SIFT) from a preset, a config file and flags.

Runs unchanged under ``torchrun`` / the ``deepspeed`` launcher when ``--deepspeed`` is given.
"""

from __future__ import annotations

import os
import sys

from sift_fast.cli.args import OneLineParser, add_config_flags, config_from_args, run_cli
from sift_fast.errors import ConfigError


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="sift-pretrain", description=__doc__)
    add_config_flags(parser)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help="set by launchers")
    try:
        from sift_fast.distributed.launch import add_deepspeed_flags
    except ImportError:  # pragma: no cover - distributed module absent
        pass
    else:
        add_deepspeed_flags(parser)
    return parser


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and not getattr(args, "deepspeed", False):
        raise ConfigError(f"launched with WORLD_SIZE={world} but without --deepspeed: every rank would train "
                          "alone and write to the same --out; add --deepspeed (and --deepspeed_config)")
    if getattr(args, "deepspeed", False):
        from sift_fast.distributed.launch import run_deepspeed

        summary = run_deepspeed(cfg, args)
    else:
        from sift_fast.train.loop import train

        summary = train(cfg)
    if summary and not summary.get("stopped_by"):
        final = summary.get("final_eval") or {}
        print(f"done: {summary['steps']} steps, {summary['train_time_s']:.1f}s, "
              f"val_mlm_acc {final.get('val_mlm_acc', float('nan')):.4f}, out {cfg.train.out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    sys.exit(run_cli("sift-pretrain", _main, argv))


if __name__ == "__main__":
    main()
