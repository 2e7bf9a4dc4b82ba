"""`hope-preprocess` and `hope-train-tokenizer`: RedPajama JSONL to Megatron `.bin/.idx`.

Train a tokenizer, then preprocess a RedPajama-1T tree (one output per subset) with 16 workers:

    hope-train-tokenizer --input /data/redpajama/arxiv --vocab-size 32000 --output tok/
    hope-preprocess --input /data/redpajama --output-prefix /data/rp/redpajama \\
        --tokenizer-type HuggingFaceTokenizer --tokenizer-model tok/tokenizer.json \\
        --append-eod --workers 16
    # -> /data/rp/redpajama_{arxiv,c4,...}_text_document.{bin,idx}, a _summary.json and
    #    /data/rp/redpajama_data_path.txt holding the --data-path blend for hope-pretrain

A rerun after a crash or preemption resumes (finished shards are skipped). CPU smoke run on the
stdlib sample corpus:

    python -c "from megatron_hope.data import write_sample_corpus as w; w('/tmp/c.jsonl', 10**6)"
    hope-train-tokenizer --input /tmp/c.jsonl --vocab-size 1024 --output /tmp/tok
    hope-preprocess --input /tmp/c.jsonl --output-prefix /tmp/out/sample \\
        --tokenizer-model /tmp/tok/tokenizer.json --append-eod --workers 2

Slurm: examples/slurm_preprocess/ (array tasks with --task-index/--num-tasks, then a merge).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

# megatron-core warns on import that the GPU fusions are missing; preprocessing never uses them.
warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")

from megatron_hope.data.preprocess.config import LOG_INTERVAL  # noqa: E402
from megatron_hope.data.tokenizer_args import TokenizerArgs, add_tokenizer_arguments  # noqa: E402
from megatron_hope.flag_checks import check_range  # noqa: E402


def preprocess_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hope-preprocess",
        description="JSONL / RedPajama to Megatron .bin/.idx (Megatron-LM's preprocess_data.py)",
    )
    group = parser.add_argument_group("input data")
    group.add_argument(
        "--input",
        required=True,
        nargs="+",
        help="JSONL file(s) (.jsonl, .jsonl.gz, .jsonl.zst, RedPajama-V2 .json.gz), "
        "directories (searched recursively) or globs",
    )
    group.add_argument(
        "--json-keys",
        nargs="+",
        default=["text"],
        help="keys to extract from each record (default: text; RedPajama-V2 "
        "files read text from raw_content)",
    )
    group.add_argument(
        "--split-sentences",
        action="store_true",
        help="split documents into sentences (nltk Punkt, trained offline)",
    )
    group.add_argument(
        "--keep-newlines",
        action="store_true",
        help="keep newlines between sentences when splitting",
    )
    group = add_tokenizer_arguments(parser)
    group.add_argument(
        "--append-eod",
        action="store_true",
        help="append the end-of-document token to every document",
    )
    group.add_argument(
        "--tokenizer-backend",
        default="auto",
        choices=("auto", "gigatoken", "reference"),
        help="auto: gigatoken when its ids equal the reference's on a sample",
    )
    group = parser.add_argument_group("output data")
    group.add_argument(
        "--output-prefix",
        required=True,
        help="outputs are {prefix}[_{subset}]_{key}_{document|sentence}.bin/.idx",
    )
    group.add_argument(
        "--blend-weights",
        default=None,
        help="redpajama (default: RedPajama-1T's published mixture), natural, or "
        "subset=weight,... for the --data-path blend written with subsets",
    )
    group = parser.add_argument_group("runtime")
    group.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes; they share large files too (byte ranges of a .jsonl, chunks of "
        "a .gz/.zst decompressed once)",
    )
    group.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="cut every plain .jsonl file into at least this many byte ranges, in place and in "
        "order (Megatron-LM writes partition files); the outputs do not depend on it",
    )
    group.add_argument(
        "--log-interval",
        type=int,
        default=LOG_INTERVAL,
        help=f"documents between progress lines when stderr is not a terminal "
        f"(default {LOG_INTERVAL})",
    )
    group.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first bad record (file:line) instead of skipping it",
    )
    group.add_argument(
        "--no-subsets",
        action="store_true",
        help="one output for all files, even in a RedPajama-1T tree",
    )
    group.add_argument(
        "--task-index",
        type=int,
        default=0,
        help="this array task's share of the work ($SLURM_ARRAY_TASK_ID)",
    )
    group.add_argument(
        "--num-tasks",
        type=int,
        default=1,
        help="array tasks sharing the files (largest first, to the least-loaded task); they "
        "write shards only. Give the array's size, not $SLURM_ARRAY_TASK_COUNT, which changes "
        "when some tasks are resubmitted",
    )
    group.add_argument(
        "--no-merge", action="store_true", help="write shards only; a later run without it merges"
    )
    group.add_argument(
        "--keep-shards", action="store_true", help="keep {prefix}_shards/ after merging"
    )
    group.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`hope-preprocess`: 0 on success, 2 on a bad flag or tokenizer, 1 on a bad input."""
    parser = preprocess_parser()
    args = parser.parse_args(argv)
    try:  # a bad tokenizer flag or file is a usage error, reported before any input is read
        TokenizerArgs.of(args).build()
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # add_index logs five lines per shard read; the summary says what matters.
    logging.getLogger("megatron.core.datasets").setLevel(logging.WARNING)
    from megatron_hope.data.blend import blend_string, parse_weights
    from megatron_hope.data.preprocess import PreprocessConfig, run_preprocess
    from megatron_hope.data.preprocess.config import UsageError

    try:  # flags that cannot work are usage errors too, found before any input is read
        weights = parse_weights(args.blend_weights)
        config = PreprocessConfig(
            input=args.input,
            output_prefix=args.output_prefix,
            **vars(TokenizerArgs.of(args)),
            json_keys=args.json_keys,
            split_sentences=args.split_sentences,
            keep_newlines=args.keep_newlines,
            append_eod=args.append_eod,
            workers=args.workers,
            partitions=args.partitions,
            log_interval=args.log_interval,
            strict=args.strict,
            subsets=not args.no_subsets,
            tokenizer_backend=args.tokenizer_backend,
            task_index=args.task_index,
            num_tasks=args.num_tasks,
            merge=False if args.no_merge else None,
            keep_shards=args.keep_shards,
            progress=not args.no_progress,
        )
    except ValueError as error:
        parser.error(str(error))
    try:
        summary = run_preprocess(config)
    except UsageError as error:  # --input naming nothing, --append-eod without an EOD token
        parser.error(str(error))
    except ValueError as error:  # bad inputs, or --strict's first bad record
        print(f"hope-preprocess: error: {error}", file=sys.stderr)
        return 1
    for line in summary.lines():
        print(line)
    if summary.merged:
        subsets = {output["subset"] for output in summary.outputs.values()}
        if subsets != {None}:
            try:
                data_path = blend_string(summary.outputs, weights)
            except ValueError as error:
                print(f"hope-preprocess: blend: {error}", file=sys.stderr)
                return 1
        else:
            data_path = " ".join(summary.outputs)
        path = Path(f"{args.output_prefix}_data_path.txt")
        path.write_text(data_path + "\n", encoding="utf-8")
        print(f"--data-path {data_path}")
        print(f"(written to {path})")
    return 0


