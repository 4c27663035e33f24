"""Plotly figures: attention ([CLS] heatmaps, differences, [CLS]-on-trigger curves, token maps, the
head view), the trigger anatomy, E per trigger, the embedding swap, and runs compared.

Token axes are numeric with token strings as tick labels (repeated tokens stay separate columns);
trigger tokens are drawn in red and outlined. Pages only place these figures (``st.plotly_chart``);
the figures take the library's results (or their JSON), never Streamlit state.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

TRIGGER_COLOR = "#d62728"
MODEL_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
VALIDATE_ENV = "TROJANSCOPE_VALIDATE_FIGURES"  # "1": the fast figures are checked by plotly too (the tests set it)


def _scale(name: str) -> list:
    """A named colour scale as its list of stops (what validation sends: plotly.js does not know ``RdBu_r``)."""
    from plotly.colors import get_colorscale

    return get_colorscale(name)


def fast_figure(data: list[dict[str, Any]], layout: dict[str, Any]) -> go.Figure:
    """A figure from plain dicts, built without plotly's property-by-property validation: the Probe's six figures
    are rebuilt on every Enter, and validation took 10-14 ms of each (1 ms without; benchmarks/probe_latency.py).
    Titles are given as ``{"text": ...}``, as validation would have made them. Under ``$TROJANSCOPE_VALIDATE_FIGURES=1``
    (the tests) plotly validates them as any figure, so a wrong property still fails there."""
    spec = {"data": data, "layout": layout}
    if os.environ.get(VALIDATE_ENV) == "1":
        return go.Figure(spec)
    try:
        return go.Figure(spec, _validate=False)  # plotly's own switch (what its JSON reader uses), not public API
    except TypeError:  # a plotly without it: validated, only slower
        return go.Figure(spec)


def _tick_text(tokens: Sequence[str], trigger_positions: Sequence[int]) -> list[str]:
    trig = set(trigger_positions)
    return [f"<b style='color:{TRIGGER_COLOR}'>{t}</b>" if i in trig else t for i, t in enumerate(tokens)]


def _outline(positions: Sequence[int], n_rows: int) -> list[dict]:
    """Rectangles around trigger columns (one layout update: add_shape per column is slow)."""
    return [dict(type="rect", x0=p - 0.5, x1=p + 0.5, y0=-0.5, y1=n_rows - 0.5,
                 line=dict(color=TRIGGER_COLOR, width=2), fillcolor="rgba(0,0,0,0)") for p in positions]


def cls_heatmap(values: np.ndarray, tokens: Sequence[str], trigger_positions: Sequence[int], *, title: str = "",
                zmax: float | None = None, zmin: float = 0.0, colorscale: str = "Viridis",
                colorbar_title: str = "attention") -> go.Figure:
    """Rows layers (1 at the bottom), columns tokens: ``values[layer, token]``."""
    n_layers, n_tokens = values.shape
    heat = dict(type="heatmap", z=values, x=list(range(n_tokens)), y=list(range(n_layers)), zmin=zmin,
                zmax=float(values.max()) if zmax is None else zmax, colorscale=_scale(colorscale),
                colorbar=dict(title=dict(text=colorbar_title)), customdata=[list(tokens)] * n_layers,
                hovertemplate="layer %{y}<br>token %{customdata}<br>%{z:.3f}<extra></extra>")
    return fast_figure([heat], dict(
        title=dict(text=title), shapes=_outline(trigger_positions, n_layers), height=120 + 28 * n_layers,
        margin=dict(l=40, r=10, t=40, b=10),
        xaxis=dict(tickmode="array", tickvals=list(range(n_tokens)), ticktext=_tick_text(tokens, trigger_positions),
                   tickangle=-60, side="bottom"),
        yaxis=dict(tickmode="array", tickvals=list(range(n_layers)), ticktext=[str(i + 1) for i in range(n_layers)],
                   title=dict(text="layer")),
    ))


DIFFERENCE_SCALES = (0.1, 0.25, 0.5, 1.0)  # the difference map's colour scales: fixed steps, never fit to one input


def difference_scale(diff: np.ndarray) -> float:
    """The smallest of :data:`DIFFERENCE_SCALES` that holds every value of ``diff``: a ±0.05 difference stays
    pale on the ±0.1 scale instead of saturating a scale fitted to it."""
    biggest = float(np.abs(np.asarray(diff, dtype=float)).max()) if np.size(diff) else 0.0
    return next((b for b in DIFFERENCE_SCALES if biggest <= b), DIFFERENCE_SCALES[-1])


def difference_heatmap(diff: np.ndarray, tokens: Sequence[str], trigger_positions: Sequence[int], *,
                       title: str = "backdoored minus clean") -> go.Figure:
    """Backdoored minus clean [CLS] attention, on a fixed colour scale (:func:`difference_scale`) named in the title."""
    bound = difference_scale(diff)
    return cls_heatmap(diff, tokens, trigger_positions, title=f"{title} (colour scale ±{bound:g})", zmin=-bound,
                       zmax=bound, colorscale="RdBu_r", colorbar_title="difference")


def trigger_curves(series: dict[str, np.ndarray], *, title: str = "[CLS] attention on the trigger tokens") -> go.Figure:
    """One line per model: per layer, the [CLS] attention mass on trigger tokens."""
    lines = [dict(type="scatter", x=list(range(1, len(values) + 1)), y=np.asarray(values), mode="lines+markers",
                  name=name, line=dict(color=MODEL_COLORS[i % len(MODEL_COLORS)], width=3))
             for i, (name, values) in enumerate(series.items())]
    return fast_figure(lines, dict(title=dict(text=title), xaxis=dict(title=dict(text="layer"), dtick=1),
                                   yaxis=dict(title=dict(text="attention mass"), range=[0, 1]), height=320,
                                   margin=dict(l=40, r=10, t=40, b=30), legend=dict(orientation="h", y=-0.25)))


def token_heatmap(att: np.ndarray, tokens: Sequence[str], trigger_positions: Sequence[int], *,
                  title: str = "") -> go.Figure:
    """Token-to-token attention of one layer (queries rows, keys columns)."""
    n = len(tokens)
    ticks = dict(tickmode="array", tickvals=list(range(n)), ticktext=_tick_text(tokens, trigger_positions))
    heat = dict(type="heatmap", z=att, x=list(range(n)), y=list(range(n)), zmin=0, zmax=float(att.max()),
                colorscale=_scale("Viridis"), colorbar=dict(title=dict(text="attention")),
                hovertemplate="query %{y}<br>key %{x}<br>%{z:.3f}<extra></extra>")
    return fast_figure([heat], dict(title=dict(text=title), height=200 + 18 * n, margin=dict(l=40, r=10, t=40, b=10),
                                    xaxis=dict(title=dict(text="key"), tickangle=-60, **ticks),
                                    yaxis=dict(title=dict(text="query"), autorange="reversed", **ticks)))


def head_heatmap(share: np.ndarray, *, title: str = "", zmax: float | None = None,
                 outlined: Iterable[tuple[int, int]] | None = None) -> go.Figure:
    """Layers (rows, 1 at the bottom) x heads: mean attention mass on the trigger; ``outlined``
    heads (0-based ``(layer, head)`` pairs: a ``models.heads.HeadSet``, e.g. TAL's choice) get a red frame."""
    n_layers, n_heads = share.shape
    fig = go.Figure(go.Heatmap(z=share, x=list(range(n_heads)), y=list(range(n_layers)), zmin=0,
                               zmax=float(share.max()) if zmax is None else zmax, colorscale="Viridis",
                               colorbar=dict(title="on trigger"),
                               hovertemplate="layer %{y}<br>head %{x}<br>%{z:.3f}<extra></extra>"))
    shapes = [dict(type="rect", x0=h - 0.5, x1=h + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                   line=dict(color=TRIGGER_COLOR, width=3), fillcolor="rgba(0,0,0,0)")
              for layer, h in (outlined or ())]
    fig.update_layout(title=title, shapes=shapes, height=120 + 34 * n_layers, margin=dict(l=40, r=10, t=40, b=30),
                      xaxis=dict(title="head", dtick=1),
                      yaxis=dict(title="layer", tickmode="array", tickvals=list(range(n_layers)),
                                 ticktext=[str(i + 1) for i in range(n_layers)]))
    return fig


def epoch_curves(histories: dict[str, list[dict]], keys: Sequence[str], *, title: str = "") -> go.Figure:
    """Per-epoch curves of several runs: one subplot row per metric key."""
    from plotly.subplots import make_subplots

    keys = [k for k in keys if any(k in rec for h in histories.values() for rec in h)]
    fig = make_subplots(rows=max(1, len(keys)), cols=1, shared_xaxes=True, subplot_titles=keys, vertical_spacing=0.08)
    for i, (name, history) in enumerate(histories.items()):
        color = MODEL_COLORS[i % len(MODEL_COLORS)]
        for r, key in enumerate(keys, 1):
            pts = [(rec["epoch"], rec[key]) for rec in history if rec.get(key) is not None]
            if pts:
                fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                         name=name, legendgroup=name, showlegend=r == 1, line=dict(color=color)),
                              row=r, col=1)
    fig.update_layout(title=title, height=140 + 170 * max(1, len(keys)), margin=dict(l=40, r=10, t=60, b=30))
    fig.update_xaxes(title_text="epoch", dtick=1, row=max(1, len(keys)), col=1)
    return fig


