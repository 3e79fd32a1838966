"""accuracy_vs_bits.png: keyword hit (with 95% intervals) and mean KLD against bits per weight,
the evidence-only row as a horizontal floor; for several models (`draw_models`), one keyword-hit
line per model. Headless (matplotlib's Agg backend)."""

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _hit_line(acc, rungs: list[dict], color: str, label: str) -> bool:
    """Keyword hit with its 95% interval per rung, each point named by its type; False (and
    nothing drawn) when some rung had no answerable question."""
    hits = [r["answers"]["keyword_hit"] for r in rungs]
    if any(h["value"] is None for h in hits):
        return False
    bits = [r["bits_per_weight"] for r in rungs]
    values = [h["value"] for h in hits]
    low = [h["value"] - (h["ci95"] or [h["value"]] * 2)[0] for h in hits]
    high = [(h["ci95"] or [h["value"]] * 2)[1] - h["value"] for h in hits]
    acc.errorbar(bits, values, yerr=[low, high], fmt="o-", color=color, capsize=4, label=label)
    for x, y, r in zip(bits, values, rungs, strict=True):
        acc.annotate(r["type"], (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8)
    return True


def _floor(acc, floor: dict) -> None:
    """The evidence-only row's keyword hit as a dashed line over its shaded interval."""
    acc.axhline(
        floor["value"],
        color="tab:gray",
        linestyle="--",
        label=f"evidence-only floor ({floor['value']:.3f})",
    )
    if floor["ci95"]:
        acc.axhspan(*floor["ci95"], color="tab:gray", alpha=0.12)


def _axes(acc) -> None:
    acc.set_xlabel("bits per weight (measured from the tensors)")
    acc.set_ylabel("keyword hit (answerable questions)")
    acc.set_ylim(-0.02, 1.02)


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def draw(results: dict, path: Path) -> None:
    plt = _pyplot()
    rungs = results["rungs"]
    bits = [r["bits_per_weight"] for r in rungs]
    fig, acc = plt.subplots(figsize=(8, 5), dpi=110)
    if _hit_line(acc, rungs, "tab:blue", "keyword hit (95% CI)"):
        _floor(acc, results["evidence_only"]["answers"]["keyword_hit"])
    _axes(acc)
    kld = acc.twinx()
    kld.plot(
        bits,
        [r["divergence"]["kld_mean"] for r in rungs],
        "s:",
        color="tab:red",
        label=f"mean KLD vs {results['top_rung']}",
    )
    kld.set_ylabel("mean KL divergence (nats/token)", color="tab:red")
    kld.tick_params(axis="y", labelcolor="tab:red")
    kld.set_ylim(bottom=0)
    handles = acc.get_legend_handles_labels()
    more = kld.get_legend_handles_labels()
    acc.legend(
        handles[0] + more[0],
        handles[1] + more[1],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        ncol=3,
        fontsize=8,
    )
    acc.margins(x=0.08)
    label = results["top_rung_label"]
    acc.set_title(
        f"{results['source']['name']}: accuracy vs bit-width (top rung: {label})", fontsize=9
    )
    _save(plt, fig, path)


def draw_models(results: dict, path: Path) -> None:
    """One keyword-hit line per model (eval/results.py `combine`), labelled by the model, its
    points by their rung; no divergence axis, since each model diverges from its own top."""
    plt = _pyplot()
    fig, acc = plt.subplots(figsize=(8, 5), dpi=110)
    names = [m["model"] for m in results["models"]]
    drawn = [
        _hit_line(acc, [r for r in results["rungs"] if r["model"] == name], f"C{i % 10}", name)
        for i, name in enumerate(names)
    ]
    if any(drawn):
        _floor(acc, results["evidence_only"]["answers"]["keyword_hit"])
    _axes(acc)
    acc.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8)
    acc.margins(x=0.08)
    acc.set_title(f"accuracy vs bit-width: {', '.join(names)} (95% CI)", fontsize=9)
    _save(plt, fig, path)
