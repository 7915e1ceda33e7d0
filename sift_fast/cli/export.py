"""``sift-export``: a ``sift-pretrain`` checkpoint (single process or DeepSpeed ZeRO 1-3) as a Hugging Face
masked-LM directory: ``save_pretrained`` model (safetensors), tokenizer files and a README.md model card."""

from __future__ import annotations

import sys

from sift_fast.cli.args import OneLineParser, run_cli


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="sift-export", description=__doc__)
    parser.add_argument("--checkpoint", required=True,
                        help="a step_XXXXXXXX.pt file, a DeepSpeed step_XXXXXXXX/ tag directory, a checkpoints/ "
                             "directory or a run directory (--out of sift-pretrain: its newest checkpoint)")
    parser.add_argument("--out", required=True, help="the Hugging Face directory to write (new, empty, or an "
                                                     "earlier export, replaced atomically)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer.json / vocab.txt / directory (default: the run's own tokenizer)")
    return parser


def _main(argv: list[str] | None) -> int:
    from sift_fast.export import export_checkpoint

    args = build_parser().parse_args(argv)
    out = export_checkpoint(args.checkpoint, args.out, tokenizer=args.tokenizer)
    print(f"exported {args.checkpoint} -> {out} (AutoModelForMaskedLM.from_pretrained loads it)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    sys.exit(run_cli("sift-export", _main, argv))


if __name__ == "__main__":
    main()
