"""Data for HoPE pretraining: RedPajama readers, tokenizers, `hope-preprocess` to Megatron
`.bin/.idx`, blends.

The names below are imported on first use (PEP 562), so that `import megatron_hope.data.cli`
does not pay for torch and megatron-core before it needs them.
"""

from importlib import import_module

_EXPORTS = {
    "blend_string": "blend",
    "blend_weights": "blend",
    "IndexedStats": "indexed",
    "merge_indexed_datasets": "indexed",
    "write_indexed_dataset": "indexed",
    "PreprocessConfig": "preprocess",
    "PreprocessSummary": "preprocess",
    "run_preprocess": "preprocess",
    "CorpusStats": "sample_corpus",
    "iter_jsonl_texts": "sample_corpus",
    "write_sample_corpus": "sample_corpus",
    "SampleData": "sample_data",
    "prepare_sample_data": "sample_data",
    "HopeTokenizer": "tokenizer",
    "build_tokenizer": "tokenizer",
    "train_bpe_tokenizer": "tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
