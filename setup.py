"""Install megatron-hope: `pip install -e .` (CPU) or `pip install .` inside the GPU image."""

from setuptools import find_packages, setup

setup(
    name="megatron-hope",
    version="0.1.0",
    description="HoPE (High-frequency rotary Position Encoding) as a first-class megatron-core option",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["megatron_hope", "megatron_hope.*"]),
    include_package_data=True,
    install_requires=[
        # Python 3.11 resolves 0.16.1, Python 3.12 resolves 0.19.x; both are tested in CI.
        "megatron-core>=0.16.1,<0.20",
        "torch>=2.4",
        "numpy",
        # megatron-core's async checkpoint writer hangs forever without psutil (undeclared upstream).
        "psutil",
        "tensorboard",
        "tqdm",
        "tokenizers",
        "safetensors",
        "nltk",
        # Llama's rope type "proportional" (exact HoPE in the HF export) arrived in transformers 5.
        "transformers>=5",
        # RedPajama readers (.zst), fast JSON, the fast tokenizer backend, SentencePiece models.
        "zstandard",
        "orjson",
        "gigatoken",
        "sentencepiece",
        # hope-eval's plots.
        "matplotlib",
    ],
    extras_require={
        # six and triton: Megatron-LM's own tools/preprocess_data.py, which
        # tests/data/test_megatron_lm_parity.py runs (triton: a 286 MB wheel, ~1 GB installed;
        # torch's CUDA wheels already pull it in).
        # hypothesis: tests/robustness fuzzes the CLIs' flags.
        "test": ["pytest", "pytest-timeout", "ruff", "six", "hypothesis",
                 "triton; platform_system == 'Linux'"],
        "eval": ["lm_eval[hf]==0.4.13"],
    },
    entry_points={
        "console_scripts": [
            "hope-pretrain=megatron_hope.training.cli:main",
            "hope-rope=megatron_hope.rope.cli:main",
            "hope-convert=megatron_hope.convert.cli:main",
            "hope-preprocess=megatron_hope.data.cli:main",
            "hope-train-tokenizer=megatron_hope.data.cli:train_tokenizer_main",
            "hope-eval=megatron_hope.eval.cli:main",
        ],
    },
)