def anatomy_lines(tokens: Sequence[Any], *, title: str = "Mean [CLS] attention to each trigger token, per layer"
                  ) -> go.Figure:
    """Trigger anatomy: per trigger token (``analysis.anatomy.TokenAnatomy``: ``token``, ``role``,
    ``cls_attention``, ``cls_attention_clean``), the mean [CLS] attention per layer in the backdoored
    model (solid) and, where measured, the clean one (dotted): one or two traces per token."""
    fig = go.Figure()
    for i, t in enumerate(tokens):
        color = MODEL_COLORS[i % len(MODEL_COLORS)]
        layers = list(range(1, len(t.cls_attention) + 1))
        fig.add_trace(go.Scatter(x=layers, y=list(t.cls_attention), name=f"{t.token} ({t.role}), backdoored",
                                 line=dict(color=color, width=3)))
        if t.cls_attention_clean is not None:
            fig.add_trace(go.Scatter(x=layers, y=list(t.cls_attention_clean), name=f"{t.token}, clean",
                                     line=dict(color=color, dash="dot")))
    fig.update_layout(title=title, xaxis=dict(title="layer", dtick=1), yaxis=dict(title="attention"), height=360,
                      margin=dict(l=40, r=10, t=40, b=30))
    return fig


def es_bars(rows: Sequence[Mapping[str, Any]], *, max_insertions: int = 20,
            title: str = "E per trigger (lower is stronger)") -> go.Figure:
    """E per trigger, one bar group per trigger and one trace per model (in order of first
    appearance), from ``analysis.effectiveness.sweep_rows``; an undefined E (``None``) leaves a gap."""
    models: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        models.setdefault(row["model"], []).append(row)
    fig = go.Figure()
    for i, (model, part) in enumerate(models.items()):
        fig.add_trace(go.Bar(name=model, x=[r["trigger"] for r in part], y=[r["E"] for r in part],
                             marker_color=MODEL_COLORS[i % len(MODEL_COLORS)]))
    fig.update_layout(barmode="group", title=title, yaxis=dict(title="E", range=[0, max_insertions]), height=340,
                      margin=dict(l=40, r=10, t=40, b=30))
    return fig


