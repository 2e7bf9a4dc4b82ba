"""hope-preprocess against Megatron-LM's own tools/preprocess_data.py, on one big .jsonl file.

    PYTHONPATH=. python benchmarks/bench_preprocess.py                 # 1 GB file, ~5 minutes
    PYTHONPATH=. python benchmarks/bench_preprocess.py --size-mb 200   # quicker

Generates one RedPajama-like `.jsonl` file (real English text: paragraphs of this machine's
Python standard library docstrings, reshuffled with a fixed seed) of `--size-mb` MB and one of a
quarter of that, trains a 32k byte-level BPE (an HF tokenizer directory both tools read), then
times each run as a fresh subprocess, wall clock from launch to exit:

- hope-preprocess, 2 workers, on both sizes: throughput at scale is the slope between the two
  (start-up subtracted), start-up is the intercept; peak RSS of the parent and of the largest
  worker at both sizes (flat as the input grows);
- hope-preprocess, 1 worker, on the big file (with its tokenizer on 1 thread, and with its
  default threads): the speedup of 2 workers inside one file;
- a tiny input (one document): end-to-end start-up as a user sees it;
- Megatron-LM's `tools/preprocess_data.py --workers 2` (the archive in ../shared/megatron-lm/,
  unpacked into the work directory) on `--megatron-mb` and a quarter of it: its rate at scale
  and start-up the same way, and its `.bin/.idx` compared byte for byte with ours on one input.

Figures, not assertions; the machine is noisy, so `--repeat N` interleaves N rounds and keeps
each run's best time. Needs `six`, `nltk`, `triton`, `transformers` for Megatron-LM's tool.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MEGATRON_ARCHIVES = {"0.16": "megatron-lm-core_v0.16.1.tar.gz",
                     "0.19": "megatron-lm-core_v0.19.0.tar.gz"}


def megatron_archive() -> str:
    """The Megatron-LM archive whose tools run on the installed megatron-core (a tag's
    preprocess_data.py imports that release's megatron-core modules)."""
    from importlib.metadata import version

    series = ".".join(version("megatron-core").split(".")[:2])
    if series not in MEGATRON_ARCHIVES:
        raise SystemExit(f"megatron-core {series}: no Megatron-LM archive pairs with it "
                         f"({', '.join(MEGATRON_ARCHIVES)})")
    return MEGATRON_ARCHIVES[series]


def generate_file(path: Path, size_mb: float, paragraphs: list[str], seed: int = 0) -> int:
    """One RedPajama-1T-like JSONL file of about `size_mb` MB; returns its documents."""
    rng = random.Random(seed)
    target = int(size_mb * 1e6)
    written = documents = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as output:
        while written < target:
            # Documents of 2-30 paragraphs (~0.5-8 kB), like web pages.
            text = "\n\n".join(rng.choice(paragraphs) for _ in range(rng.randint(2, 30)))
            line = json.dumps({"text": text, "meta": {"id": documents}}, ensure_ascii=False)
            output.write(line + "\n")
            written += len(line.encode("utf-8")) + 1
            documents += 1
    return documents


def english_paragraphs() -> list[str]:
    """Paragraphs of English prose from the stdlib's docstrings (~5 MB on Python 3.11).

    Prose, not code: code's long whitespace runs make byte-level BPE much slower per byte than
    the web text RedPajama is made of, which would flatter nothing and mislead everything.
    """
    import ast

    from megatron_hope.data.sample_corpus import stdlib_source_paths

    paragraphs = []
    for path in stdlib_source_paths():
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                docstring = ast.get_docstring(node)
                if docstring:
                    paragraphs.extend(p for p in docstring.split("\n\n") if len(p) > 40)
    return paragraphs


def _peak_rss_mb() -> dict:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(own, 1), "peak_child_rss_mb": round(children, 1)}


def run_ours(args) -> dict:
    """In a fresh process: the library call `hope-preprocess` makes, plus peak RSS."""
    from megatron_hope.data.preprocess import PreprocessConfig, run_preprocess

    summary = run_preprocess(
        PreprocessConfig(
            input=args.input,
            output_prefix=args.output,
            tokenizer_model=args.tokenizer,
            append_eod=True,
            workers=args.workers,
            progress=False,
            subsets=False,
        )
    )
    return {"tokens": summary.tokens, "backend": summary.backend, **_peak_rss_mb()}


