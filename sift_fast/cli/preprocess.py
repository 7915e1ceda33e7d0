"""``sift-preprocess``: tokenize a corpus once into Megatron's indexed format (``PREFIX.bin`` / ``PREFIX.idx``).

The output trains with ``sift-pretrain --data PREFIX --vocab <the same tokenizer>`` and loads in
Megatron-LM (``--data-path PREFIX``). One sequence per document, ids without special tokens (the
packer adds [CLS]/[SEP]). With ``--vocab train`` a WordPiece is trained on the corpus and saved as
``PREFIX.tokenizer.json`` (pass that file as ``--vocab`` later).

    sift-preprocess --input ../shared/data/linux-docs-prose.txt --vocab bert-base-uncased/vocab.txt \\
        --output-prefix data/linux-docs
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from sift_fast.cli.args import OneLineParser, run_cli
from sift_fast.data.indexed import is_indexed
from sift_fast.errors import ConfigError, DataError
from sift_fast.io import atomic_write_text


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="sift-preprocess", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="corpus: bundled | file.txt | file.jsonl | hf:NAME[:CONFIG[:SPLIT]]")
    p.add_argument("--output-prefix", required=True, help="writes PREFIX.bin and PREFIX.idx")
    p.add_argument("--vocab", default="bundled", help="tokenizer: bundled | vocab.txt | tokenizer.json | train")
    p.add_argument("--vocab-size", type=int, default=8192, help="for --vocab train")
    p.add_argument("--text-key", default="text", help="field of a jsonl corpus holding the text")
    p.add_argument("--cache-dir", default="", help="tokenizer training cache (default: ~/.cache/sift_fast)")
    return p


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from sift_fast.data import load_tokenizer, read_documents
    from sift_fast.data.indexed import index_paths, token_dtype, write_indexed

    if args.vocab_size < 8:
        raise ConfigError(f"--vocab-size must be >= 8; got {args.vocab_size}")
    if not Path(args.output_prefix).name or args.output_prefix.endswith(("/", os.sep)):
        raise ConfigError(f"--output-prefix needs a file name (PREFIX.bin/.idx are written): {args.output_prefix!r}")
    if is_indexed(args.input):
        raise ConfigError(f"--input {args.input} is already a Megatron indexed dataset; train on it with --data")
    t0 = time.perf_counter()
    docs = read_documents(args.input, text_key=args.text_key)
    cache = Path(args.cache_dir or os.environ.get("SIFT_CACHE_DIR") or Path.home() / ".cache" / "sift_fast")
    vocab = load_tokenizer(args.vocab, train_texts=docs if args.vocab == "train" else None,
                           vocab_size=args.vocab_size, cache_dir=cache / "tokenizers")
    encodings = vocab.tokenizer.encode_batch(docs, add_special_tokens=False)
    ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
    dtype = token_dtype(vocab.vocab_size)
    bin_path, idx_path = index_paths(args.output_prefix)
    try:
        write_indexed(args.output_prefix, ids, dtype=dtype)
        if args.vocab == "train":
            tok_path = Path(str(bin_path)[:-4] + ".tokenizer.json")
            atomic_write_text(tok_path, vocab.tokenizer.to_str())
            print(f"tokenizer: {tok_path}", file=sys.stderr)
    except OSError as exc:
        raise DataError(f"cannot write {args.output_prefix}.bin/.idx: {exc.strerror or exc}") from None
    n_tok = sum(len(x) for x in ids)
    print(f"wrote {bin_path} / {idx_path.name}: {len(ids)} documents, {n_tok} tokens, {np.dtype(dtype)}, "
          f"vocab {vocab.vocab_size}, {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    sys.exit(run_cli("sift-preprocess", _main, argv))


if __name__ == "__main__":
    main()
