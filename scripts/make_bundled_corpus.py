"""Regenerate sift_fast/data/bundled/ from the shared data: python scripts/make_bundled_corpus.py

Writes WikiText-2 valid + test, detokenized (` = Title = ` heading lines kept as document
separators), and a copy of the bert-base-uncased vocab.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sift_fast.data.corpus import _WIKITEXT_MARKERS, BUNDLED_CORPUS, detokenize_wikitext
from sift_fast.data.tokenizer import BUNDLED_VOCAB
from sift_fast.io import atomic_copy, atomic_write_bytes

REPO = Path(__file__).resolve().parent.parent
MAX_BYTES = 3_000_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=REPO.parent / "shared" / "data", help="shared data directory")
    args = ap.parse_args()
    wikitext = args.src / "wikitext-2"
    parts = [(wikitext / f"{split}.txt").read_text(encoding="utf-8") for split in ("valid", "test")]
    text = detokenize_wikitext("".join(parts))
    left = [m for m in _WIKITEXT_MARKERS if m in text]
    if left:
        raise SystemExit(f"detokenized text still contains WikiText markers: {left}")
    data = text.encode("utf-8")
    if len(data) > MAX_BYTES:
        raise SystemExit(f"bundled corpus is {len(data)} bytes, over the {MAX_BYTES} limit")
    BUNDLED_CORPUS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(BUNDLED_CORPUS, data)
    atomic_copy(args.src / "bert-base-uncased" / "vocab.txt", BUNDLED_VOCAB)
    print(f"wrote {BUNDLED_CORPUS} ({len(data)} bytes) and {BUNDLED_VOCAB}")


if __name__ == "__main__":
    main()
