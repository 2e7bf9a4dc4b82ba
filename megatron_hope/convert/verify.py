"""Check an HF export against the Megatron checkpoint it came from: same tokens, same logits.

    diff = compare_logits("runs/hope/checkpoints", "runs/hope/hf")   # max |logit difference|
"""

from __future__ import annotations

from pathlib import Path

import torch

VERIFY_TEXT = (
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
    "    return a\n\nclass Stack:\n    def __init__(self):\n        self.items = []\n"
)


def verification_tokens(tokenizer, length: int) -> torch.Tensor:
    """`[1, length]` token ids of a fixed text (repeated as needed).

    `tokenizer`: a megatron-hope tokenizer (as the run encoded its data) or a tokenizer.json
    path; a NullTokenizer, which reads no text, gives fixed pseudo-random ids.
    """
    if isinstance(tokenizer, (str, Path)):
        from tokenizers import Tokenizer

        backend = Tokenizer.from_file(str(tokenizer))
        encode = lambda text: backend.encode(text, add_special_tokens=False).ids  # noqa: E731
    elif type(tokenizer).__name__ == "NullHopeTokenizer":
        ids = (torch.arange(length) * 7919 % (tokenizer.vocab_size - 1)).tolist()
        return torch.tensor([ids], dtype=torch.long)
    else:
        encode = tokenizer.tokenize
    ids: list[int] = []
    while len(ids) < length:
        ids += encode(VERIFY_TEXT)
    return torch.tensor([ids[:length]], dtype=torch.long)


@torch.no_grad()
def hf_logits(hf_dir: str | Path, tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Logits `[b, s, vocab]` of the export loaded with stock `AutoModelForCausalLM`."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    model.eval()
    device = torch.cuda.current_device()  # the host under megatron_hope's CPU shim
    model.cuda(device)
    return model(tokens.cuda(device)).logits[..., :vocab_size].float().cpu()


def compare_logits(load_dir: str | Path, hf_dir: str | Path, tokens: torch.Tensor,
                   seq_len_interpolation_factor: float | None = None) -> float:
    """Max absolute logit difference between the Megatron checkpoint and the HF export."""
    from megatron_hope.training.model_loading import load_model_from_checkpoint

    loaded = load_model_from_checkpoint(
        load_dir, seq_len_interpolation_factor=seq_len_interpolation_factor)
    reference = loaded.logits(tokens).cpu()
    vocab = loaded.vocab_size
    del loaded
    exported = hf_logits(hf_dir, tokens, vocab)
    return float((reference - exported).abs().max())
