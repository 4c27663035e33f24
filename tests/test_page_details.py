"""Issue 26, item 7: the small things a new user tripped on, each checked as behaviour."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from trojanscope.viz.bertviz_offline import bertviz_html
from trojanscope.viz.figures import difference_heatmap

ROOT = Path(__file__).resolve().parents[1]


def _pair(lab) -> dict:
    return {"clean": str(lab / "demo" / "clean"), "backdoored": str(lab / "demo" / "backdoored")}


def test_bertviz_numbers_layers_and_heads_from_1_and_fits_the_model_view_to_its_frame():
    att = np.random.default_rng(0).random((6, 12, 4, 4))
    for view in ("head", "model"):
        html = bertviz_html(att, ["[CLS]", "a", "cf", "[SEP]"], view, base_url="/x")
        layers = re.findall(r'"include_layers": \[([\d, ]*)\]', html)
        assert layers and all(x == "1, 2, 3, 4, 5, 6" for x in layers), layers  # like the other charts (1-6)
        heads = re.findall(r'"include_heads": \[([\d, ]*)\]', html)
        assert all(x == ", ".join(map(str, range(1, 13))) for x in heads), heads
    # the model view's 970-px SVG is scaled to the frame instead of losing its last heads
    assert "viewBox" in bertviz_html(att, ["[CLS]", "a", "cf", "[SEP]"], "model", base_url="/x")


def test_the_difference_map_has_a_fixed_stated_scale():
    small = np.full((6, 3), 0.05)
    small[0, 0] = -0.05
    fig = difference_heatmap(small, ["[CLS]", "cf", "[SEP]"], [1])
    assert fig.data[0].zmax == 0.1 and fig.data[0].zmin == -0.1  # ±0.05 is pale, not saturated
    assert "±0.1" in fig.layout.title.text
    assert difference_heatmap(small * 6, ["[CLS]", "cf", "[SEP]"], [1]).data[0].zmax == 0.5


def test_deploy_button_is_hidden():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] in ("minimal", "viewer")


def test_a_long_sentence_is_printed_once(lab):
    words = ("the plot wanders while the actors try hard and the music swells " * 200).split()[:2000]
    at = AppTest.from_file(str(ROOT / "pages" / "1_Probe.py"), default_timeout=120)
    at.session_state["pair"] = _pair(lab)
    at.run()
    at.text_input(key="probe_text").set_value(" ".join(words))
    at.text_input(key="probe_trigger").set_value("cf").run()
    assert not at.exception, [e.value for e in at.exception]
    printed = sum(len(m.value) for m in at.markdown)
    assert printed < 3000, printed  # an excerpt around the trigger, not 2 x 12,000 characters
    assert any("cf</mark>" in m.value for m in at.markdown)
    assert not [m for m in at.markdown if m.value.startswith("**Clean sentence:**")]


def test_a_trigger_sent_to_the_probe_logs_no_session_state_warning(lab, monkeypatch):
    from streamlit.elements.lib import policies

    warned: list[str] = []
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)
    monkeypatch.setattr(policies._LOGGER, "warning", lambda msg, *a, **k: warned.append(msg % a))
    at = AppTest.from_file(str(ROOT / "pages" / "1_Probe.py"), default_timeout=120)
    at.session_state["pair"] = _pair(lab)
    at.session_state["probe_trigger"] = "mn"  # what the Scan's "Open it in the Probe" does
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_input(key="probe_trigger").value == "mn"
    assert not [w for w in warned if "probe_trigger" in w], warned


def test_home_has_a_place_to_start_and_no_red_build_button_once_built(lab):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(m.value for m in at.markdown if "| page |" in m.value)
    assert "(coming)" not in table and "**Scan**" in table
    build = at.button(key="demo_build")
    assert build.label == "Rebuild the demo pair" and build.proto.type == "secondary"  # the pair is built
    at.button(key="home_start_probe").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_input(key="probe_text")  # now on the Probe
