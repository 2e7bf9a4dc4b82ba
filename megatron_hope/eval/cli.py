"""hope-eval: the HoPE paper's evaluations on a hope-pretrain checkpoint or an HF model.

    hope-eval ppl-vs-length --load runs/hope/checkpoints --data data/heldout_text_document \
        --output-dir eval/hope
    hope-eval copy      --load runs/hope/checkpoints --output-dir eval/hope --samples 500
    hope-eval copy      --load runs/hope/checkpoints --rope-scaling yarn:4 \
        --output-dir eval/hope-yarn
    hope-eval fewshot   --hf-model exports/hope-hf --task-file glue/SST-2/dev.tsv \
        --task-file glue/RTE/dev.tsv --output-dir eval/hope-hf
    hope-eval needle    --load runs/hope/checkpoints --lengths 256,512,1024 --output-dir eval/hope
    hope-eval passkey   --load runs/hope/checkpoints --lengths 256,512,1024 --output-dir eval/hope
    hope-eval attention --load runs/hope/checkpoints --lengths 512,1024 --output-dir eval/hope
    hope-eval report eval/rope eval/hope eval/hope-yarn --output-dir eval/report

CPU smoke run: add `--samples 4 --lengths 64,128`. On a GPU the model runs on CUDA (Megatron:
megatron-core's own device placement; HF: moved to cuda:0 when available). Every subcommand
writes `<output-dir>/<task>.json`, `.csv` and `.png`; `report` turns them into markdown tables
laid out like the paper's Tables 1, 2, 3 and 7.
"""

from __future__ import annotations

import argparse
import sys
import warnings

# As hope-pretrain: on CPU every megatron-core import warns that apex/TE are missing.
warnings.filterwarnings("ignore", message=r".*(Apex is|Apex are|Engine and Apex are) not installed")

from megatron_hope.data.tokenizer_args import TokenizerArgs, add_tokenizer_arguments  # noqa: E402
from megatron_hope.eval.common import parse_float_list, parse_int_list  # noqa: E402
from megatron_hope.flag_checks import check_range, flag  # noqa: E402

SUBCOMMANDS = ("ppl-vs-length", "copy", "fewshot", "needle", "passkey", "attention",
               "vaf-over-training", "report")


