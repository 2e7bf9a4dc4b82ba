"""Tiny checkpoints for the conversion tests, trained in forked gloo ranks (tests/distributed)."""

from __future__ import annotations

SEQ_LENGTH = 64


def tiny_config(data, kind="hope", untie=True, query_groups=2, rope_fraction=None,
                rotary_percent=1.0, **changes):
    """A 2-layer Llama-style model (SwiGLU, RMSNorm, no biases), 2 iterations."""
    from megatron_hope.megatron.model import ModelArchitecture
    from megatron_hope.rope.config import PositionEncodingConfig
    from megatron_hope.training.config import PretrainConfig

    encoding = PositionEncodingConfig(
        kind, 16, 10000.0, SEQ_LENGTH if kind == "hope" else None, rope_fraction,
        rotary_percent)
    arch = ModelArchitecture(
        num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=SEQ_LENGTH,
        vocab_size=data["vocab_size"], num_query_groups=query_groups, position_encoding=encoding,
        swiglu=True, normalization="RMSNorm", add_bias_linear=False,
        untie_embeddings_and_output_weights=untie,
    )
    base = dict(
        arch=arch, micro_batch_size=2, global_batch_size=4, train_iters=2, lr=3e-3,
        min_lr=3e-4, lr_warmup_iters=1, eval_interval=100, eval_iters=0,
        log_interval=1, data_path=(data["prefix"],), tokenizer_model=data["tokenizer"],
        split="90,10,0", progress=False,
    )
    base.update(changes)
    return PretrainConfig(**base)


def pretrain(rank, data, save, model_changes, run_changes):
    from megatron_hope.training.cli import run

    _, result = run(tiny_config(data, save=save, **model_changes, **run_changes))
    return result.last_checkpoint


def prepare_data(directory):
    from megatron_hope.data.sample_data import prepare_sample_data
    from megatron_hope.data.tokenizer import build_tokenizer

    sample = prepare_sample_data(directory, vocab_size=600, max_bytes=400_000)
    vocab = build_tokenizer("HuggingFaceTokenizer", str(sample.tokenizer_path)).vocab_size
    return {"prefix": str(sample.data_prefix), "tokenizer": str(sample.tokenizer_path),
            "vocab_size": vocab}


CHECKPOINTS = {
    # name: (ranks, model changes, run changes)
    "hope_tp1_gqa_untied": (1, {}, {}),
    "hope_tp2_tied": (2, {"untie": False}, {"tensor_model_parallel_size": 2}),
    "prope_pp2_untied": (2, {"kind": "p-rope", "rope_fraction": 0.5},
                         {"pipeline_model_parallel_size": 2}),
    "rope_tp1_mha_tied": (1, {"kind": "rope", "untie": False, "query_groups": None}, {}),
    # Megatron-LM's --rotary-percent: int(16 x 0.6) = 9 dims, an odd width (5 pairs, 10 dims).
    "rotary_percent_tp1": (1, {"kind": "rope", "rotary_percent": 0.6}, {}),
}


def export_many(rank, jobs):
    """Run several exports in one process; returns per job the verify diff (or the error) and
    the Megatron logits of the verification tokens, for an independent comparison."""
    from megatron_hope.convert.export import ExportOptions, export_checkpoint
    from megatron_hope.convert.verify import verification_tokens
    from megatron_hope.training.model_loading import load_model_from_checkpoint

    results, reference = {}, {}
    for name, options in jobs.items():
        options = dict(options)
        tokens = options.pop("tokens", None)  # a run without text (NullTokenizer) passes ids
        result = export_checkpoint(ExportOptions(**options, progress=False))
        if tokens is None:
            tokens = verification_tokens(result.save_dir / "tokenizer.json", SEQ_LENGTH)
        if options["load_dir"] not in reference:
            reference[options["load_dir"]] = load_model_from_checkpoint(
                options["load_dir"]).logits(tokens).cpu()
        logits = reference[options["load_dir"]]
        results[name] = {"diff": result.max_abs_diff, "tokens": tokens, "logits": logits,
                         "save_dir": str(result.save_dir)}
    return results


