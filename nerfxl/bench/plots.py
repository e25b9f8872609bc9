"""PNG figures of a scaling study's ``scaling.json`` (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

STYLE = {"nerfxl": "o-", "independent-3d": "s--", "independent-2d": "^--", "ddp": "d:"}


def write_plots(results: dict, out_dir: Path) -> list[Path]:
    """Write the study's figures into ``out_dir``; returns their paths (figures without data are skipped)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on CI machines and training servers
    out_dir = Path(out_dir)
    runs = results["runs"]
    paths = [
        per_method(runs, "psnr", "test PSNR (dB)", out_dir / "psnr_vs_k.png"),
        per_method(runs, "rays_per_s", "training rays/s", out_dir / "rays_per_s_vs_k.png",
                   extra=throughput_line(results)),
        per_method(runs, "parameters", "parameters (all models)", out_dir / "parameters_vs_k.png", log=True),
        fraction_outside(runs, results["paper_fraction_outside_tile"], out_dir / "fraction_outside_vs_k.png"),
        exchange_bytes(results.get("exchange"), out_dir / "exchange_bytes.png"),
    ]
    return [p for p in paths if p is not None]


def per_method(runs: list[dict], key: str, label: str, path: Path, log: bool = False,
               extra: tuple[str, list, list] | None = None) -> Path:
    """One line per method of ``key`` against K."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for method, style in STYLE.items():
        points = sorted((r["k"], r[key]) for r in runs if r["method"] == method)
        if points:
            ax.plot(*zip(*points), style, label=method)
    if extra is not None and extra[1]:
        ax.plot(extra[1], extra[2], "o-", color="black", label=extra[0])
    finish(fig, ax, label, path, log)
    return path


def throughput_line(results: dict) -> tuple[str, list, list]:
    timed = results.get("throughput") or []
    return "nerfxl on D = K processes (timed steps only)", [t["devices"] for t in timed], [t["rays_per_s"] for t in timed]


def fraction_outside(runs: list[dict], paper: dict, path: Path) -> Path | None:
    """independent-3d's share of samples outside the own tile, with the paper's values for reference."""
    import matplotlib.pyplot as plt

    points = sorted((r["k"], r["fraction_outside_tile"]) for r in runs
                    if r["method"] == "independent-3d" and r["fraction_outside_tile"] is not None)
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(*zip(*points), STYLE["independent-3d"], label="independent-3d (measured)")
    ax.plot([int(k) for k in paper], list(paper.values()), "x", color="gray", markersize=9, label="NeRF-XL paper")
    ax.set_ylim(0, 1)
    finish(fig, ax, "fraction of samples outside own tile", path)
    return path


def exchange_bytes(exchange: dict | None, path: Path) -> Path | None:
    """Bytes per step and process: partition- vs sample-based exchange (and the gradient all-reduce)."""
    import matplotlib.pyplot as plt

    if not exchange:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6))
    names = ["partition", "sample", "gradients"]
    values = [exchange["partition_bytes_per_step"], exchange["sample_bytes_per_step"], exchange["gradient_bytes_per_step"]]
    ax.bar(names, values, color=["tab:blue", "tab:red", "tab:gray"])
    ax.set_yscale("log")
    ax.set_ylabel("bytes per step per process")
    ax.set_title(f"exchange at K = D = {exchange['devices']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def finish(fig, ax, label: str, path: Path, log: bool = False) -> None:
    import matplotlib.pyplot as plt

    ax.set_xscale("log", base=2)
    ks = sorted({int(x) for line in ax.get_lines() for x in line.get_xdata()})
    ax.set_xticks(ks, [str(k) for k in ks])  # K itself, not 2^n
    ax.minorticks_off()
    ax.set_xlabel("K (tiles / models / processes)")
    ax.set_ylabel(label)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