def timed(command: list[str], environment: dict) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed:\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def ours(tokenizer: Path, source: Path, output: Path, workers: int, threads: int = 0) -> dict:
    """`threads`: tokenizer threads per process (0: the default; with 1 worker gigatoken then
    uses every core by itself)."""
    command = [
        sys.executable,
        __file__,
        "--run",
        "ours",
        "--input",
        str(source),
        "--output",
        str(output),
        "--tokenizer",
        str(tokenizer),
        "--workers",
        str(workers),
    ]
    environment = dict(os.environ, PYTHONPATH=str(REPO))
    if threads:
        environment["RAYON_NUM_THREADS"] = str(threads)
    seconds, stdout = timed(command, environment)
    return {"seconds": seconds, **json.loads(stdout.strip().splitlines()[-1])}


def megatron(folder: Path, tokenizer: Path, source: Path, output: Path, workers: int) -> dict:
    command = [
        sys.executable,
        str(folder / "tools" / "preprocess_data.py"),
        "--input",
        str(source),
        "--output-prefix",
        str(output),
        "--tokenizer-type",
        "HuggingFaceTokenizer",
        "--tokenizer-model",
        str(tokenizer.parent),
        "--append-eod",
        "--workers",
        str(workers),
        "--log-interval",
        "1000000",
    ]
    environment = dict(os.environ, PYTHONPATH=str(folder), TOKENIZERS_PARALLELISM="false")
    seconds, _ = timed(command, environment)
    idx = Path(f"{output}_text_document.idx").read_bytes()
    lengths = int.from_bytes(idx[18:26], "little")
    import numpy

    tokens = int(numpy.frombuffer(idx, numpy.int32, lengths, 34).sum())
    return {"seconds": seconds, "tokens": tokens}


def fit(small: dict, big: dict) -> tuple[float, float]:
    """(tokens/s at scale, start-up seconds) from runs on two input sizes."""
    rate = (big["tokens"] - small["tokens"]) / max(big["seconds"] - small["seconds"], 1e-9)
    return rate, small["seconds"] - small["tokens"] / rate


def prepare(args, work: Path) -> dict:
    """Inputs, tokenizer directory and Megatron-LM's tree in `work` (reused when present)."""
    cache = work / "paragraphs.json"
    if not cache.exists():
        cache.write_text(json.dumps(english_paragraphs()))
    paragraphs = json.loads(cache.read_text())
    files = {}
    sizes = {
        "big": args.size_mb,
        "small": args.size_mb / 4,
        "mlm_big": args.megatron_mb,
        "mlm_small": args.megatron_mb / 4,
        "tiny": 0.0001,
    }
    for name, size in sizes.items():
        path = work / f"{name}-{size:g}MB.jsonl"
        if not path.exists():
            generate_file(path, size, paragraphs, seed=len(name))
        files[name] = path
    tokenizer = work / f"tokenizer-{args.vocab_size}" / "tokenizer.json"
    if not tokenizer.exists():
        from megatron_hope.data.sample_corpus import iter_jsonl_texts
        from megatron_hope.data.tokenizer import train_bpe_tokenizer_from_texts

        tokenizer.parent.mkdir(parents=True, exist_ok=True)
        train_bpe_tokenizer_from_texts(
            iter_jsonl_texts([files["mlm_small"]]), tokenizer, vocab_size=args.vocab_size
        )
        # What transformers' AutoTokenizer (Megatron-LM's HuggingFaceTokenizer) needs beside it.
        (tokenizer.parent / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "eos_token": "<|endoftext|>",
                    "bos_token": None,
                    "add_bos_token": False,
                }
            )
        )
    folder = work / megatron_archive().removesuffix(".tar.gz")
    archive = Path(args.megatron_archives) / megatron_archive()
    if not folder.exists() and archive.exists():
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
    return {"files": files, "tokenizer": tokenizer, "megatron": folder if folder.exists() else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=1000.0, help="the big single file")
    parser.add_argument("--megatron-mb", type=float, default=60.0, help="Megatron-LM's big input")
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds; best kept")
    parser.add_argument("--work-dir", default="/tmp/hope-bench-preprocess")
    parser.add_argument("--megatron-archives", default=str(REPO.parent / "shared" / "megatron-lm"))
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--input", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        print(json.dumps(run_ours(args)))
        return 0

    work = Path(args.work_dir)
    (work / "out").mkdir(parents=True, exist_ok=True)
    setup = prepare(args, work)
    files, tokenizer, folder = setup["files"], setup["tokenizer"], setup["megatron"]
    out = work / "out"
    plan = {
        "ours 2w big": lambda: ours(tokenizer, files["big"], out / "big2", 2),
        "ours 2w small": lambda: ours(tokenizer, files["small"], out / "small2", 2),
        "ours 1w big": lambda: ours(tokenizer, files["big"], out / "big1", 1),
        "ours 1w 1 thread big": lambda: ours(tokenizer, files["big"], out / "big1t", 1, 1),
        "ours 2w tiny": lambda: ours(tokenizer, files["tiny"], out / "tiny2", 2),
        "ours 2w mlm_big": lambda: ours(tokenizer, files["mlm_big"], out / "mlm_big2", 2),
    }
    if folder is not None:
        plan["megatron 2w mlm_big"] = lambda: megatron(
            folder, tokenizer, files["mlm_big"], out / "megatron_big", 2
        )
        plan["megatron 2w mlm_small"] = lambda: megatron(
            folder, tokenizer, files["mlm_small"], out / "megatron_small", 2
        )
    best: dict[str, dict] = {}
    for _ in range(args.repeat):
        for name, call in plan.items():
            for path in out.glob("*"):
                path.unlink()  # no run reuses an earlier one's shards or outputs
            row = call()
            if name == "ours 2w mlm_big" and folder is not None:
                plan_bytes = {
                    e: (out / f"mlm_big2_text_document{e}").read_bytes() for e in (".bin", ".idx")
                }
                best["_ours_mlm_bytes"] = plan_bytes
            if name == "megatron 2w mlm_big":
                best["_identical"] = all(
                    (out / f"megatron_big_text_document{e}").read_bytes()
                    == best["_ours_mlm_bytes"][e]
                    for e in (".bin", ".idx")
                )
            print(
                f"{name:24s} {row['seconds']:7.2f} s  {row['tokens'] / 1e6:8.2f}M tokens  "
                + "  ".join(f"{k} {v}" for k, v in row.items() if k.startswith("peak")),
                flush=True,
            )
            if name not in best or row["seconds"] < best[name]["seconds"]:
                best[name] = row
    report(args, files, best, folder is not None)
    return 0