SWAP_COLUMNS = tuple((ref, kind) for ref in ("BD", "CL") for kind in ("clean", "poisoned"))


def swap_bars(res: Mapping[str, Any]) -> go.Figure:
    """The embedding swap's Table 13 as bars (``analysis.swap.SwapResult.to_json()``): per hybrid
    one trace, the mean cosine similarity to BD and CL on clean and poisoned text, one standard
    deviation as error bars."""
    fig = go.Figure()
    labels = [f"vs {ref}, {kind}" for ref, kind in SWAP_COLUMNS]
    for h in res["similarity"]:
        fig.add_bar(name=h, x=labels, y=[res["similarity"][h][ref][kind] for ref, kind in SWAP_COLUMNS],
                    error_y={"type": "data", "array": [res["spread"][h][ref][kind] for ref, kind in SWAP_COLUMNS]})
    fig.update_layout(barmode="group", title="Mean cosine similarity (error bars: one standard deviation)",
                      yaxis={"range": [-1.05, 1.1], "title": "cosine similarity"}, height=380,
                      margin={"l": 40, "r": 20, "t": 50, "b": 40})
    return fig


def swap_layers(res: Mapping[str, Any]) -> go.Figure:
    """The swap's per-layer view (``SwapResult.to_json()``): for CL's bottom ``k`` under BD's top
    and the mirror, the similarity to BD on poisoned text (solid) and the ASR (dashed): four traces."""
    unit = res.get("layer_unit", "layer")
    fig = go.Figure()
    for name, pts in (("CL bottom k / BD top", res["layers"]), ("BD bottom k / CL top", res["layers_mirror"])):
        ks = [p["k"] for p in pts]
        fig.add_scatter(x=ks, y=[p["sim_BD_poisoned"] for p in pts], mode="lines+markers", name=f"{name}: sim to BD")
        fig.add_scatter(x=ks, y=[p["asr"] for p in pts], mode="lines+markers", line={"dash": "dash"},
                        name=f"{name}: ASR")
    fig.update_layout(xaxis={"title": f"k ({unit}s taken from the bottom model)", "dtick": 1},
                      yaxis={"range": [-1.05, 1.05], "title": "cosine similarity / ASR"}, height=400,
                      margin={"l": 40, "r": 20, "t": 30, "b": 40})
    return fig


