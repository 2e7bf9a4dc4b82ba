"""Nothing we read can run code: no pickle on inputs, `torch.load` only with weights_only=True,
exports in safetensors only.

    python -m pytest -x -q tests/robustness/test_unsafe_loading.py

The source scan (`ast`, every module of `megatron_hope/`) keeps it so as the code grows. The
run-time audit records every `torch.load` made while our checkpoints are read back (a resume of
`hope-pretrain`, the model load of `hope-eval`/`hope-convert`) and checks where the unsafe ones
come from. There is one, outside this package: torch's DCP `DefaultLoadPlanner.load_bytes`
unpickles the checkpoint's non-tensor objects (the RNG states; under megatron-core 0.19 every
non-tensor value) with `weights_only=False`, and megatron-core's `MCoreLoadPlanner` inherits it
unchanged. A checkpoint is therefore code: load only checkpoints you trust (an HF import reads
safetensors and JSON only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.distributed import run_on_ranks

PACKAGE = Path(__file__).resolve().parents[2] / "megatron_hope"
PICKLING_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve",
                    "marshal"}
"""Modules that turn bytes into arbitrary objects: none may be imported by the package."""
EXPORT_PACKAGE = "convert"
"""Where exports are written: safetensors and JSON only, never `torch.save`."""
KNOWN_UNSAFE_LOADERS = {"torch/distributed/checkpoint/default_planner.py:load_bytes"}
"""`torch.load(weights_only=False)` that our checkpoint reads reach, none of them ours (see the
module docstring); a new one fails the test."""


class _TorchCalls(ast.NodeVisitor):
    """Calls of `torch.<name>` in one module, however torch or the function was imported."""

    def __init__(self) -> None:
        self.torch_names = {"torch"}
        self.direct: dict[str, str] = {}  # local name -> torch function (from torch import load)
        self.calls: list[tuple[str, ast.Call]] = []
        self.imports: list[tuple[str, int]] = []

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.imports.append((alias.name.split(".")[0], node.lineno))
            if alias.name == "torch":
                self.torch_names.add(alias.asname or "torch")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        self.imports.append((module.split(".")[0], node.lineno))
        if module in ("torch", "torch.serialization"):
            for alias in node.names:
                self.direct[alias.asname or alias.name] = alias.name

    def visit_Call(self, node: ast.Call) -> None:
        function = node.func
        if (isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name)
                and function.value.id in self.torch_names):
            self.calls.append((function.attr, node))
        elif isinstance(function, ast.Name) and function.id in self.direct:
            self.calls.append((self.direct[function.id], node))
        self.generic_visit(node)


def _scan(path: Path) -> _TorchCalls:
    visitor = _TorchCalls()
    visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return visitor


def _weights_only_true(call: ast.Call) -> bool:
    return any(keyword.arg == "weights_only" and isinstance(keyword.value, ast.Constant)
               and keyword.value.value is True for keyword in call.keywords)


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_scan_sees_the_package():
    assert len(MODULES) > 50
    # The visitor finds what it looks for (a scan that matches nothing would pass anything).
    probe = ast.parse("import torch as t\nfrom torch import load as l\nimport pickle\n"
                      "t.load(f)\nl(f, weights_only=False)\nt.save(x, f)\n")
    visitor = _TorchCalls()
    visitor.visit(probe)
    assert [(name, _weights_only_true(call)) for name, call in visitor.calls] == [
        ("load", False), ("load", False), ("save", False)]
    assert ("pickle", 3) in visitor.imports


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_module_unpickles(path):
    visitor = _scan(path)
    where = path.relative_to(PACKAGE.parent)
    pickling = [f"{where}:{line}: imports {name}" for name, line in visitor.imports
                if name in PICKLING_MODULES]
    assert not pickling, pickling
    unsafe = [f"{where}:{call.lineno}: torch.load without weights_only=True"
              for name, call in visitor.calls if name == "load" and not _weights_only_true(call)]
    assert not unsafe, unsafe
    if path.relative_to(PACKAGE).parts[0] == EXPORT_PACKAGE:
        saves = [f"{where}:{call.lineno}: torch.save in the exporter (write safetensors)"
                 for name, call in visitor.calls if name == "save"]
        assert not saves, saves


def _audit(rank, trained: dict, pretrain_argv: list[str], export_dir: str) -> dict:
    """Every torch.load while hope-pretrain resumes and hope-convert exports the checkpoint:
    `{caller: [weights_only, ...]}`, the caller as `path:function` of the first frame outside
    torch.serialization (site-packages-relative), weights_only as given ("default" if not)."""
    import traceback
    from unittest import mock

    import torch

    from megatron_hope.convert.cli import main as convert
    from megatron_hope.training.cli import main as pretrain

    calls: dict[str, list] = {}
    real_load = torch.load

    def recording_load(*args, **kwargs):
        frame = next(frame for frame in reversed(traceback.extract_stack()[:-1])
                     if not frame.filename.endswith("torch/serialization.py"))
        caller = f"{frame.filename.split('site-packages/')[-1]}:{frame.name}"
        calls.setdefault(caller, []).append(kwargs.get("weights_only", "default"))
        return real_load(*args, **kwargs)

    with mock.patch.object(torch, "load", recording_load):
        resumed = pretrain(pretrain_argv)
        exported = convert(["--load-dir", trained["load"], "--save-dir", export_dir,
                            "--no-verify", "--no-progress"])
    return {"status": (resumed, exported), "calls": calls}


def test_checkpoint_reads_and_exports_at_run_time(trained, tmp_path):
    from tests.robustness.test_corrupt_checkpoints import _pretrain_argv

    argv = _pretrain_argv(trained, trained["load"])
    argv[argv.index("--train-iters") + 1] = "2"  # the checkpoint's iteration: load, then stop
    export = tmp_path / "hf"
    [audit] = run_on_ranks(1, _audit, trained, argv, str(export))
    assert audit["status"] == (0, 0)
    calls = audit["calls"]
    ours = [caller for caller in calls if "megatron_hope" in caller]
    assert not ours, f"torch.load called by megatron_hope: {ours}"
    unsafe = {caller for caller, flags in calls.items() if False in flags}
    assert unsafe <= KNOWN_UNSAFE_LOADERS, f"new weights_only=False loads: {calls}"
    # The export holds safetensors and text, nothing a loader would unpickle.
    files = sorted(path.name for path in export.iterdir())
    assert any(name.endswith(".safetensors") for name in files), files
    for path in export.iterdir():
        head = path.read_bytes()[:4]
        assert path.suffix in (".safetensors", ".json", ".md", ".txt", ".model"), path.name
        assert head[:2] != b"PK" and head[:1] != b"\x80", f"{path.name} looks like a pickle"
