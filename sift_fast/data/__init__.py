"""Data pipeline: tokenizer, corpus reading, packing, MLM masking, batches and loaders."""

from sift_fast.data.batch import Batch, make_batch
from sift_fast.data.corpus import BUNDLED_CORPUS, corpus_texts, detokenize_wikitext, read_documents
from sift_fast.data.dataset import PackedCorpus, build_corpus
from sift_fast.data.loader import CandidateLoader, validation_batches
from sift_fast.data.mlm import MLMMasker
from sift_fast.data.packing import pack_sequences
from sift_fast.data.samples import HAVE_EXT, PackedSamples
from sift_fast.data.tokenizer import BUNDLED_VOCAB, Vocab, load_tokenizer

__all__ = [
    "BUNDLED_CORPUS",
    "BUNDLED_VOCAB",
    "HAVE_EXT",
    "Batch",
    "CandidateLoader",
    "MLMMasker",
    "PackedCorpus",
    "PackedSamples",
    "Vocab",
    "build_corpus",
    "corpus_texts",
    "detokenize_wikitext",
    "load_tokenizer",
    "make_batch",
    "pack_sequences",
    "read_documents",
    "validation_batches",
]
