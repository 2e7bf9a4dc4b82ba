"""llama.cpp for the round-trip test: the sdist's converter (pure Python) and the built library.

Where it comes from (once per machine, ~/.cache/megatron-hope/llama-cpp; HOPE_LLAMA_CPP_DIR
overrides the unpacked sdist's location):

    mkdir -p ~/.cache/megatron-hope/llama-cpp && cd ~/.cache/megatron-hope/llama-cpp
    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d . && tar xzf *.tar.gz
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \\
      -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF" \\
      pip wheel --no-deps -w wheels ./llama_cpp_python-0.3.36.tar.gz
    pip install wheels/llama_cpp_python-*.whl     # py3-none: one wheel for every Python
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CACHE = Path.home() / ".cache" / "megatron-hope" / "llama-cpp"


def vendored_llama_cpp() -> Path | None:
    """The unpacked sdist's `vendor/llama.cpp` (with convert_hf_to_gguf.py), or None."""
    override = os.environ.get("HOPE_LLAMA_CPP_DIR")
    roots = [Path(override)] if override else sorted(CACHE.glob("llama_cpp_python-*"))
    for root in reversed(roots):
        for candidate in (root / "vendor" / "llama.cpp", root):
            if (candidate / "convert_hf_to_gguf.py").is_file():
                return candidate
    return None


def convert_to_gguf(llama_cpp: Path, hf_dir: Path, outfile: Path) -> str:
    """llama.cpp's own converter, f32, in a subprocess; returns its log (raises on failure)."""
    done = subprocess.run(
        [sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(hf_dir),
         "--outtype", "f32", "--outfile", str(outfile)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "PYTHONPATH": str(llama_cpp / "gguf-py")})
    if done.returncode != 0:
        raise AssertionError(f"convert_hf_to_gguf.py failed:\n{done.stderr[-4000:]}")
    return done.stderr


_READ_FIELDS = """
import json, sys
import gguf
reader = gguf.GGUFReader(sys.argv[1])
out = {}
for name, field in reader.fields.items():
    if name.startswith("tokenizer.ggml.") and name.endswith(("tokens", "scores", "token_type",
                                                              "merges")):
        out[name] = len(field.data)
        continue
    value = field.contents()
    out[name] = value if isinstance(value, (int, float, str, bool, list)) else str(value)
print(json.dumps(out))
"""


def gguf_fields(llama_cpp: Path, path: Path) -> dict:
    """The GGUF key/values (vocabulary arrays as their lengths), read with the vendored gguf-py."""
    done = subprocess.run([sys.executable, "-c", _READ_FIELDS, str(path)], capture_output=True,
                          text=True, timeout=120, check=True,
                          env={**os.environ, "PYTHONPATH": str(llama_cpp / "gguf-py")})
    return json.loads(done.stdout)


def use_built_library() -> None:
    """Put the library built once on this machine (`CACHE/site`, see above) on sys.path."""
    site = CACHE / "site"
    if (site / "llama_cpp").is_dir() and str(site) not in sys.path:
        sys.path.insert(0, str(site))


def llama_cpp_run(gguf_path: Path, prompt: list[int], new_tokens: int):
    """llama-cpp-python: the prompt's logits `[n, vocab]` and a greedy continuation."""
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf_path), n_ctx=len(prompt) + new_tokens + 8, logits_all=True,
                n_threads=2, n_batch=512, verbose=False)
    llm.eval(prompt)
    logits = np.array(llm.scores[: len(prompt)], dtype=np.float32)
    greedy = []
    for _ in range(new_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        greedy.append(token)
        llm.eval([token])
    return logits, greedy
