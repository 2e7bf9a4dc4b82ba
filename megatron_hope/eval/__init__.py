"""The HoPE paper's evaluations and analyses (arXiv 2410.21216, sections 3, 4.2, 5, appendix C).

Every evaluation takes a `Scorer` (tokens -> logits, plus per-layer q/k capture), so the same code
runs on a `hope-pretrain` checkpoint (`MegatronScorer`) and on a HuggingFace model (`HFScorer`).
The metric cores are pure functions of token ids and logits; `hope-eval` (cli.py) wires them up.
"""
