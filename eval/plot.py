"""accuracy_vs_bits.png: keyword hit (with 95% intervals) and mean KLD against file size, one
line and marker style per family of rungs (the plain ladder, each calibration's ladder, each
type with blocks removed, starting from that type whole), the evidence-only row as a
horizontal floor; for several models (`draw_models`), one keyword-hit line per model.
Headless (matplotlib's Agg backend)."""

import textwrap
from pathlib import Path

MARKERS = "osD^vPX*"
TITLE_CHARS = 90  # a title line at fontsize 9 across the 8-inch figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mb(rungs: list[dict]) -> list[float]:
    return [r["bytes"] / 1e6 for r in rungs]


def family(rung: dict) -> str:
    """The line a rung is drawn on: the plain ladder, a calibration's ladder, or one type
    with blocks removed."""
    calibration = rung.get("calibration", "none")
    if rung.get("pruned_layers"):
        tail = "" if calibration == "none" else f"+{calibration}"
        return f"{rung['quant_type']}{tail}, blocks removed"
    return "plain" if calibration == "none" else f"calibrated ({calibration})"


def families(rungs: list[dict]) -> dict[str, list[dict]]:
    """Rungs by family, each by falling size; a pruned family starts at its type whole."""
    out: dict[str, list[dict]] = {}
    for r in sorted(rungs, key=lambda r: -r["bytes"]):
        out.setdefault(family(r), []).append(r)
    for name, members in out.items():
        first = members[0]
        if first.get("pruned_layers"):
            whole = [
                r
                for r in rungs
                if not r.get("pruned_layers")
                and r.get("quant_type") == first.get("quant_type")
                and r.get("calibration", "none") == first.get("calibration", "none")
            ]
            out[name] = whole[:1] + members
    return out


def _hit_line(acc, rungs: list[dict], style: dict, label: str) -> bool:
    """Keyword hit with its 95% interval per rung against megabytes; False (and nothing
    drawn) when some rung had no answerable question."""
    hits = [r["answers"]["keyword_hit"] for r in rungs]
    if any(h["value"] is None for h in hits):
        return False
    values = [h["value"] for h in hits]
    low = [h["value"] - (h["ci95"] or [h["value"]] * 2)[0] for h in hits]
    high = [(h["ci95"] or [h["value"]] * 2)[1] - h["value"] for h in hits]
    acc.errorbar(_mb(rungs), values, yerr=[low, high], capsize=4, label=label, **style)
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


def _accuracy_axis(acc) -> None:
    acc.set_ylabel("keyword hit (answerable)")
    acc.set_ylim(-0.02, 1.02)


def _title(ax, text: str) -> None:
    """A title wrapped to the figure's width (a long model name or top-rung label ran past
    the right edge)."""
    ax.set_title(textwrap.fill(text, TITLE_CHARS), fontsize=9)


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def _kld_line(ax, rungs: list[dict], style: dict) -> None:
    """Mean KLD per rung against megabytes, each point named by its rung."""
    klds = [r["divergence"]["kld_mean"] for r in rungs]
    ax.plot(_mb(rungs), klds, **style)
    for x, y, r in zip(_mb(rungs), klds, rungs, strict=True):
        ax.annotate(r["type"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)


def draw(results: dict, path: Path) -> None:
    """Two panels over one file-size axis: keyword hit above, mean KLD from the top rung
    below, a colour and marker per family."""
    plt = _pyplot()
    fig, (acc, kld) = plt.subplots(2, 1, figsize=(8, 7.5), dpi=110, sharex=True)
    drawn = False
    for i, (name, rungs) in enumerate(families(results["rungs"]).items()):
        style = {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)], "linestyle": "-"}
        drawn = _hit_line(acc, rungs, style, name) or drawn
        _kld_line(kld, rungs, style | {"label": name})
    if drawn:
        _floor(acc, results["evidence_only"]["answers"]["keyword_hit"])
    _accuracy_axis(acc)
    acc.legend(fontsize=8, loc="lower right")
    kld.set_ylabel(f"mean KLD vs {results['top_rung']} (nats/token)")
    kld.set_xlabel("file size (MB)")
    kld.set_ylim(bottom=0)
    kld.legend(fontsize=8, loc="upper right")
    kld.margins(x=0.1)
    _title(
        acc,
        f"{results['source']['name']}: accuracy and divergence vs size "
        f"(top rung: {results['top_rung_label']}; 95% CI)",
    )
    _save(plt, fig, path)


def draw_models(results: dict, path: Path) -> None:
    """One keyword-hit line per model (eval/results.py `combine`) against file size, its
    points named by their rung; no divergence axis, since each model diverges from its own
    top."""
    plt = _pyplot()
    fig, acc = plt.subplots(figsize=(8, 5), dpi=110)
    names = [m["model"] for m in results["models"]]
    drawn = False
    for i, name in enumerate(names):
        rungs = sorted(
            (r for r in results["rungs"] if r["model"] == name), key=lambda r: r["bytes"]
        )
        style = {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)], "linestyle": "-"}
        if _hit_line(acc, rungs, style, name):
            drawn = True
            for x, r in zip(_mb(rungs), rungs, strict=True):
                y = r["answers"]["keyword_hit"]["value"]
                acc.annotate(
                    r["type"], (x, y), textcoords="offset points", xytext=(4, 6), fontsize=7
                )
    if drawn:
        _floor(acc, results["evidence_only"]["answers"]["keyword_hit"])
    _accuracy_axis(acc)
    acc.set_xlabel("file size (MB)")
    acc.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8)
    acc.margins(x=0.08)
    _title(acc, f"accuracy vs file size: {', '.join(names)} (95% CI)")
    _save(plt, fig, path)