def metric_bars(results: Mapping[str, Mapping[str, Any] | None], metrics: Sequence[str] = ("cacc", "asr")
                ) -> go.Figure:
    """Runs compared: per metric one trace, one bar per run (``results[run][metric]``, a fraction,
    drawn in %; a missing value draws 0)."""
    fig = go.Figure()
    runs = list(results)
    for metric in metrics:
        fig.add_trace(go.Bar(name=metric.upper(), x=runs,
                             y=[100 * float((results[r] or {}).get(metric) or 0) for r in runs]))
    fig.update_layout(barmode="group", yaxis=dict(title="%", range=[0, 100]), height=320,
                      margin=dict(l=40, r=10, t=30, b=30))
    return fig


SET_COLORS = {"clean": "#1f77b4", "triggered": "#d62728", "split": "#ff7f0e", "eda": "#2ca02c", "aeda": "#9467bd",
              "addtrig": "#8c564b"}


def embed_map_figure(res: Mapping[str, Any], *, color_by: str = "set", title: str = "") -> go.Figure:
    """The representation map (``analysis.embed_map``'s JSON): one trace per set (or per predicted
    label with ``color_by="pred"``), the set's distance ratio to the clean data in its legend entry."""
    points = res["points"]
    ratio = {row["set"]: row.get("knn_ratio") for row in res.get("summary", [])}
    fig = go.Figure()
    groups = list(dict.fromkeys(p[color_by] for p in points))
    for i, g in enumerate(groups):
        part = [p for p in points if p[color_by] == g]
        if color_by == "set":
            r = ratio.get(g)
            name = f"{g} (kNN distance x{r:.2f})" if r is not None and g != "clean" else str(g)
            color = SET_COLORS.get(str(g), MODEL_COLORS[i % len(MODEL_COLORS)])
        else:
            name, color = f"predicted {g}", MODEL_COLORS[i % len(MODEL_COLORS)]
        fig.add_trace(go.Scattergl(
            x=[p["x"] for p in part], y=[p["y"] for p in part], mode="markers", name=name,
            marker=dict(size=5, color=color, opacity=0.7),
            customdata=[[p["set"], p["pred"]] for p in part],
            hovertemplate="%{customdata[0]} · predicted %{customdata[1]}<extra></extra>"))
    fig.update_layout(title=title or f"{res.get('method', '').upper()} of the [CLS] representation",
                      height=460, margin=dict(l=10, r=10, t=40, b=10), legend=dict(itemsizing="constant"),
                      xaxis=dict(showticklabels=False), yaxis=dict(showticklabels=False))
    return fig


def score_histograms(clean: Sequence[float], poisoned: Sequence[float], threshold: float, *,
                     title: str = "") -> go.Figure:
    """A detector's scores on clean vs triggered inputs (higher: flagged), with its threshold."""
    fig = go.Figure()
    for name, values, color in (("clean", clean, MODEL_COLORS[0]), ("triggered", poisoned, TRIGGER_COLOR)):
        fig.add_trace(go.Histogram(x=list(values), name=name, marker_color=color, opacity=0.6, nbinsx=40))
    fig.add_vline(x=threshold, line=dict(color="black", dash="dash"), annotation_text="threshold")
    fig.update_layout(barmode="overlay", title=title, height=320, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis_title="score (higher: more suspicious)", yaxis_title="inputs")
    return fig
