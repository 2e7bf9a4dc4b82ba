"""Data for HoPE pretraining: RedPajama readers, tokenizers, `hope-preprocess` to Megatron
`.bin/.idx`, blends."""

from megatron_hope.data.blend import blend_string, blend_weights
from megatron_hope.data.indexed import IndexedStats, merge_indexed_datasets, write_indexed_dataset
from megatron_hope.data.preprocess import PreprocessConfig, PreprocessSummary, run_preprocess
from megatron_hope.data.sample_corpus import CorpusStats, iter_jsonl_texts, write_sample_corpus
from megatron_hope.data.sample_data import SampleData, prepare_sample_data
from megatron_hope.data.tokenizer import HopeTokenizer, build_tokenizer, train_bpe_tokenizer

__all__ = [
    "CorpusStats",
    "HopeTokenizer",
    "IndexedStats",
    "PreprocessConfig",
    "PreprocessSummary",
    "SampleData",
    "blend_string",
    "blend_weights",
    "build_tokenizer",
    "iter_jsonl_texts",
    "merge_indexed_datasets",
    "prepare_sample_data",
    "run_preprocess",
    "train_bpe_tokenizer",
    "write_indexed_dataset",
    "write_sample_corpus",
]
