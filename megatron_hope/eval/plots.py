"""PNG figures in the paper's forms (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

BAND_COLOURS = {"activated": "tab:red", "low": "tab:blue", "high": "0.75",
                "independent": "tab:green", "?": "0.6"}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _train_line(ax, train_length: int | None, vertical: bool = True) -> None:
    if train_length:
        ax.axvline(train_length, color="k", linestyle=":", linewidth=1, label="training length")


def plot_curves(series: dict[str, tuple[list, list]], path: Path, xlabel: str, ylabel: str,
                title: str, train_length: int | None = None, logy: bool = False,
                percent: bool = False) -> Path:
    """One line per label: Figure 5 (PPL vs length) and the FA/copy curves."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    _train_line(ax, train_length)
    if logy:
        ax.set_yscale("log")
    if percent:
        ax.set_ylim(-2, 102)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_needle(lengths: list[int], depths: list[float], scores: list[list[float]], path: Path,
                title: str) -> Path:
    """Figure 1's heat map: depth (rows) x length (columns), green = retrieved."""
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(lengths), 1.2 + 0.5 * len(depths)))
    grid = [[scores[j][i] for j in range(len(lengths))] for i in range(len(depths))]
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    ax.set_xlabel("input length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="retrieved %")
    return _save(fig, path)


def plot_attention(result: dict, bands: list[str], path: Path, title: str,
                   train_length: int) -> Path:
    """Figures 2/3a/6/3c: overall logits vs key position, per-pair components coloured by band,
    layer 0's components (Figure 3c, top), per-layer logits (Figure 3c, bottom)."""
    length = result["length"]
    positions = list(range(length))
    fig, axes = plt.subplots(4, 1, figsize=(7, 11), sharex=True)
    axes[0].plot(positions, result["logits"], color="k", label="all pairs (mean over layers, "
                 "heads)")
    activated = [i for i, b in enumerate(bands) if b == "activated"]
    if activated:
        summed = [sum(result["components"][i][n] for i in activated) for n in positions]
        axes[0].plot(positions, summed, color="tab:red", label="activated pairs")
    axes[0].set_ylabel("pre-softmax logit")
    axes[0].legend(fontsize=8)
    for index, component in enumerate(result["components"]):
        band = bands[index] if index < len(bands) else "?"
        axes[1].plot(positions, component, color=BAND_COLOURS.get(band, "0.6"), linewidth=0.8)
    axes[1].set_ylabel("component C_i (eq. 4)")
    for index, component in enumerate(result.get("layer_components", {}).get("0", [])):
        band = bands[index] if index < len(bands) else "?"
        axes[2].plot(positions, component, color=BAND_COLOURS.get(band, "0.6"), linewidth=0.8)
    axes[2].set_ylabel("layer 0: C_i")
    for layer, curve in enumerate(result["per_layer_logits"]):
        axes[3].plot(positions, curve, linewidth=0.8, label=f"layer {layer}")
    axes[3].set_ylabel("logit per layer")
    axes[3].set_xlabel("key position (query = last position)")
    axes[3].legend(fontsize=6, ncol=4)
    for ax in axes:
        _train_line(ax, train_length if length > train_length else None)
    axes[0].set_title(title)
    return _save(fig, path)


def plot_vaf(vaf_by_length: dict[int, list[float]], bands: list[str], path: Path,
             title: str) -> Path:
    """Figure 3b: VAF (eq. 5) per pair, bars coloured by band, one group per length."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    count = len(vaf_by_length)
    width = 0.8 / max(1, count)
    for slot, (length, values) in enumerate(sorted(vaf_by_length.items())):
        xs = [i + slot * width for i in range(len(values))]
        colours = [BAND_COLOURS.get(bands[i] if i < len(bands) else "?", "0.6")
                   for i in range(len(values))]
        ax.bar(xs, values, width=width, color=colours, edgecolor="k", linewidth=0.2,
               alpha=1.0 - 0.4 * slot / max(1, count))
        ax.text(xs[-1], 0, f" {length}", fontsize=6)
    ax.set_xlabel("pair i; red activated, blue low, green position independent, grey high")
    ax.set_ylabel("VAF (%)")
    ax.set_title(title)
    return _save(fig, path)


def plot_vaf_over_training(result: dict, path: Path, title: str) -> Path:
    """Figure 3b's dynamics: each band's VAF (eq. 5) against the training step."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for band, values in result["band_vaf"].items():
        if any(v is not None for v in values):
            ax.plot(result["iterations"], [float("nan") if v is None else v for v in values],
                    marker="o", color=BAND_COLOURS.get(band, "0.6"), label=band)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"VAF (%) at length {result['length']}")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)
