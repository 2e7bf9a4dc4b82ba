"""Data for HoPE pretraining: RedPajama-style JSONL, byte-level BPE, Megatron `.bin/.idx`."""

from megatron_hope.data.indexed import IndexedStats, write_indexed_dataset
from megatron_hope.data.sample_corpus import CorpusStats, iter_jsonl_texts, write_sample_corpus
from megatron_hope.data.sample_data import SampleData, prepare_sample_data
from megatron_hope.data.tokenizer import HopeTokenizer, build_tokenizer, train_bpe_tokenizer

__all__ = [
    "CorpusStats",
    "HopeTokenizer",
    "IndexedStats",
    "SampleData",
    "build_tokenizer",
    "iter_jsonl_texts",
    "prepare_sample_data",
    "train_bpe_tokenizer",
    "write_indexed_dataset",
    "write_sample_corpus",
]