def cli_many(rank, argvs):
    """`hope-convert` main() on each argv; returns (exit code, stderr) per run."""
    import contextlib
    import io

    from megatron_hope.convert.cli import main

    outcomes = []
    for argv in argvs:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main([*list(argv), "--no-progress"])
        outcomes.append((code, stderr.getvalue()))
    return outcomes


def megatron_tensors(rank, load_dir):
    """Every model tensor of a checkpoint, read through the conversion's reader."""
    from megatron_hope.convert.export import ensure_single_process
    from megatron_hope.convert.mcore_checkpoint import CheckpointReader, expected_shapes

    ensure_single_process()
    reader = CheckpointReader.open(load_dir)
    out = {}
    for name in expected_shapes(reader.arch, reader.padded_vocab_size):
        layers = range(reader.arch.num_layers) if "{i}" in name else [None]
        for layer in layers:
            out[name.replace("{i}", str(layer))] = reader.read(name, layer)
    return {"tensors": out, "metadata": reader.metadata}


def megatron_logits(rank, load_dir, tokens):
    from megatron_hope.training.model_loading import load_model_from_checkpoint

    return load_model_from_checkpoint(load_dir).logits(tokens).cpu()


def import_and_read(rank, argv, load_dir, tokens):
    """hope-convert --from-hf, then the imported checkpoint's tensors and logits."""
    from megatron_hope.convert.cli import main

    assert main(["--from-hf", *argv, "--no-progress"]) == 0
    tensors = megatron_tensors(rank, load_dir)
    if tokens is not None:
        tensors["logits"] = megatron_logits(rank, load_dir, tokens)
    return tensors


def continue_pretraining(rank, data, load_dir, model_changes, run_changes):
    from megatron_hope.training.cli import run

    config = tiny_config(data, load=load_dir, no_load_optim=True, no_load_rng=True,
                         **model_changes, **run_changes)
    _, result = run(config)
    return result.train_losses


def round_trip(rank, load_dir, hf_dir, back_dir, export_argv):
    """Export with `export_argv`, import back at TP=2 padding; both checkpoints' tensors."""
    from megatron_hope.convert.cli import main

    assert main(["--load-dir", load_dir, "--save-dir", hf_dir, "--no-verify", "--no-progress",
                 *export_argv]) == 0
    assert main(["--from-hf", "--load-dir", hf_dir, "--save-dir", back_dir, "--no-progress",
                 "--target-tensor-parallel-size", "2"]) == 0
    return megatron_tensors(rank, load_dir), megatron_tensors(rank, back_dir)


def prepare_sentencepiece_data(directory):
    """A Llama-2-style SentencePiece model (byte fallback, <unk> <s> </s>) and .bin/.idx written
    with it: the tokenizer llama.cpp's Phi3 converter wants."""
    import json
    from pathlib import Path

    from megatron_hope.data.preprocess.config import PreprocessConfig
    from megatron_hope.data.preprocess.run import run_preprocess
    from tests.data.tokenizer_kinds import TRAINING_TEXTS, train_sentencepiece

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = train_sentencepiece(directory)
    corpus = directory / "corpus.jsonl"
    with corpus.open("w", encoding="utf-8") as out:
        for repeat in range(40):
            for text in TRAINING_TEXTS:
                out.write(json.dumps({"text": f"{text} ({repeat})"}) + "\n")
    prefix = directory / "sp_text_document"
    run_preprocess(PreprocessConfig(
        input=[str(corpus)], output_prefix=str(directory / "sp"),
        tokenizer_type="SentencePieceTokenizer", tokenizer_model=str(model), append_eod=True))
    import sentencepiece

    vocab = sentencepiece.SentencePieceProcessor(model_file=str(model)).GetPieceSize()
    return {"prefix": str(prefix), "tokenizer": str(model), "vocab_size": vocab}


def export_cli(rank, argv):
    """`hope-convert` main() on `argv`; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    from megatron_hope.convert.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        code = main([*argv, "--no-progress"])
    return code, stdout.getvalue(), stderr.getvalue()
