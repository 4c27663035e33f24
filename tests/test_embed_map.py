"""The representation map: every set is placed, and the distance to the clean data is measured in
the representation space, so that text unlike the clean data scores far from it."""

from __future__ import annotations

import numpy as np
import pytest

from trojanscope.analysis.embed_map import MapConfig, distances, representation_map
from trojanscope.data.datasets import load_dataset
from trojanscope.defenses.augmentations import augmentations
from trojanscope.errors import TrojanScopeError
from trojanscope.models import load_model
from trojanscope.viz.figures import embed_map_figure


def test_augmentations_are_seeded_and_keep_labels():
    reg = augmentations()
    assert reg.names()[:1] == ["split"] and {"eda", "aeda", "addtrig"} <= set(reg.names())
    texts, labels = ["the movie was really quite wonderful and moving", "a dull plot"], [1, 0]
    for name in reg.names():
        a, la = reg[name].run(texts, labels, k=2, seed=0)
        b, _ = reg[name].run(texts, labels, k=2, seed=0)
        assert a == b and la == [1, 1, 0, 0] and len(a) == 4, name
    out, _ = reg["addtrig"].run(texts, labels, k=1, seed=1)
    assert all(o.split().count("cb") == 1 for o in out)
    out, _ = reg["aeda"].run(texts, labels, k=1, seed=1)
    assert all(set(o.split()) - set(t.split()) <= set(".;?:!,") for o, t in zip(out, texts))


def test_distance_ratio_is_one_for_clean_like_points_and_large_for_far_ones():
    rng = np.random.default_rng(0)
    clean = rng.normal(size=(200, 8))
    near = rng.normal(size=(100, 8))
    far = rng.normal(size=(100, 8)) + 6.0
    reps = np.concatenate([clean, near, far])
    sets = ["clean"] * 200 + ["near"] * 100 + ["far"] * 100
    ratio, sil = distances(reps, sets, k=5)
    assert ratio["clean"] == 1.0 and 0.8 < ratio["near"] < 1.3 and ratio["far"] > 2.0
    assert sil["far"] > 0.5 > abs(sil["near"])


def test_map_of_a_backdoored_model(use_data, tiny_pair):
    loaded = load_model(tiny_pair / "demo" / "backdoored")
    res = representation_map(loaded, load_dataset("sst2", "test"), MapConfig(n=40, method="pca", k=5))
    assert res.trigger == "cf"  # from the card
    assert res.coords.shape == (40 * 6, 2) and set(res.sets) == {"clean", "triggered", "split", "eda", "aeda",
                                                                "addtrig"}
    summary = {row["set"]: row for row in res.summary()}
    # the backdoored model sends triggered text to its target: it predicts 1 for (nearly) all of them
    assert summary["triggered"]["predicted"].get(1, 0) >= 0.9
    fig = embed_map_figure(res.to_json())
    assert len(fig.data) == 6 and "kNN distance" in fig.data[1].name
    with pytest.raises(TrojanScopeError, match="unknown map method"):
        representation_map(loaded, load_dataset("sst2", "test"), MapConfig(n=40, method="mds"))


def test_cli_embed_map_writes_a_self_contained_html(use_data, tiny_pair, tmp_path, capsys):
    import json

    from trojanscope.cli import main

    out = tmp_path / "map.html"
    code = main(["embed-map", "--model", str(tiny_pair / "demo" / "backdoored"), "--n", "30", "--method", "pca",
                 "--k", "5", "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    res = json.loads(capsys.readouterr().out)
    assert res["trigger"] == "cf" and {r["set"] for r in res["summary"]} >= {"clean", "triggered", "split"}
    html = out.read_text()
    assert "plotly" in html.lower() and '<script src="http' not in html  # plotly.js is inlined: no CDN fetch
    assert main(["embed-map", "--model", str(tiny_pair / "demo" / "backdoored"), "--out", str(tmp_path / "x.png")]) == 2