def train_tokenizer_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hope-train-tokenizer",
        description="Train a byte-level BPE (HF tokenizers) on JSONL and write tokenizer.json",
    )
    parser.add_argument(
        "--input",
        required=True,
        nargs="+",
        help="JSONL files, directories or globs (as hope-preprocess reads)",
    )
    parser.add_argument(
        "--output", required=True, help="tokenizer.json path, or a directory to write it into"
    )
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--json-keys", nargs="+", default=["text"])
    parser.add_argument(
        "--max-documents",
        type=int,
        default=None,
        help="train on the first N documents only (sorted file order)",
    )
    return parser


MAX_TRAINED_VOCAB = 1 << 24
"""The largest `--vocab-size` hope-train-tokenizer takes: far above any real vocabulary (32k-256k);
a typo such as 10**12 would otherwise run until memory is gone."""


def _check_train_tokenizer_flags(parser: argparse.ArgumentParser, args) -> None:
    """Usage errors (exit 2) naming the flag, before any input is read."""
    from megatron_hope.data.tokenizer import minimum_vocab_size

    try:
        check_range("vocab_size", args.vocab_size, minimum_vocab_size(), MAX_TRAINED_VOCAB,
                    high_included=True)
        if args.max_documents is not None:
            check_range("max_documents", args.max_documents, 1)
    except ValueError as error:
        parser.error(str(error))
    output = Path(args.output)
    if output.suffix == ".json" and output.is_dir():
        parser.error(f"--output {output} is a directory; name the file (or the directory "
                     "without .json) to write tokenizer.json into")
    if output.suffix != ".json" and output.exists() and not output.is_dir():
        parser.error(f"--output {output} exists and is not a directory; give a directory or a "
                     "path ending in .json")


def train_tokenizer_main(argv: list[str] | None = None) -> int:
    """`hope-train-tokenizer`: the output works with --tokenizer-type HuggingFaceTokenizer."""
    parser = train_tokenizer_parser()
    args = parser.parse_args(argv)
    _check_train_tokenizer_flags(parser, args)
    from itertools import islice

    from megatron_hope.data import inputs, readers
    from megatron_hope.data.tokenizer import train_bpe_tokenizer_from_texts

    try:
        files = inputs.discover_inputs(args.input)
    except ValueError as error:
        parser.error(str(error))  # it names --input and the path
    try:

        def texts():
            for path in files:
                for item in readers.iter_records(path, args.json_keys):
                    if isinstance(item, readers.Document):
                        yield from item.texts

        documents = texts() if args.max_documents is None else islice(texts(), args.max_documents)
        output = Path(args.output)
        if output.suffix != ".json":  # a directory, created if missing
            output.mkdir(parents=True, exist_ok=True)
        path = train_bpe_tokenizer_from_texts(documents, output, vocab_size=args.vocab_size)
    except ValueError as error:
        print(f"hope-train-tokenizer: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}: use --tokenizer-type HuggingFaceTokenizer --tokenizer-model {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
