"""Read a corpus as a list of document strings (.txt, .jsonl, hf:NAME, bundled)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sift_fast.data.blend import parse_blend
from sift_fast.data.indexed import is_indexed
from sift_fast.errors import DataError
from sift_fast.io import read_utf8

BUNDLED_CORPUS = Path(__file__).resolve().parent / "bundled" / "wikitext2.txt"

# Markers of a word-tokenized WikiText file; an already detokenized file has none of them.
_WIKITEXT_MARKERS = (" @-@ ", " @,@ ", " @.@ ", "<unk>")
_DETOK_RULES = [
    (re.compile(r" ([.,;:!?%)\]}])"), r"\1"),  # no space before closing punctuation
    (re.compile(r"([(\[{$]) "), r"\1"),  # no space after opening brackets / currency
    (re.compile(r"([\w\]]) '(s|re|ve|ll|m|d|t)\b"), r"\1'\2"),  # it 's -> it's, don 't -> don't
    (re.compile(r'" ([^"\n]*?) "'), r'"\1"'),  # " quoted " -> "quoted"
]


def detokenize_wikitext(text: str) -> str:
    """Undo WikiText word tokenization: ``@-@``/``@,@``/``@.@`` joins, ``<unk>`` -> ``[UNK]``, spacing."""
    text = text.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".").replace("<unk>", "[UNK]")
    for pattern, repl in _DETOK_RULES:
        text = pattern.sub(repl, text)
    return text


def heading_level(line: str) -> int:
    """WikiText heading level of a line (`` = T = `` -> 1, `` = = T = = `` -> 2, ...), 0 if not a heading."""
    s = line.strip()
    level = 0
    while s.startswith("= ") and s.endswith(" ="):
        level += 1
        s = s[2:-2].strip()
        if not s:
            return 0
    return level


def split_text_documents(text: str) -> list[str]:
    """Split plain text into documents.

    * If the text has WikiText level-1 headings (`` = Title = ``), each heading starts a new document;
      heading lines of every level are dropped (they are separators, not prose) and the paragraphs
      of a document are joined with newlines. Text before the first heading is a document too.
    * Otherwise, if it has blank lines, documents are separated by blank lines.
    * Otherwise (e.g. one paragraph per line), every non-blank line is a document.
    """
    lines = [ln.strip() for ln in text.splitlines()]
    levels = [heading_level(ln) for ln in lines]
    docs: list[list[str]] = [[]]
    if 1 in levels:
        for ln, lvl in zip(lines, levels, strict=True):
            if lvl == 1:
                docs.append([])
            elif ln and lvl == 0:
                docs[-1].append(ln)
    elif "" in lines:
        for ln in lines:
            if ln:
                docs[-1].append(ln)
            elif docs[-1]:
                docs.append([])
    else:
        docs = [[ln] for ln in lines if ln]
    return [d for d in ("\n".join(p) for p in docs) if d]


def read_documents(spec: str, *, text_key: str = "text") -> list[str]:
    """Read a corpus as documents.

    ``spec``: ``"bundled"`` (WikiText-2 valid+test shipped with the package), a ``.jsonl`` path (one JSON
    object per line, text in ``text_key``), ``"hf:NAME[:CONFIG[:SPLIT]]"`` (HF ``datasets``, split defaults
    to ``train``) or any other text file (see :func:`split_text_documents`; word-tokenized WikiText is
    detokenized first). Raises DataError for a missing file or a corpus without text.
    """
    spec = str(spec)
    if parse_blend(spec) is not None:
        raise DataError(
            f"corpus {spec!r} is a weighted blend: it has no single text to train a tokenizer on; pass --vocab "
            "with the tokenizer its corpora were preprocessed with"
        )
    if is_indexed(spec):
        raise DataError(
            f"corpus {spec} is a Megatron indexed dataset (already tokenized): it has no text to train a "
            "tokenizer on; pass --vocab with the tokenizer it was preprocessed with"
        )
    if spec == "bundled":
        docs = _read_txt(BUNDLED_CORPUS)
    elif spec.startswith("hf:"):
        docs = _read_hf(spec, text_key)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise DataError(f"corpus file not found: {spec}")
        if not path.is_file():
            raise DataError(f"corpus must be a .txt or .jsonl file, got a directory: {spec}")
        docs = _read_jsonl(path, text_key) if path.suffix == ".jsonl" else _read_txt(path)
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise DataError(f"corpus {spec} is empty (no non-blank text)")
    return docs


def corpus_texts(docs_spec: str, text_key: str = "text") -> list[str]:
    """The documents of a corpus (alias of :func:`read_documents`, e.g. to train a tokenizer)."""
    return read_documents(docs_spec, text_key=text_key)


def _read_raw(path: Path) -> str:
    return read_utf8(path, "corpus")


def _read_txt(path: Path) -> list[str]:
    text = _read_raw(path)
    if any(m in text for m in _WIKITEXT_MARKERS):
        text = detokenize_wikitext(text)
    return split_text_documents(text)


def _read_jsonl(path: Path, text_key: str) -> list[str]:
    docs = []
    for n, line in enumerate(_read_raw(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or text_key not in obj:
            raise DataError(f"{path}:{n}: expected a JSON object with a {text_key!r} field")
        value = obj[text_key]
        if not isinstance(value, str):
            raise DataError(f"{path}:{n}: field {text_key!r} is {type(value).__name__}, expected a string")
        docs.append(value)
    return docs


def _read_hf(spec: str, text_key: str) -> list[str]:
    parts = spec[3:].split(":")
    if not parts[0] or len(parts) > 3:
        raise DataError(f"bad corpus spec {spec!r}: expected hf:NAME[:CONFIG[:SPLIT]]")
    parts += [""] * (3 - len(parts))
    name, config, split = parts[0], parts[1] or None, parts[2] or "train"
    try:
        import datasets
    except ImportError:
        raise DataError(f"corpus {spec} needs the 'datasets' package (pip install datasets)") from None
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot load dataset {spec} (offline?): {first}") from None
    if text_key not in ds.column_names:
        raise DataError(f"dataset {spec} has no column {text_key!r} (columns: {', '.join(ds.column_names)})")
    return [t for t in ds[text_key] if isinstance(t, str)]
