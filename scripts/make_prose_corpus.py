"""Assemble a large single-pass English prose corpus from Debian documentation packages.

    python scripts/make_prose_corpus.py --out ~/.cache/sift_fast/prose/debian-docs-prose.txt

Downloads (``apt-get download``, no install, no root needed beyond apt's cache) the documentation
packages in ``PACKAGES``, unpacks them with ``dpkg-deb -x``, extracts paragraphs from their HTML,
POD, Texinfo/info and plain-text files, keeps only English prose (a paragraph filter: length,
letter share, stop-word share, few code symbols, sentence punctuation), drops exact duplicates, adds
``../shared/data/linux-docs-prose.txt``, shuffles the documents with a fixed seed (so the held-out
tail is an i.i.d. validation split) and writes one ``.txt`` (blank lines between documents, one
paragraph per line) plus ``<out>.manifest.json`` (package versions, bytes per source). The corpus is
not committed; this script is the recipe. Python's own documentation is excluded on purpose: it is
reserved for independent evaluation.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html.parser
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sift_fast.io import atomic_write_json, atomic_write_text  # noqa: E402

# Debian 12 documentation packages with a large share of English prose (manuals, handbooks, guides).
PACKAGES = (
    "postgresql-doc-15", "perl-doc", "sqlite3-doc", "git-doc", "debian-handbook", "debian-reference-en",
    "debian-policy", "developers-reference", "maint-guide", "gimp-help-en", "octave-doc", "kicad-doc-en",
    "wireshark-doc", "apache2-doc", "gettext-doc", "autoconf-doc", "bash-doc", "zsh-doc", "gnu-standards",
    "vim-runtime", "rust-doc", "maxima-doc", "r-doc-html", "gnucash-docs", "mutt", "racket-doc", "erlang-doc",
    "ghc-doc", "openjdk-17-doc", "scala-doc", "groovy-doc", "gnome-user-docs", "gnome-devel-docs",
    "libreoffice-help-en-us", "cmake-doc", "ffmpeg-doc", "imagemagick-6-doc", "nodejs-doc", "ruby3.1-doc",
    "gradle-doc", "ant-doc", "tomcat10-docs", "scons-doc", "graphviz-doc", "dict-foldoc", "haskell98-report",
    "valgrind", "lilypond-doc-html", "inkscape-tutorials",
)
EXCLUDED = re.compile(r"python", re.I)  # reserved for independent evaluation
TEXT_SUFFIXES = (".html", ".htm", ".xhtml", ".page", ".txt", ".pod", ".info", ".text", ".md", ".rst")
# path components naming a non-English translation
LANG_DIR = re.compile(r"(^|/)(ar|bg|ca|cs|da|de|el|es|et|eu|fa|fi|fr|gl|he|hu|id|it|ja|ko|lt|nb|nl|nn|pl|pt|pt_BR|"
                      r"pt-br|ro|ru|sk|sl|sr|sv|ta|tr|uk|vi|zh|zh_CN|zh_TW|zh-cn|zh-tw)(/|$)")
LANG_SUFFIX = re.compile(r"\.html?\.(?!en\b)[a-z]{2}(-[a-z]{2})?$|\.(?!en\b)[a-z]{2}\.html?$")
STOPWORDS = frozenset("the a an of to and in is are be it that this for on with as by or not can from at "
                      "you your which if will when have has was were all its may use used should must".split())
CODE_CHARS = set("{}[]<>=;$\\|_#@*~^`")
SKIP_TAGS = {"pre", "script", "style", "table", "nav", "head", "title"}  # inline code is kept: the filter judges it
BLOCK_TAGS = {"p", "li", "dd", "dt", "div", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "br", "tr",
              "section", "article", "td", "th", "ul", "ol", "dl", "body", "hr"}


class _Paragraphs(html.parser.HTMLParser):
    """Text of an HTML page split at block elements; <pre>, <code>, tables and scripts skipped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.skip = 0
        self.buf: list[str] = []
        self.out: list[str] = []

    def _flush(self) -> None:
        if self.buf:
            self.out.append("".join(self.buf))
            self.buf = []

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in SKIP_TAGS:
            self.skip += 1
        elif tag in BLOCK_TAGS and not self.skip:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in BLOCK_TAGS and not self.skip:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.buf.append(data)


def html_paragraphs(text: str) -> list[str]:
    p = _Paragraphs()
    try:
        p.feed(text)
        p.close()
    except (AssertionError, ValueError):  # malformed markup: keep what was parsed
        pass
    p._flush()
    return p.out


