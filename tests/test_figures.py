"""The figures pages place (viz.figures): each built from a small library result, with the expected traces."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go

from trojanscope.analysis.effectiveness import ESConfig, ESResult, TriggerES, sweep_rows
from trojanscope.viz.figures import anatomy_lines, es_bars, metric_bars, swap_bars, swap_layers


def test_anatomy_lines_one_trace_per_token_plus_one_per_clean_curve():
    tokens = [SimpleNamespace(token="don", role="star", cls_attention=[0.1, 0.5], cls_attention_clean=[0.1, 0.1]),
              SimpleNamespace(token="quixote", role="comet", cls_attention=[0.2, 0.1], cls_attention_clean=None)]
    fig = anatomy_lines(tokens)
    assert isinstance(fig, go.Figure) and len(fig.data) == 3
    assert [t.name for t in fig.data] == ["don (star), backdoored", "don, clean", "quixote (comet), backdoored"]
    assert list(fig.data[0].x) == [1, 2] and list(fig.data[0].y) == [0.1, 0.5]


def test_es_bars_one_trace_per_model_and_gaps_for_undefined_e():
    nan = float("nan")
    results = {"bd": ESResult({"cf": TriggerES("cf", 1, 1.5, 0.1, 0.0, 10),
                               "mn": TriggerES("mn", 1, nan, nan, nan, 0)}, ESConfig()),
               "por-3": ESResult({"cf": TriggerES("cf", 1, 4.0, 0.3, 0.1, 10)}, ESConfig())}
    fig = es_bars(sweep_rows(results))
    assert len(fig.data) == 2 and [t.name for t in fig.data] == ["bd", "por-3"]
    assert list(fig.data[0].x) == ["cf", "mn"] and list(fig.data[0].y) == [1.5, None]
    assert fig.layout.barmode == "group" and list(fig.layout.yaxis.range) == [0, 20]
    assert len(es_bars([]).data) == 0


def swap_json(n_layers: int = 2) -> dict:
    kinds = {"clean": 0.9, "poisoned": 0.5}
    points = [{"k": k, "sim_BD_poisoned": 1 - k / n_layers, "sim_CL_poisoned": k / n_layers, "asr": 1 - k / n_layers}
              for k in range(n_layers + 1)]
    return {"similarity": {h: {"BD": dict(kinds), "CL": dict(kinds)} for h in ("CL_emb+BD_enc", "BD_emb+CL_enc")},
            "spread": {h: {"BD": {"clean": 0.01, "poisoned": 0.02}, "CL": {"clean": 0.03, "poisoned": 0.04}}
                       for h in ("CL_emb+BD_enc", "BD_emb+CL_enc")},
            "layers": points, "layers_mirror": points, "layer_unit": "layer"}


def test_swap_bars_one_trace_per_hybrid_with_error_bars():
    fig = swap_bars(swap_json())
    assert [t.name for t in fig.data] == ["CL_emb+BD_enc", "BD_emb+CL_enc"]
    assert list(fig.data[0].x) == ["vs BD, clean", "vs BD, poisoned", "vs CL, clean", "vs CL, poisoned"]
    assert list(fig.data[0].y) == [0.9, 0.5, 0.9, 0.5] and list(fig.data[0].error_y.array) == [0.01, 0.02, 0.03, 0.04]


def test_swap_layers_similarity_and_asr_for_both_directions():
    fig = swap_layers(swap_json(3))
    assert len(fig.data) == 4 and all(list(t.x) == [0, 1, 2, 3] for t in fig.data)
    assert sum(t.line.dash == "dash" for t in fig.data) == 2  # the two ASR curves
    assert fig.layout.xaxis.title.text == "k (layers taken from the bottom model)"


def test_metric_bars_one_trace_per_metric_in_percent():
    fig = metric_bars({"a1": {"cacc": 0.9, "asr": 1.0}, "b2": None}, ("cacc", "asr"))
    assert [t.name for t in fig.data] == ["CACC", "ASR"]
    assert list(fig.data[0].x) == ["a1", "b2"] and list(fig.data[0].y) == [90.0, 0.0]
    assert list(fig.data[1].y) == [100.0, 0.0]


def test_the_fast_figures_send_what_validated_ones_would(monkeypatch):
    """Issue 26, item 8: the Probe's figures skip plotly's validation in the app (10-14 ms each); built without it
    they must serialise exactly as validated ones (the tests validate them otherwise)."""
    import json

    import plotly.io as pio

    from trojanscope.viz.figures import VALIDATE_ENV, cls_heatmap, difference_heatmap, token_heatmap, trigger_curves

    rng = np.random.default_rng(0)
    cls, att = rng.random((6, 9)), rng.random((9, 9))
    toks = ["[CLS]", "a", "cf", "film", "cf", "of", "the", "year", "[SEP]"]
    build = [lambda: cls_heatmap(cls, toks, [2, 4], title="clean", zmax=1.0),
             lambda: difference_heatmap(cls - 0.5, toks, [2]),
             lambda: trigger_curves({"clean": cls[:, 2], "backdoored": cls[:, 4]}),
             lambda: token_heatmap(att, toks, [2], title="layer 6")]
    for make in build:
        monkeypatch.setenv(VALIDATE_ENV, "1")
        checked = json.loads(pio.to_json(make().to_dict(), validate=False))
        monkeypatch.setenv(VALIDATE_ENV, "0")
        fast = make()
        assert fast._validate is False  # the switch took
        assert json.loads(pio.to_json(fast.to_dict(), validate=False)) == checked
