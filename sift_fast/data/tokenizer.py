"""Load or train a WordPiece tokenizer and describe its special tokens."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from sift_fast.errors import DataError
from sift_fast.io import atomic_path, read_utf8

BUNDLED_VOCAB = Path(__file__).resolve().parent / "bundled" / "bert-base-uncased-vocab.txt"

BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Accepted spellings of each role in a tokenizer.json (BERT style first, then RoBERTa style).
_ROLE_NAMES = {
    "pad": ("[PAD]", "<pad>"),
    "unk": ("[UNK]", "<unk>"),
    "cls": ("[CLS]", "<s>"),
    "sep": ("[SEP]", "</s>"),
    "mask": ("[MASK]", "<mask>"),
}


@dataclass(frozen=True)
class Vocab:
    """A ready tokenizer plus the ids the data pipeline needs."""

    tokenizer: Tokenizer
    vocab_size: int
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    unk_id: int
    special_ids: tuple[int, ...]
    fingerprint: str  # sha256 prefix of the serialized tokenizer (vocab + normalization)
    source: str = ""  # what --vocab named (for error lines)


def load_tokenizer(
    spec: str,
    *,
    train_texts: Iterable[str] | None = None,
    vocab_size: int = 8192,
    cache_dir: str | Path | None = None,
    lowercase: bool = True,
) -> Vocab:
    """Load a tokenizer from a vocab.txt / tokenizer.json path, "bundled", "train" or a HF hub name.

    ``lowercase`` applies to vocab.txt files and to training; a tokenizer.json or hub tokenizer
    keeps its own normalization.
    """
    spec = str(spec)
    if spec == "bundled":
        return _vocab_from_tokenizer(_from_vocab_txt(BUNDLED_VOCAB, lowercase), str(BUNDLED_VOCAB))
    if spec == "train":
        if train_texts is None:
            raise DataError('tokenizer "train" needs train_texts (the corpus to train the WordPiece on)')
        tok = _train(train_texts, vocab_size, cache_dir, lowercase)
        return _vocab_from_tokenizer(tok, "trained WordPiece")
    path = Path(spec).expanduser()
    if path.is_dir():
        for name in ("tokenizer.json", "vocab.txt"):
            if (path / name).is_file():
                return load_tokenizer(str(path / name), lowercase=lowercase)
        raise DataError(f"tokenizer directory {spec} has neither tokenizer.json nor vocab.txt")
    if path.is_file():
        if path.suffix == ".json":
            return _vocab_from_tokenizer(_from_tokenizer_json(path), spec)
        return _vocab_from_tokenizer(_from_vocab_txt(path, lowercase), spec)
    if path.suffix in (".txt", ".json") or os.sep in spec or spec.startswith("."):
        raise DataError(f"tokenizer file not found: {spec}")
    return _vocab_from_tokenizer(_from_hub(spec), spec)


def bert_wordpiece_pipeline(tok: Tokenizer, lowercase: bool) -> Tokenizer:
    """Attach BERT uncased normalization, pre-tokenization, [CLS]/[SEP] template and decoder."""
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls_id is not None and sep_id is not None:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
    return tok


def _read_text(path: Path, what: str) -> str:
    return read_utf8(path, what, "a text vocabulary")


def _from_vocab_txt(path: Path, lowercase: bool) -> Tokenizer:
    lines = _read_text(path, "vocab file").splitlines()
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError(f"vocab file {path} is empty")
    vocab: dict[str, int] = {}
    for line in lines:
        vocab.setdefault(line.rstrip("\r"), len(vocab))
    if len(vocab) != len(lines):
        raise DataError(f"vocab file {path} has duplicate entries ({len(lines) - len(vocab)} lines)")
    missing = [t for t in BERT_SPECIALS if t not in vocab]
    if missing:
        raise DataError(f"vocab file {path} is not a BERT WordPiece vocab: missing {' '.join(missing)}")
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.add_special_tokens(list(BERT_SPECIALS))  # already in the vocab: ids unchanged, matched verbatim
    tok = bert_wordpiece_pipeline(tok, lowercase)
    if tok.get_vocab_size() != len(lines):
        raise DataError(f"vocab file {path}: loaded {tok.get_vocab_size()} entries, expected {len(lines)}")
    return tok


def _from_tokenizer_json(path: Path) -> Tokenizer:
    text = _read_text(path, "tokenizer file")
    try:
        json.loads(text)
        return Tokenizer.from_str(text)
    except Exception as exc:  # json.JSONDecodeError or the Rust-side parse error
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path} is not a valid tokenizer.json: {first}") from None


def _from_hub(name: str) -> Tokenizer:
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(name)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"tokenizer {name!r} is not a file and could not be loaded from the Hugging Face hub "
            f"(offline? use a vocab.txt path, 'bundled' or 'train'): {first}"
        ) from None
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise DataError(f"tokenizer {name!r} has no fast (tokenizers) backend")
    return Tokenizer.from_str(backend.to_str())  # private copy


def _texts_key(texts: Iterable[str], vocab_size: int, lowercase: bool) -> tuple[str, list[str]]:
    h = hashlib.sha256(f"wordpiece-v2|{vocab_size}|{int(lowercase)}".encode())
    kept = []
    for t in texts:
        kept.append(t)
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:24], kept


def _train(texts: Iterable[str], vocab_size: int, cache_dir: str | Path | None, lowercase: bool) -> Tokenizer:
    if vocab_size < len(BERT_SPECIALS) + 1:
        raise DataError(f"tokenizer vocab_size must be > {len(BERT_SPECIALS)}, got {vocab_size}")
    key, texts = _texts_key(texts, vocab_size, lowercase)
    if not any(t.strip() for t in texts):
        raise DataError("cannot train a tokenizer on an empty corpus")
    cache_file = Path(cache_dir) / f"wordpiece-{key}.json" if cache_dir is not None else None
    if cache_file is not None and cache_file.is_file():
        return _from_tokenizer_json(cache_file)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok = bert_wordpiece_pipeline(tok, lowercase)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(BERT_SPECIALS), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tok = _canonical_ids(tok)
    tok = bert_wordpiece_pipeline(tok, lowercase)  # template needs the [CLS]/[SEP] ids known only now
    if cache_file is not None:
        with atomic_path(cache_file) as tmp:
            tok.save(str(tmp))
    return tok


def _canonical_ids(tok: Tokenizer) -> Tokenizer:
    """Renumber a trained WordPiece deterministically: specials first, then the tokens sorted.

    The trainer picks the same token set run to run but numbers tokens of tied counts in hash-map
    order, which differs between processes; WordPiece tokenization depends only on the set.
    """
    vocab = tok.get_vocab()
    rest = sorted(t for t in vocab if t not in BERT_SPECIALS)
    ordered = [t for t in BERT_SPECIALS if t in vocab] + rest
    return Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(ordered)}, unk_token="[UNK]",
                                      max_input_chars_per_word=100))


def _vocab_from_tokenizer(tok: Tokenizer, source: str) -> Vocab:
    tok.no_truncation()
    tok.no_padding()
    ids: dict[str, int] = {}
    for role, names in _ROLE_NAMES.items():
        found = next((i for i in (tok.token_to_id(n) for n in names) if i is not None), None)
        if found is None:
            raise DataError(f"tokenizer {source} has no {role} token (expected one of {' '.join(names)})")
        ids[role] = found
    added_special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    special_ids = tuple(sorted(set(ids.values()) | added_special))
    fingerprint = hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()[:16]
    return Vocab(
        tokenizer=tok,
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        pad_id=ids["pad"],
        cls_id=ids["cls"],
        sep_id=ids["sep"],
        mask_id=ids["mask"],
        unk_id=ids["unk"],
        special_ids=special_ids,
        fingerprint=fingerprint,
    )


def hf_tokenizer(spec: str, **kwargs: Any) -> Any:
    """A ``transformers`` fast tokenizer over :func:`load_tokenizer` (``bundled``, a vocab.txt /
    tokenizer.json / directory path, a hub name), its special tokens set by role (for the Trainer's
    collators)."""
    return hf_tokenizer_of(load_tokenizer(spec, **kwargs))


def hf_tokenizer_of(vocab: Vocab) -> Any:
    """A ``transformers`` fast tokenizer over a loaded :class:`Vocab` (special tokens set by role)."""
    from transformers import PreTrainedTokenizerFast

    name = vocab.tokenizer.id_to_token
    return PreTrainedTokenizerFast(
        tokenizer_object=vocab.tokenizer, pad_token=name(vocab.pad_id), unk_token=name(vocab.unk_id),
        cls_token=name(vocab.cls_id), sep_token=name(vocab.sep_id), mask_token=name(vocab.mask_id),
    )
