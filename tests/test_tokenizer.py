"""sift_fast.data.tokenizer: vocab.txt / tokenizer.json / bundled / train / hub specs and bad inputs."""

from pathlib import Path

import pytest

from sift_fast.data import BUNDLED_CORPUS, BUNDLED_VOCAB, load_tokenizer, read_documents
from sift_fast.data import tokenizer as tokmod
from sift_fast.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bert-base-uncased"


def vocab_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def bert():
    return load_tokenizer(str(BUNDLED_VOCAB))


def test_vocab_txt_matches_file(bert):
    lines = vocab_lines(BUNDLED_VOCAB)
    assert len(lines) == 30522 == bert.vocab_size
    ids = {tok: i for i, tok in enumerate(lines)}
    assert bert.tokenizer.encode("Hello world", add_special_tokens=False).ids == [ids["hello"], ids["world"]]
    expected = [ids["[CLS]"], ids["hello"], ids["world"], ids["[SEP]"]]
    assert bert.tokenizer.encode("Hello world").ids == expected
    assert (bert.pad_id, bert.unk_id, bert.cls_id, bert.sep_id, bert.mask_id) == tuple(
        ids[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    )
    assert set(bert.special_ids) == {0, 100, 101, 102, 103}
    # WordPiece continuation and verbatim special tokens in text
    enc = bert.tokenizer.encode("tokenization [UNK] [MASK]", add_special_tokens=False)
    assert enc.tokens == ["token", "##ization", "[UNK]", "[MASK]"]


def test_bundled_equals_vocab_file(bert):
    bundled = load_tokenizer("bundled")
    assert bundled.fingerprint == bert.fingerprint
    assert bundled.vocab_size == 30522


def test_lowercase_false_changes_fingerprint(bert):
    cased = load_tokenizer(str(BUNDLED_VOCAB), lowercase=False)
    assert cased.fingerprint != bert.fingerprint
    assert cased.tokenizer.encode("Hello", add_special_tokens=False).ids == [bert.unk_id]


def test_tokenizer_json_roundtrip(bert, tmp_path):
    path = tmp_path / "tokenizer.json"
    bert.tokenizer.save(str(path))
    loaded = load_tokenizer(str(path))
    text = "The European lobster, Homarus gammarus, is blue."
    assert loaded.tokenizer.encode(text).ids == bert.tokenizer.encode(text).ids
    assert (loaded.vocab_size, loaded.mask_id, loaded.special_ids) == (30522, bert.mask_id, bert.special_ids)
    assert load_tokenizer(str(tmp_path)).fingerprint == loaded.fingerprint  # directory spec


@pytest.mark.skipif(not (SHARED / "tokenizer.json").is_file(), reason="shared data not present")
def test_reference_tokenizer_json_agrees_with_vocab_txt(bert):
    ref = load_tokenizer(str(SHARED / "tokenizer.json"))
    text = "Naïve café owners in Zürich don't like 東京 tokenization!!"
    assert ref.tokenizer.encode(text).ids == bert.tokenizer.encode(text).ids
    assert ref.vocab_size == bert.vocab_size


def test_train_vocab_size_and_cache(tmp_path, monkeypatch):
    texts = read_documents(str(BUNDLED_CORPUS))[:4]
    v1 = load_tokenizer("train", train_texts=texts, vocab_size=600, cache_dir=tmp_path)
    assert v1.vocab_size == 600
    assert v1.tokenizer.token_to_id("[PAD]") == v1.pad_id == 0
    assert (v1.unk_id, v1.cls_id, v1.sep_id, v1.mask_id) == (1, 2, 3, 4)
    cached = list(tmp_path.glob("wordpiece-*.json"))
    assert len(cached) == 1

    def no_training(*a, **k):
        raise AssertionError("trained again instead of using the cache")

    monkeypatch.setattr(tokmod.trainers, "WordPieceTrainer", no_training)
    v2 = load_tokenizer("train", train_texts=iter(texts), vocab_size=600, cache_dir=tmp_path)
    assert v2.fingerprint == v1.fingerprint
    monkeypatch.undo()
    v3 = load_tokenizer("train", train_texts=texts[:3], vocab_size=600, cache_dir=tmp_path)
    assert v3.fingerprint != v1.fingerprint
    assert len(list(tmp_path.glob("wordpiece-*.json"))) == 2


def test_train_requires_texts():
    with pytest.raises(DataError, match="train_texts"):
        load_tokenizer("train")
    with pytest.raises(DataError, match="empty"):
        load_tokenizer("train", train_texts=["", "  "], vocab_size=100)


@pytest.mark.parametrize(
    "content, match",
    [
        (bytes(range(256)) * 4, "binary"),
        (b"", "empty"),
        (b"\xff\xfe not utf8\n", "UTF-8"),
        (b"[PAD]\n[UNK]\nhello\nworld\n", "missing \\[CLS\\] \\[SEP\\] \\[MASK\\]"),
        (b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nhello\n", "duplicate"),
    ],
)
def test_bad_vocab_file(tmp_path, content, match):
    path = tmp_path / "vocab.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        load_tokenizer(str(path))


def test_bad_tokenizer_json(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"not": "a tokenizer"}')
    with pytest.raises(DataError, match="not a valid tokenizer.json"):
        load_tokenizer(str(path))
    path.write_bytes(b"")
    with pytest.raises(DataError, match="not a valid tokenizer.json"):
        load_tokenizer(str(path))


def test_missing_file():
    with pytest.raises(DataError, match="not found"):
        load_tokenizer("/nonexistent/vocab.txt")


def test_hub_failure_is_one_line(monkeypatch):
    import transformers

    def offline(name, *a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co'.\nCheck your connection.")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(DataError) as info:
        load_tokenizer("some-org/some-model")
    assert "\n" not in str(info.value) and "some-org/some-model" in str(info.value)


def test_trained_vocab_is_identical_across_processes():
    """WordPiece training numbers tied tokens in hash-map order (it differs between processes); ids are
    renumbered canonically, so a corpus gives the same vocab, ids included, in every process."""
    import subprocess
    import sys

    code = (
        "from sift_fast.data import read_documents, load_tokenizer;"
        "v = load_tokenizer('train', train_texts=read_documents('bundled')[:40], vocab_size=1500);"
        "print(v.fingerprint)"
    )
    prints = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
              for _ in range(3)}
    assert len(prints) == 1, prints