def plain_paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs; indented (verbatim) and POD/troff/info command lines dropped."""
    out, cur = [], []
    for ln in text.splitlines():
        if not ln.strip() or ln.startswith(("=", ".", "\x1f", "*", "-", "#", "  ", "\t")):
            if cur:
                out.append(" ".join(cur))
                cur = []
            continue
        cur.append(ln.strip())
    if cur:
        out.append(" ".join(cur))
    return [re.sub(r"[BICLFSXE]<{1,2}([^<>]*?)>{1,2}", r"\1", p) for p in out]  # POD inline markup


def is_prose(p: str) -> bool:
    """English prose, not code, tables, navigation or boilerplate."""
    if not 120 <= len(p) <= 6000:
        return False
    words = p.split()
    if len(words) < 20:
        return False
    letters = sum(c.isalpha() for c in p)
    if letters < 0.72 * len(p.replace(" ", "")):
        return False
    if sum(c in CODE_CHARS for c in p) > 0.01 * len(p):
        return False
    lower = [w.lower().strip(".,;:()\"'") for w in words]
    if sum(w in STOPWORDS for w in lower) < 0.22 * len(words):
        return False
    if not re.search(r"[.!?][\"')\]]?$", p):
        return False
    return "copyright" not in p.lower()[:200] and not p.isupper()


def file_paragraphs(path: Path) -> list[str]:
    name = path.name.lower()
    raw = path.read_bytes()
    if name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError):
            return []
        name = name[:-3]
    if b"\x00" in raw[:4096]:
        return []
    text = raw.decode("utf-8", errors="replace")
    markup = name.endswith((".html", ".htm", ".xhtml", ".page"))
    paras = html_paragraphs(text) if markup else plain_paragraphs(text)
    return [p for p in (re.sub(r"\s+", " ", p).strip() for p in paras) if is_prose(p)]


def candidate_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        name = path.name.lower()
        base = name[:-3] if name.endswith(".gz") else name
        if not path.is_file() or path.is_symlink() or LANG_DIR.search(rel) or LANG_SUFFIX.search(name):
            continue
        if EXCLUDED.search(rel):
            continue
        if base.endswith(TEXT_SUFFIXES) or re.search(r"\.info(-\d+)?$", base) or "/vim/vim90/doc/" in rel:
            yield path


def fetch(pkg: str, debs: Path, unpack: Path) -> tuple[Path | None, str]:
    """Download and unpack ``pkg``; returns (unpacked root, version) or (None, reason)."""
    have = sorted(debs.glob(f"{pkg}_*.deb"))
    if not have:
        r = subprocess.run(["apt-get", "download", pkg], cwd=debs, capture_output=True, text=True)
        have = sorted(debs.glob(f"{pkg}_*.deb"))
        if r.returncode or not have:
            return None, (r.stderr.strip().splitlines() or ["apt-get download failed"])[-1]
    deb = have[-1]
    version = deb.name.split("_")[1]
    root = unpack / pkg
    if not root.exists():
        tmp = unpack / f".{pkg}.tmp"
        subprocess.run(["rm", "-rf", str(tmp)], check=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        tmp.rename(root)
    return root, version


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path.home() / ".cache/sift_fast/prose/debian-docs-prose.txt")
    ap.add_argument("--work", type=Path, default=None, help="download/unpack directory (default: beside --out)")
    ap.add_argument("--linux-docs", type=Path, default=REPO.parent / "shared/data/linux-docs-prose.txt")
    ap.add_argument("--packages", default=",".join(PACKAGES))
    ap.add_argument("--min-mb", type=float, default=60.0, help="fail if the corpus is smaller than this")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    work = args.work or args.out.parent / "work"
    debs, unpack = work / "debs", work / "unpacked"
    debs.mkdir(parents=True, exist_ok=True)
    unpack.mkdir(parents=True, exist_ok=True)
    seen: set[bytes] = set()
    docs: list[str] = []
    manifest: dict[str, dict] = {}

    def add(source: str, paragraphs: list[str], version: str = "") -> None:
        kept = []
        for p in paragraphs:
            h = hashlib.blake2b(p.lower().encode(), digest_size=12).digest()
            if h not in seen:
                seen.add(h)
                kept.append(p)
        entry = manifest.setdefault(source, {"version": version, "paragraphs": 0, "bytes": 0, "documents": 0})
        if kept:
            docs.append("\n".join(kept))
            entry["paragraphs"] += len(kept)
            entry["bytes"] += sum(len(p.encode()) + 1 for p in kept)
            entry["documents"] += 1

    for pkg in [p for p in args.packages.split(",") if p]:
        if EXCLUDED.search(pkg):
            print(f"skip {pkg}: Python documentation is reserved for independent evaluation", file=sys.stderr)
            continue
        root, version = fetch(pkg, debs, unpack)
        if root is None:
            print(f"skip {pkg}: {version}", file=sys.stderr)
            continue
        for f in candidate_files(root):
            add(pkg, file_paragraphs(f), version)
        e = manifest.get(pkg, {"bytes": 0, "paragraphs": 0})
        print(f"{pkg:24s} {version:28s} {e['paragraphs']:7d} paragraphs {e['bytes'] / 1e6:7.2f} MB", file=sys.stderr)
    if args.linux_docs.is_file():
        lines = [ln.strip() for ln in args.linux_docs.read_text(encoding="utf-8").splitlines() if ln.strip()]
        for i in range(0, len(lines), 8):  # consecutive paragraphs of one kernel document, 8 per document
            add("linux-docs-prose", lines[i:i + 8], "linux-doc-6.1 (shared/data)")
    total = sum(e["bytes"] for e in manifest.values())
    random.Random(args.seed).shuffle(docs)
    atomic_write_text(args.out, "\n\n".join(docs) + "\n")
    atomic_write_json(Path(f"{args.out}.manifest.json"),
                      {"total_bytes": total, "documents": len(docs), "seed": args.seed, "sources": manifest})
    print(f"wrote {args.out}: {len(docs)} documents, {total / 1e6:.1f} MB of prose", file=sys.stderr)
    if total < args.min_mb * 1e6:
        print(f"error: the corpus has {total / 1e6:.1f} MB, less than --min-mb {args.min_mb:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
