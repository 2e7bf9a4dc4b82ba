"""The example scripts as a cluster user meets them.

    python -m pytest -q tests/test_examples.py

Every script parses (`bash -n`); the pretraining scripts print their command under `DRY_RUN=1`,
and that command is checked against `hope-pretrain`'s own parser (every flag exists under its
exact name), the batch arithmetic of the script's GPU count, and the memory table of
examples/README.md (recomputed here with `training.memory.estimate_for`). The preprocessing
scripts' flags are read from their text and checked against `hope-preprocess`'s parser. Last, the
125M Slurm script itself, shrunk through the variables it reads, is submitted twice with
`sbatch --wait` to a throw-away one-node Slurm (tests/slurm/cluster.py; skipped, saying why,
where Slurm is absent): it trains, saves and prunes; the second job finds the run finished.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_hope.data.cli import preprocess_parser
from megatron_hope.megatron.model import padded_vocab_size
from megatron_hope.training.arguments import build_parser, parse_config
from megatron_hope.training.memory import MemoryEstimate, estimate_for
from tests.distributed import free_port

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SCRIPTS = sorted(path for path in EXAMPLES.rglob("*") if path.suffix in (".sh", ".sbatch"))
PRETRAIN_SCRIPTS = [EXAMPLES / name for name in (
    "125m/pretrain_torchrun.sh", "125m/pretrain_slurm.sbatch",
    "3b/pretrain_torchrun.sh", "3b/pretrain_slurm.sbatch")]
PREPROCESS_SCRIPTS = sorted((EXAMPLES / "slurm_preprocess").glob("*.sbatch"))
LLAMA_VOCAB = 32000
GPU_BYTES = 80 * 1000**3
"""An "80 GB" GPU (A100/H100 80GB): decimal gigabytes."""
# The environment variables that switch the scripts' branches.
VARIANTS = {
    "defaults": {},
    "local-spec": {"TRANSFORMER_IMPL": "local"},
    "rope-twin": {"POSITION_EMBEDDING_TYPE": "rope"},
    "tp2": {"TENSOR_PARALLEL": "2"},
    "exit-interval-container": {"EXIT_INTERVAL": "5", "CONTAINER_IMAGE": "/images/hope.sqsh"},
}


def _name(path: Path) -> str:
    return str(path.relative_to(EXAMPLES))


@pytest.mark.parametrize("script", SCRIPTS, ids=_name)
def test_every_script_parses(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def dry_run(script: Path, tmp_path: Path, **variables: str) -> list[str]:
    """The launch command a script prints under DRY_RUN=1, as words."""
    blend = tmp_path / "rp_data_path.txt"
    blend.write_text("0.6 /data/rp/rp_arxiv_text_document 0.4 /data/rp/rp_c4_text_document\n")
    env = {"PATH": os.environ["PATH"], "DRY_RUN": "1", "SLURM_CPUS_PER_TASK": "8",
           "DATA_BLEND_FILE": str(blend), "TOKENIZER_MODEL": "/data/llama-tokenizer", **variables}
    done = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return shlex.split(done.stdout)


def pretrain_args(words: list[str]) -> list[str]:
    return words[words.index("hope-pretrain") + 1:]


def flags_missing_from(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """`--flags` among `words` that the parser does not define under that exact name (argparse
    would accept an abbreviation; a script should not rely on one)."""
    return [word for word in words if word.startswith("--")
            and word.split("=")[0] not in parser._option_string_actions]


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("script", PRETRAIN_SCRIPTS, ids=_name)
def test_pretrain_flags_exist_in_hope_pretrain(script, variant, tmp_path):
    args = pretrain_args(dry_run(script, tmp_path, **VARIANTS[variant]))
    parser = build_parser()
    assert flags_missing_from(parser, args) == []
    namespace = parser.parse_args(args)
    assert namespace.data_path == ["0.6", "/data/rp/rp_arxiv_text_document", "0.4",
                                   "/data/rp/rp_c4_text_document"]
    assert namespace.load == namespace.save  # the chain resumes its own series
    assert namespace.data_cache_path and namespace.keep_last_checkpoints


@pytest.mark.parametrize("script", PREPROCESS_SCRIPTS, ids=_name)
def test_preprocess_flags_exist_in_hope_preprocess(script):
    text = script.read_text()
    command = re.search(r"^srun .*hope-preprocess((?:.*\\\n)*.*)", text, re.MULTILINE)
    assert command, f"{script} does not run hope-preprocess"
    flags = re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", command.group(1))
    assert "--input" in flags and "--output-prefix" in flags
    assert flags_missing_from(preprocess_parser(), flags) == []


def test_the_array_passes_its_size_explicitly():
    """A resubmission of some tasks changes SLURM_ARRAY_TASK_COUNT, and with it every share."""
    array = (EXAMPLES / "slurm_preprocess" / "preprocess_array.sbatch").read_text()
    assert '--num-tasks "$NUM_TASKS"' in array
    assert "--num-tasks \"$SLURM_ARRAY_TASK_COUNT\"" not in array
    assert "NUM_TASKS=" in (EXAMPLES / "slurm_preprocess" / "submit.sh").read_text()


def world_size(script: Path, words: list[str], nodes: int | None = None) -> int:
    """GPUs of the launch: torchrun's --nproc-per-node, or the sbatch header's nodes x tasks."""
    if words[0] == "torchrun":
        return int(words[words.index("--nproc-per-node") + 1])
    header = dict(re.findall(r"^#SBATCH --([a-z-]+)=(\S+)", script.read_text(), re.MULTILINE))
    return (nodes or int(header["nodes"])) * int(header["ntasks-per-node"])


@pytest.mark.parametrize("script, nodes, accumulation", [
    (EXAMPLES / "125m/pretrain_torchrun.sh", None, 1),   # 64 x DP 8
    (EXAMPLES / "125m/pretrain_slurm.sbatch", None, 1),
    (EXAMPLES / "3b/pretrain_torchrun.sh", None, 64),    # 2 x DP 4 x 64 = 512
    (EXAMPLES / "3b/pretrain_slurm.sbatch", None, 2),    # 2 x DP 128 x 2
    (EXAMPLES / "3b/pretrain_slurm.sbatch", 16, 4),      # the header's `--nodes=16` remark
], ids=["125m-torchrun", "125m-slurm", "3b-torchrun", "3b-slurm", "3b-slurm-16-nodes"])
def test_batch_arithmetic(script, nodes, accumulation, tmp_path):
    words = dry_run(script, tmp_path)
    args = build_parser().parse_args(pretrain_args(words))
    world = world_size(script, words, nodes)
    model_parallel = args.tensor_model_parallel_size * args.pipeline_model_parallel_size
    assert world % model_parallel == 0
    per_step = args.micro_batch_size * world // model_parallel
    assert args.global_batch_size % per_step == 0
    assert args.global_batch_size // per_step == accumulation
    assert args.global_batch_size == 512  # the paper's, whatever the GPU count


# -- memory ----------------------------------------------------------------------------------

TE_ONLY = {"--sequence-parallel": 0, "--apply-rope-fusion": 0, "--attention-backend": 1}
"""Flags that need Transformer Engine (absent here), with their value counts."""


def memory_estimate(args: list[str], world: int) -> MemoryEstimate:
    """Megatron-LM's estimate for a script's flags (megatron-core 0.19's formula: the GPU image's
    Python 3.12 resolves 0.19.x). Config validation cannot take the TE flags on a machine without
    TE: they are dropped and sequence parallelism goes in as the override `estimate_for` takes."""
    kept, skip = [], 0
    for position, word in enumerate(args):
        if skip:
            skip -= 1
        elif word in TE_ONLY:
            skip = TE_ONLY[word]
        elif word == "--data-path":  # its files do not exist here: the shape is what counts
            skip = next(i for i, w in enumerate(args[position + 1:]) if w.startswith("--"))
            kept.append("--mock-data")
        elif word == "transformer_engine":
            kept.append("local")
        else:
            kept.append(word)
    config = parse_config(kept)
    vocab = padded_vocab_size(LLAMA_VOCAB, config.tensor_model_parallel_size)
    return estimate_for(config, world, vocab, sequence_parallel="--sequence-parallel" in args,
                        formula="v0.19")


MEMORY_ROWS = {
    # examples/README.md row: (script, GPUs)
    "125M, one node": (EXAMPLES / "125m/pretrain_torchrun.sh", 8),
    "3B, one node": (EXAMPLES / "3b/pretrain_torchrun.sh", 8),
    "3B, Slurm": (EXAMPLES / "3b/pretrain_slurm.sbatch", 256),
}


def _mb(value: float) -> str:
    return f"{round(value):,} MB"


@pytest.mark.parametrize("row", list(MEMORY_ROWS))
def test_the_readme_prints_each_scripts_memory_estimate(row, tmp_path):
    script, world = MEMORY_ROWS[row]
    estimate = memory_estimate(pretrain_args(dry_run(script, tmp_path)), world)
    print(f"{row}: {estimate.line()}")
    readme_line = next(line for line in (EXAMPLES / "README.md").read_text().splitlines()
                       if line.startswith(f"| {row} |"))
    expected = [_mb(estimate.weight_and_optimizer_mb), _mb(estimate.activation_mb),
                f"{_mb(estimate.total_mb)} ({estimate.total_gib:.1f} GiB)"]
    assert [cell.strip() for cell in readme_line.split("|")[-4:-1]] == expected, readme_line
    assert estimate.total_mb * 1024**2 < GPU_BYTES, estimate.line()


def test_the_readme_gives_no_pipeline_remedy_for_activations():
    """Under 1F1B the first stage holds PP micro-batches of L/PP layers: as many activations as
    without pipelining. The remedies are recompute, sequence parallelism, a smaller micro-batch."""
    texts = [(EXAMPLES / "README.md").read_text(), *(p.read_text() for p in PRETRAIN_SCRIPTS)]
    for text in texts:
        assert not re.search(r"halve[sd]? (the )?activation", text, re.IGNORECASE)


# -- the 125M Slurm script on a real one-node Slurm --------------------------------------------

CPU_SIZES = {
    "TRANSFORMER_IMPL": "local", "NUM_LAYERS": "2", "HIDDEN_SIZE": "64", "FFN_HIDDEN_SIZE": "128",
    "NUM_ATTENTION_HEADS": "4", "SEQ_LENGTH": "64", "MICRO_BATCH_SIZE": "2",
    "GLOBAL_BATCH_SIZE": "8", "TRAIN_ITERS": "4", "SAVE_INTERVAL": "2",
    "KEEP_LAST_CHECKPOINTS": "1",
}
"""2 CPU tasks (DP 2, 2 accumulation steps); everything else as the script has it (bf16, the
distributed optimizer with both overlaps, selective recompute, the data cache, the timeout)."""
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")



def _files(directory: Path) -> dict[str, int]:
    return {str(path.relative_to(directory)): path.stat().st_mtime_ns
            for path in sorted(directory.rglob("*"))}


def test_the_125m_slurm_script_runs_on_a_one_node_slurm(tmp_path):
    from tests.slurm.cluster import slurm_cluster
    from tests.synthetic_corpus import prepare_golden_data

    with slurm_cluster() as cluster:
        (tmp_path / "data").mkdir()
        data = prepare_golden_data(tmp_path / "data", num_documents=400)
        blend = tmp_path / "data" / "rp_data_path.txt"
        blend.write_text(f"1.0 {data['prefix']}\n")
        env = {k: v for k, v in cluster.env.items() if k not in LAUNCHER_VARIABLES}
        env.update(CPU_SIZES, DATA_BLEND_FILE=str(blend), TOKENIZER_MODEL=data["tokenizer"],
                   RUN_DIR="run",  # relative: the script makes it absolute
                   PATH=os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]]),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
                   MASTER_PORT=str(free_port()), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
        try:
            socket.gethostbyname(cluster.node)
        except OSError:
            env["MASTER_ADDR"] = "127.0.0.1"

        def submit(name: str) -> str:
            output = tmp_path / f"{name}.out"
            done = subprocess.run(
                ["sbatch", "--wait", "--parsable", f"--chdir={tmp_path}", f"--output={output}",
                 "--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-node=0", "--time=10",
                 str(EXAMPLES / "125m" / "pretrain_slurm.sbatch")],
                env=env, capture_output=True, text=True, timeout=300)
            log = output.read_text(errors="replace") if output.exists() else ""
            assert done.returncode == 0, f"{done.stderr}\n--- job\n{log[-6000:]}\n{cluster.logs()}"
            return log

        first = submit("first")
        run_dir = tmp_path / "run"
        assert f"run dir {run_dir}" in first
        assert re.search(r"iteration +4/ +4 \|", first), first[-3000:]
        checkpoints = run_dir / "checkpoints"
        assert sorted(p.name for p in checkpoints.iterdir()) == [
            "iter_0000004", "latest_checkpointed_iteration.txt"]  # iter 2 pruned (keep 1)
        assert list((run_dir / "data_cache").rglob("*.npy")), "no index cache in the run dir"

        before = _files(checkpoints)
        again = submit("again")  # what `--dependency=afterany` starts after the last job
        assert (f"hope-pretrain: run already finished: {checkpoints} holds iteration 4 "
                "(--train-iters 4); nothing to do") in again, again[-3000:]
        assert "iteration " not in again.replace("holds iteration", "")
        assert _files(checkpoints) == before
