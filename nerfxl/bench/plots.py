"""PNG figures of a scaling study's ``scaling.json`` (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

STYLE = {"nerfxl": "o-", "independent-3d": "s--", "independent-2d": "^--", "ddp": "d:"}


def write_plots(results: dict, out_dir: Path) -> list[Path]:
    """Write the study's figures into ``out_dir``; returns their paths (figures without data are skipped)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on CI machines and training servers
    out_dir = Path(out_dir)
    protocols = list(dict.fromkeys(r.get("protocol", "paper") for r in results["runs"]))
    paths = []
    for protocol in protocols:
        runs = [r for r in results["runs"] if r.get("protocol", "paper") == protocol]
        suffix = "" if len(protocols) == 1 else f"-{protocol}"
        paths += [per_method(runs, "psnr", f"test PSNR (dB), {protocol} protocol", out_dir / f"psnr_vs_k{suffix}.png"),
                  psnr_vs_parameters(runs, protocol, out_dir / f"psnr_vs_parameters{suffix}.png")]
    runs = [r for r in results["runs"] if r.get("protocol", "paper") == protocols[0]] if protocols else []
    paths += [
        per_method(runs, "rays_per_s", "training rays/s", out_dir / "rays_per_s_vs_k.png",
                   extra=throughput_lines(results)),
        per_method(runs, "parameters", "parameters (all models)", out_dir / "parameters_vs_k.png", log=True),
        fraction_outside(runs, results["paper_fraction_outside_tile"], out_dir / "fraction_outside_vs_k.png"),
        exchange_bytes(results.get("exchange"), out_dir / "exchange_bytes.png"),
    ]
    return [p for p in paths if p is not None]


def per_method(runs: list[dict], key: str, label: str, path: Path, log: bool = False,
               extra: list[tuple[str, str, list, list]] = ()) -> Path:
    """One line per method of ``key`` against K, plus ``extra`` (label, style, ks, values) lines in black."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for method, style in STYLE.items():
        points = sorted((r["k"], r[key]) for r in runs if r["method"] == method)
        if points:
            ax.plot(*zip(*points), style, label=method)
    for name, style, ks, values in extra:
        if ks:
            ax.plot(ks, values, style, color="black", label=name)
    finish(fig, ax, label, path, log)
    return path


def psnr_vs_parameters(runs: list[dict], protocol: str, path: Path) -> Path | None:
    """Test PSNR against the parameters of all of a method's models (NeRF-XL paper, Fig. 9), K labelled;
    NeRF-XL's training PSNR (at convergence, with a plateau rule) dotted beside it."""
    import matplotlib.pyplot as plt

    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for method, style in STYLE.items():
        points = sorted((r["parameters"], r["psnr"], r["k"]) for r in runs if r["method"] == method)
        if points:
            (line,) = ax.plot([p[0] for p in points], [p[1] for p in points], style, label=method)
            if method == "nerfxl":
                for n, psnr, k in points:
                    ax.annotate(f"K={k}", (n, psnr), textcoords="offset points", xytext=(4, -10), fontsize=7)
                # The capacity argument: what the model fits of its training views at convergence.
                fitted = sorted((r["parameters"], r["train_psnr"]) for r in runs
                                if r["method"] == method and r.get("train_psnr") is not None)
                if fitted:
                    ax.plot(*zip(*fitted), style.replace("-", ":"), color=line.get_color(), alpha=0.5,
                            label=f"{method} (train PSNR)")
    ax.set_xscale("log")
    ax.set_xlabel("parameters (all models)")
    ax.set_ylabel(f"PSNR (dB), {protocol} protocol")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def throughput_lines(results: dict) -> list[tuple[str, str, list, list]]:
    """The real multi-process figures: NeRF-XL at K = D and DDP on D processes (timed steps only)."""
    lines = []
    for key, name, style in (("throughput", "nerfxl, D = K processes", "o-"), ("throughput_ddp", "ddp, D = K processes", "d:")):
        timed = results.get(key) or []
        lines.append((name, style, [t["devices"] for t in timed], [t["rays_per_s"] for t in timed]))
    return lines


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
    """Bytes and seconds per step and process: partition- vs sample-based exchange (and the gradient
    all-reduce, the same in both)."""
    import matplotlib.pyplot as plt

    if not exchange:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.6))
    names = ["partition", "sample", "gradients"]
    colors = ["tab:blue", "tab:red", "tab:gray"]
    left.bar(names, [exchange["partition_bytes_per_step"], exchange["sample_bytes_per_step"],
                     exchange["gradient_bytes_per_step"]], color=colors)
    left.set_yscale("log")
    left.set_ylabel("bytes per step per process")
    if "partition_exchange_seconds_per_step" in exchange:  # studies before collective timing have bytes only
        right.bar(names, [exchange["partition_exchange_seconds_per_step"], exchange["sample_exchange_seconds_per_step"],
                          exchange["gradient_seconds_per_step"]], color=colors)
    right.set_ylabel("seconds in collectives per step")
    fig.suptitle(f"exchange at K = D = {exchange['devices']}")
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
