"""The tokenizers people bring, made offline and tiny: Llama-2 (SentencePiece `tokenizer.model`),
Llama-3 (`<|begin_of_text|>`/`<|end_of_text|>`, BOS from the post-processor), Mistral (`<s>`/`</s>`
HF directory) and GPT-2 (`vocab.json` + `merges.txt`).

Each is trained here with the real libraries (sentencepiece, tokenizers, transformers) on a few
kilobytes of text, so tests never reach a model hub.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TRAINING_TEXTS = [
    "The quick brown fox jumps over the lazy dog. Position encodings tell attention where a "
    "token is; rotary ones rotate query and key pairs by an angle that grows with position.",
    "naïve ünïcödé: 中文, 日本語, русский, العربية, emoji 🦊🧪, combining é, math ∑ x² ≤ ∞",
    "def rotate(q, k):\n    return q @ k.T  # code with\ttabs and  double  spaces\n",
    "Numbers 1234567890 3.14159 1e-10 and punctuation !?.,;:'\"()[]{}<>",
] * 8


@dataclass(frozen=True)
class TokenizerKinds:
    """Paths of the tokenizers made by `make_tokenizer_kinds`."""

    sentencepiece_model: Path
    """Llama-2 style: BPE with byte fallback, `<unk>`=0, `<s>`=1, `</s>`=2."""
    llama3_directory: Path
    """tokenizer.json + tokenizer_config.json, eos `<|end_of_text|>`, BOS by post-processor."""
    mistral_directory: Path
    """tokenizer.model + tokenizer.json + tokenizer_config.json (LlamaTokenizer), eos `</s>`."""
    gpt2_vocab: Path
    gpt2_merges: Path


def train_sentencepiece(directory: Path, vocab_size: int = 400) -> Path:
    import sentencepiece

    corpus = directory / "sp_corpus.txt"
    corpus.write_text("\n".join(TRAINING_TEXTS), encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(directory / "tokenizer"),
        vocab_size=vocab_size,
        model_type="bpe",
        # Llama-2's normalizer spec: text kept as written (HF's LlamaTokenizer assumes it).
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        byte_fallback=True,
        character_coverage=1.0,
        minloglevel=2,
        num_threads=1,
    )
    return directory / "tokenizer.model"


def train_byte_level(special_tokens: list[str], vocab_size: int = 420):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TRAINING_TEXTS, trainer=trainer)
    return tokenizer


def make_llama3_directory(directory: Path) -> Path:
    from tokenizers import processors

    tokenizer = train_byte_level(["<|begin_of_text|>", "<|end_of_text|>"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", tokenizer.token_to_id("<|begin_of_text|>"))],
    )
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|end_of_text|>",
        "model_max_length": 131072,
        "clean_up_tokenization_spaces": True,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return directory


def make_mistral_directory(directory: Path, sentencepiece_model: Path) -> Path:
    """A LlamaTokenizer directory as Mistral ships it; tokenizer.json made by transformers."""
    from transformers import AutoTokenizer

    source = directory.parent / f"{directory.name}_source"
    source.mkdir(parents=True, exist_ok=True)
    (source / "tokenizer.model").write_bytes(sentencepiece_model.read_bytes())
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
    }
    (source / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    AutoTokenizer.from_pretrained(str(source), local_files_only=True).save_pretrained(
        str(directory)
    )
    (directory / "tokenizer.model").write_bytes(sentencepiece_model.read_bytes())
    return directory


def make_gpt2_files(directory: Path) -> tuple[Path, Path]:
    """GPT-2's two files: vocab.json with `<|endoftext|>` last, merges.txt."""
    tokenizer = train_byte_level([])
    data = json.loads(tokenizer.to_str())
    vocab = dict(data["model"]["vocab"])
    vocab["<|endoftext|>"] = len(vocab)
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return directory / "vocab.json", directory / "merges.txt"


def make_tokenizer_kinds(directory: Path) -> TokenizerKinds:
    directory.mkdir(parents=True, exist_ok=True)
    sentencepiece_model = train_sentencepiece(directory)
    vocab, merges = make_gpt2_files(directory / "gpt2_files")
    return TokenizerKinds(
        sentencepiece_model=sentencepiece_model,
        llama3_directory=make_llama3_directory(directory / "llama3"),
        mistral_directory=make_mistral_directory(directory / "mistral", sentencepiece_model),
        gpt2_vocab=vocab,
        gpt2_merges=merges,
    )