def report(args, files, best: dict, with_megatron: bool) -> None:
    size = {name: path.stat().st_size / 1e6 for name, path in files.items()}
    rate, startup = fit(best["ours 2w small"], best["ours 2w big"])
    big1, big2 = best["ours 1w big"], best["ours 2w big"]
    print(
        f"\none file of {size['big']:,.0f} MB ({size['small']:,.0f} MB for the fit), "
        f"backend {big2['backend']}"
    )
    print(
        f"hope-preprocess 2 workers: {rate / 1e6:.2f}M tokens/s at scale, start-up "
        f"{startup:.2f} s (fit), end to end {big2['seconds']:.1f} s; tiny input "
        f"{best['ours 2w tiny']['seconds']:.2f} s"
    )
    big1t = best["ours 1w 1 thread big"]
    print(
        f"on one {size['big']:,.0f} MB file, 2 workers vs 1 worker with 1 tokenizer thread: "
        f"{big1t['seconds'] / big2['seconds']:.2f}x end to end, "
        f"{(big1t['seconds'] - startup) / (big2['seconds'] - startup):.2f}x at scale "
        f"(goal >= 1.8x); vs 1 worker whose gigatoken uses both cores itself: "
        f"{big1['seconds'] / big2['seconds']:.2f}x"
    )
    for name in ("ours 2w small", "ours 2w big"):
        row = best[name]
        print(
            f"peak RSS {name}: parent {row['peak_rss_mb']:.0f} MB, largest worker "
            f"{row['peak_child_rss_mb']:.0f} MB"
        )
    if not with_megatron:
        print(f"Megatron-LM not run: {args.megatron_archives}/{megatron_archive()} not found")
        return
    mlm_rate, mlm_startup = fit(best["megatron 2w mlm_small"], best["megatron 2w mlm_big"])
    ours_mlm = best["ours 2w mlm_big"]
    print(
        f"Megatron-LM preprocess_data.py 2 workers ({size['mlm_small']:.0f}/"
        f"{size['mlm_big']:.0f} MB): {mlm_rate / 1e6:.2f}M tokens/s at scale, start-up "
        f"{mlm_startup:.2f} s, end to end {best['megatron 2w mlm_big']['seconds']:.1f} s "
        f"(ours on the same input: {ours_mlm['seconds']:.1f} s)"
    )
    print(f"ours / Megatron-LM at scale: {rate / mlm_rate:.1f}x (goal >= 25x)")
    print(f"outputs byte-identical to Megatron-LM's: {best.get('_identical')}")


if __name__ == "__main__":
    sys.exit(main())