def _model_flags(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--load", help="hope-pretrain checkpoint directory (any TP/PP)")
    source.add_argument("--hf-model", help="local HuggingFace model directory")
    parser.add_argument("--output-dir", required=True, help="where results and plots go")
    parser.add_argument("--rope-scaling", default=None,
                        help="linear:F (PI) or yarn:F applied on the fly (the paper's +PI/+YaRN)")
    group = add_tokenizer_arguments(
        parser, model_help="tokenizer overriding the checkpoint's / HF directory's: an HF "
        "directory, a tokenizer.json or a SentencePiece .model (default: the model's own)")
    group.add_argument("--tokenizer", dest="tokenizer_model", help=argparse.SUPPRESS)
    parser.add_argument("--label", default=None,
                        help="row name in reports (default: position encoding + scaling)")
    parser.add_argument("--iteration", type=int, default=None,
                        help="Megatron only: evaluate this saved iteration instead of the latest "
                             "(e.g. VAF along training, Figure 3b)")
    parser.add_argument("--train-length", type=int, default=None,
                        help="HF only: training length L when the config does not say")
    parser.add_argument("--max-extrapolation", type=float, default=8.0,
                        help="refuse inputs longer than this many training lengths (x F with "
                             "--rope-scaling); default 8")
    parser.add_argument("--samples", type=int, default=None, help="samples per cell")
    parser.add_argument("--lengths", default=None, help="comma-separated input lengths")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def tokenizer_override(args: argparse.Namespace) -> TokenizerArgs | None:
    """The --tokenizer-* flags when they name a tokenizer, else None (the model's own)."""
    spec = TokenizerArgs.of(args)
    named = (spec.tokenizer_model, spec.vocab_file, spec.tokenizer_vocab_size)
    if all(value is None for value in named) and spec.tokenizer_type == "HuggingFaceTokenizer":
        return None
    return spec


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hope-eval", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    ppl = sub.add_parser("ppl-vs-length", help="PPL of the last 256 tokens vs input length")
    _model_flags(ppl)
    ppl.add_argument("--data", required=True, help=".bin/.idx prefix or JSONL with 'text'")
    ppl.add_argument("--last-tokens", type=int, default=256)
    ppl.add_argument("--windows", choices=("stream", "document"), default="stream",
                     help="stream: windows of the concatenated documents (same scored tokens at "
                          "every length); document: each window one document's start, after the "
                          "start token")
    copy = sub.add_parser("copy", help="in-context copying (Table 1 / Table 3)")
    _model_flags(copy)
    copy.add_argument("--counts", default=None,
                      help="sequence numbers (default: the paper's 30,40,...,80 x L/512, or the "
                           "ones that fit --lengths)")
    copy.add_argument("--separator", action="store_true",
                      help="a newline after each sequence (not the paper's form, which has none)")
    few = sub.add_parser("fewshot", help="few-shot following ability (Table 2 / Table 7)")
    _model_flags(few)
    few.add_argument("--task-file", action="append", default=[],
                     help="GLUE-form .tsv or .jsonl (repeatable); none: the synthetic task")
    few.add_argument("--synthetic", action="store_true",
                     help="also run the built-in synthetic task when --task-file is given")
    few.add_argument("--shots", type=int, default=5)
    needle = sub.add_parser("needle", help="gkamradt's needle in a natural-text haystack, "
                            "lengths x depths (Figure 1)")
    _model_flags(needle)
    needle.add_argument("--depths", default=None, help="fractions, default 0,0.1,...,1")
    passkey = sub.add_parser("passkey", help="passkey retrieval in repeated filler, lengths x "
                             "depths (easier than the needle; not a paper figure)")
    _model_flags(passkey)
    passkey.add_argument("--depths", default=None, help="fractions, default 0,0.25,0.5,0.75,1")
    attention = sub.add_parser("attention",
                               help="random-token logits, eq. 4 components, eq. 5 VAF")
    _model_flags(attention)
    training = sub.add_parser("vaf-over-training",
                              help="band VAF (eq. 5) at each saved iteration (Figure 3b)")
    _model_flags(training)
    training.add_argument("--iterations", default="all",
                          help="'all' saved iterations or a comma-separated list")
    report = sub.add_parser("report", help="markdown tables like the paper's from run dirs")
    report.add_argument("runs", nargs="+", help="output directories of earlier subcommands")
    report.add_argument("--output-dir", required=True)
    return parser


MAX_SEED = 2**32 - 1
"""Seeds are mixed with lengths (`seed * 1000003 + length`) into torch generator seeds, which
overflow past 64 bits; 32 bits, as hope-pretrain's --seed, leaves room."""


def check_numbers(args: argparse.Namespace) -> None:
    """The numeric flags and --output-dir, before any (slow) model load; ValueError names the
    flag at fault."""
    from pathlib import Path

    output = Path(args.output_dir)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output-dir {output} exists and is not a directory")
    if args.command == "report":
        return
    at_least = {"samples": 1, "batch_size": 1, "train_length": 1, "iteration": 0,
                "last_tokens": 1, "shots": 0}
    for name, low in at_least.items():
        value = getattr(args, name, None)
        if value is not None and value < low:
            raise ValueError(f"{flag(name)} {value} must be at least {low}")
    if not 0 <= args.seed <= MAX_SEED:
        raise ValueError(f"--seed {args.seed} must lie in [0, {MAX_SEED}]")
    check_range("max_extrapolation", args.max_extrapolation, 0.0, low_included=False)


def _run(args: argparse.Namespace) -> list:
    from pathlib import Path

    from megatron_hope.eval import report
    from megatron_hope.eval.scorers import load_scorer
    from megatron_hope.rope.scaling import parse_rope_scaling

    check_numbers(args)
    if args.command == "report":
        return [report.build_report(args.runs, args.output_dir)]
    scaling = parse_rope_scaling(args.rope_scaling)
    lengths = parse_int_list(args.lengths, "--lengths")
    # Validate local inputs before the (slow) model load.
    fewshot_tasks = None
    if args.command == "fewshot":
        from megatron_hope.eval.fewshot import load_task_file, synthetic_task

        fewshot_tasks = [load_task_file(path) for path in args.task_file]
        if not fewshot_tasks or args.synthetic:
            fewshot_tasks.append(synthetic_task(seed=args.seed))
    if args.command == "ppl-vs-length" and not (
        Path(args.data).exists() or Path(f"{args.data}.bin").exists()
    ):
        raise ValueError(f"--data {args.data}: no such file or dataset prefix")
    counts = parse_int_list(getattr(args, "counts", None), "--counts")
    depths = parse_float_list(getattr(args, "depths", None), "--depths")
    if depths is not None and not all(0 <= depth <= 1 for depth in depths):  # NaN fails too
        raise ValueError(f"--depths {args.depths!r}: every depth is a fraction in [0, 1]")
    if args.command == "vaf-over-training":
        return _vaf_over_training(args, scaling, lengths)
    scorer = load_scorer(load=args.load, hf_model=args.hf_model, scaling=scaling,
                         tokenizer=tokenizer_override(args), label=args.label,
                         max_extrapolation=args.max_extrapolation,
                         train_length=args.train_length, iteration=args.iteration)
    progress = not args.no_progress
    out = Path(args.output_dir)
    common = dict(seed=args.seed, progress=progress)
    if args.samples is not None:
        common["samples"] = args.samples
    if args.command == "ppl-vs-length":
        from megatron_hope.eval.ppl_vs_length import run_ppl_vs_length

        result = run_ppl_vs_length(scorer, args.data, lengths, last_tokens=args.last_tokens,
                                   batch_size=args.batch_size, windows=args.windows, **common)
        return report.write_ppl(out, scorer.describe(), result)
    if args.command == "copy":
        from megatron_hope.eval.copy_task import run_copy

        result = run_copy(scorer, counts=counts, lengths=lengths, batch_size=args.batch_size,
                          separator=args.separator, **common)
        return report.write_copy(out, scorer.describe(), result)
    if args.command == "fewshot":
        from megatron_hope.eval.fewshot import run_fewshot

        result = run_fewshot(scorer, fewshot_tasks, lengths, shots=args.shots, **common)
        return report.write_fewshot(out, scorer.describe(), result)
    if args.command == "needle":
        from megatron_hope.eval.needle import run_needle

        result = run_needle(scorer, lengths, depths, batch_size=args.batch_size, **common)
        return report.write_needle(out, scorer.describe(), result)
    if args.command == "passkey":
        from megatron_hope.eval.passkey import run_passkey

        result = run_passkey(scorer, lengths, depths, batch_size=args.batch_size, **common)
        return report.write_passkey(out, scorer.describe(), result)
    from megatron_hope.eval.attention import run_attention

    result = run_attention(scorer, lengths, batch_size=args.batch_size, **common)
    return report.write_attention(out, scorer.describe(), result)


def _vaf_over_training(args: argparse.Namespace, scaling, lengths) -> list:
    from pathlib import Path

    from megatron_hope.eval import report
    from megatron_hope.eval.scorers import load_scorer
    from megatron_hope.eval.vaf_training import parse_iterations, run_vaf_over_training

    if args.load is None:
        raise ValueError("vaf-over-training reads the saved iterations of --load CHECKPOINT_DIR "
                         "(an HF model has one state only)")
    iterations = parse_iterations(args.iterations, args.load)
    scorers = {}

    def load_at(iteration: int):
        scorers[iteration] = load_scorer(
            load=args.load, scaling=scaling, tokenizer=tokenizer_override(args),
            label=args.label, max_extrapolation=args.max_extrapolation, iteration=iteration)
        return scorers[iteration]

    extra = {"samples": args.samples} if args.samples is not None else {}
    result = run_vaf_over_training(load_at, iterations, lengths[0] if lengths else None,
                                   seed=args.seed, batch_size=args.batch_size,
                                   progress=not args.no_progress, **extra)
    model = scorers[iterations[-1]].describe()
    return report.write_vaf_training(Path(args.output_dir), model, result)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from megatron_hope.megatron.cpu import cpu_execution

    try:
        with cpu_execution():  # CUDA where there is a GPU; the host, through the shim, elsewhere
            files = _run(args)
    except ValueError as err:
        print(f"hope-eval {args.command}: error: {err}", file=sys.stderr)
        return 2
    for path in files:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
