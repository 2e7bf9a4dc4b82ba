"""`hope_run.json`, the run settings beside every checkpoint: one format, one writer, one reader.

Written by `hope-pretrain`, by Megatron-LM's loop through `megatron_hope.integrations`, and by
`hope-convert` imports; read by `--load`, evaluation and export. Position-encoding settings are
stored in canonical form: `hope_train_length` only for the types that use it (hope, ab1-ab3), so
a RoPE run and a RoPE import describe the same encoding with the same dict.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from megatron_hope.rope.config import PositionEncodingConfig

FORMAT = "megatron-hope/1"
RUN_METADATA_FILENAME = "hope_run.json"
TRAIN_LENGTH_TYPES = ("hope", "ab1", "ab2", "ab3")
"""Position-encoding types whose frequencies depend on `hope_train_length` (L of eq. 6)."""


def canonical_encoding(encoding: PositionEncodingConfig) -> PositionEncodingConfig:
    """`encoding` without the settings its type ignores (hope_train_length outside hope/ab*)."""
    if encoding.position_embedding_type in TRAIN_LENGTH_TYPES:
        return encoding
    return dataclasses.replace(encoding, hope_train_length=None)


def canonical_encoding_dict(values: dict[str, Any]) -> dict[str, Any]:
    """The canonical dict of a stored encoding (older files kept L for RoPE too)."""
    return canonical_encoding(PositionEncodingConfig.from_dict(values)).to_dict()


def _jsonable(value):
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclass(frozen=True)
class RunMetadata:
    """The content of `hope_run.json`."""

    position_encoding: dict[str, Any]
    inv_freq: list[float]
    rotated_pairs: int
    arch: dict[str, Any]
    """`ModelArchitecture` fields except the position encoding; `ffn_hidden_size` resolved
    (files written before it was stored, until 2026-11-29, may hold None: see
    `model_loading.arch_from_metadata`)."""
    padded_vocab_size: int
    tokenizer: dict[str, Any]
    """{"type": ..., "model": resolved path or None}."""
    args: dict[str, Any] = field(default_factory=dict)
    """The run's flags (empty for an import)."""
    format: str = FORMAT
    megatron_hope_version: str = "unknown"
    megatron_core_version: str = "unknown"
    source: str | None = None
    """Import only: the HuggingFace directory it came from."""
    iteration: int | None = None
    consumed_train_samples: int | None = None
    layout: dict[str, int] | None = None
    """TP/PP/DP sizes that wrote the checkpoint."""

    @classmethod
    def of(cls, arch, padded_vocab_size: int, tokenizer_type: str | None,
           tokenizer_model: str | None, args: dict[str, Any] | None = None,
           source: str | None = None) -> RunMetadata:
        """The metadata of a model `arch` (a `ModelArchitecture`)."""
        import megatron.core

        import megatron_hope

        encoding = canonical_encoding(arch.position_encoding)
        return cls(
            position_encoding=encoding.to_dict(),
            inv_freq=encoding.inv_freq().tolist(),
            rotated_pairs=encoding.rotated_pairs,
            arch={**{k: v for k, v in dataclasses.asdict(arch).items()
                     if k != "position_encoding"},
                  # Resolved: a default that changes cannot change a saved model's shape.
                  "ffn_hidden_size": arch.ffn_size},
            padded_vocab_size=int(padded_vocab_size),
            tokenizer={"type": tokenizer_type,
                       "model": str(Path(tokenizer_model).resolve()) if tokenizer_model else None},
            args=_jsonable(dict(args or {})),
            megatron_hope_version=megatron_hope.__version__,
            megatron_core_version=getattr(megatron.core, "__version__", "unknown"),
            source=source,
        )

    def at(self, iteration: int, consumed_train_samples: int,
           layout: dict[str, int]) -> RunMetadata:
        """This metadata for the checkpoint of `iteration`."""
        return dataclasses.replace(self, iteration=iteration,
                                   consumed_train_samples=consumed_train_samples, layout=layout)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        return {key: value for key, value in values.items()
                if value is not None or key not in ("source", "iteration",
                                                    "consumed_train_samples", "layout")}

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = RUN_METADATA_FILENAME) -> RunMetadata:
        """Validated: a clear error naming `where` for another format or missing settings."""
        if not isinstance(values, dict) or values.get("format") != FORMAT:
            found = values.get("format") if isinstance(values, dict) else type(values).__name__
            raise ValueError(f"{where}: format {found!r} is not {FORMAT!r}; not written by "
                             "megatron-hope")
        fields = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(values))
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        return cls(**{key: value for key, value in values.items() if key in fields})

    def write(self, directory: str | Path) -> Path:
        """`directory/hope_run.json`, flushed to disk."""
        path = Path(directory) / RUN_METADATA_FILENAME
        with open(path, "w") as handle:
            handle.write(json.dumps(self.to_dict(), indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return path

    @classmethod
    def read(cls, directory: str | Path) -> RunMetadata:
        """`directory/hope_run.json`; for a checkpoint Megatron-LM's own loop saved (no
        plug-in), the same settings from the Megatron-LM `args` in its common state."""
        path = Path(directory) / RUN_METADATA_FILENAME
        if not path.is_file():
            # Megatron-LM's own loop writes none: its settings are in the checkpoint's args.
            from megatron_hope.integrations.megatron_lm import run_metadata_from_checkpoint

            metadata = run_metadata_from_checkpoint(directory)
            if metadata is None:
                raise ValueError(f"{path} is missing: the checkpoint directory is incomplete")
            return metadata
        try:
            values = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{path} is unreadable ({error})") from None
        return cls.from_dict(values, str(path))
