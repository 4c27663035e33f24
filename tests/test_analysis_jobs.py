"""Issue 26, item 2: the long analyses (swap, anatomy, E and S, STRIP/RAP, the representation map) are tasks. The
pages run them as jobs: a bar with the time left and Cancel while one runs, the result shown when it ends without
a reload, kept for the same inputs (a revisit shows it without recomputing); the CLI runs the same task in the
foreground, ``jobs submit --kind <kind>`` queues it; an analysis never waits behind a long training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import finish_jobs, wait_for_job
from trojanscope import jobs
from trojanscope.cli import main
from trojanscope.cli.jobs import spec_of_argv, submit_argv
from trojanscope.errors import TrojanScopeError
from trojanscope.tasks import get_task
from trojanscope.tasks.analyses import (ANALYSIS_KINDS, AnatomyTaskSpec, EffectivenessTaskSpec, read_result)

ROOT = Path(__file__).resolve().parents[1]


def _rounded(obj):
    """``obj`` with every float to 5 decimals (two processes may sum in another order at the last bits)."""
    if isinstance(obj, float):
        return round(obj, 5)
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return obj


def test_every_analysis_is_a_task_on_its_own_lane_whose_spec_round_trips(tiny_pair, use_data):
    bd, clean = str(tiny_pair / "demo" / "backdoored"), str(tiny_pair / "demo" / "clean")
    assert set(ANALYSIS_KINDS) == {"swap", "anatomy", "effectiveness", "detect", "embed-map"}
    for kind in ANALYSIS_KINDS:
        task = get_task(kind)
        assert task.lane == "analysis" and task.output == "analysis"
    argvs = {"swap": ["--clean", clean, "--backdoored", bd, "--n", "8"],
             "anatomy": ["--model", bd, "--trigger", "Don Quixote", "--n", "8"],
             "effectiveness": ["--model", bd, "--triggers", "cf, mn,cf", "--max-eval", "8"],
             "detect": ["--model", bd, "--method", "strip", "--n", "8", "--frr", "0.05"],
             "embed-map": ["--model", bd, "--n", "12", "--method", "pca", "--augmentations", "split"]}
    for kind, argv in argvs.items():
        spec = spec_of_argv(argv, kind)
        assert spec.kind == kind
        again = get_task(kind).spec(json.loads(json.dumps(spec.to_dict())))
        assert again.to_dict() == spec.to_dict(), kind  # what the job store keeps is the whole recipe
    assert spec_of_argv(argvs["effectiveness"], "effectiveness").triggers == "cf,mn"  # parsed once, deduplicated
    assert spec_of_argv(argvs["detect"], "detect").knobs["frr"] == 0.05


def test_bad_inputs_are_refused_at_submit_with_what_is_allowed(tiny_pair, use_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TROJANSCOPE_RUNS_DIR", str(tmp_path / "runs"))
    bd = str(tiny_pair / "demo" / "backdoored")
    with pytest.raises(TrojanScopeError, match=r"\[UNK\]"):  # the tokenizer is read at once, no weights loaded
        jobs.submit(AnatomyTaskSpec(model=bd, trigger="🦄"))
    with pytest.raises(TrojanScopeError, match="empty trigger"):
        jobs.submit(AnatomyTaskSpec(model=bd, trigger="  "))
    with pytest.raises(TrojanScopeError, match="no trigger given"):
        jobs.submit(EffectivenessTaskSpec(models=[bd], triggers=" , "))
    with pytest.raises(TrojanScopeError, match="unknown detection method 'lime'; allowed: "):
        spec_of_argv(["--model", bd, "--method", "lime"], "detect")
    with pytest.raises(TrojanScopeError, match="must be an .html file"):
        spec_of_argv(["--model", bd, "--out", "map.png"], "embed-map")
    assert not (tmp_path / "runs" / "jobs.sqlite").exists() or not jobs.list_jobs()


@pytest.mark.slow
def test_an_analysis_job_starts_beside_a_running_training_and_matches_the_foreground_command(
        tiny_pair, tiny_bert, use_data, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    monkeypatch.setenv("TROJANSCOPE_RUNS_DIR", str(runs))
    bd, clean = str(tiny_pair / "demo" / "backdoored"), str(tiny_pair / "demo" / "clean")
    training = submit_argv(["--model", str(tiny_bert), "--data", "sst2", "--max-train", "64", "--max-eval", "32",
                            "--epochs", "3", "--batch-size", "8", "--attack", "badnets", "--poison-rate", "0.25"])
    second = submit_argv(["--model", str(tiny_bert), "--data", "sst2", "--max-train", "64", "--max-eval", "32",
                          "--epochs", "1", "--batch-size", "8", "--attack", "badnets", "--seed", "1"])
    argv = ["--model", bd, "--clean", clean, "--trigger", "Don Quixote", "--n", "12"]
    try:
        anatomy = submit_argv(argv, "anatomy")
        assert jobs.get(training).status == "running" and jobs.get(second).status == "queued"  # the main lane: one
        assert jobs.get(anatomy).status == "running"  # the analysis lane had room: it did not queue behind them
        job = wait_for_job(anatomy, 180)
        assert job.status == "done", (job.error, jobs.log_tail(anatomy))
    finally:
        for j in (training, second):
            if not jobs.get(j).finished:
                jobs.cancel(j, grace=2.0)
    full = read_result(job.out_dir)
    assert main(["anatomy", *argv, "--json"]) == 0
    here = json.loads(capsys.readouterr().out)
    assert _rounded(full) == _rounded(here)  # the same task, in the foreground: the same numbers
    assert [t["role"] for t in full["tokens"]].count("star") == 1
    assert job.result["flip_rate"] == pytest.approx(here["flip_rate"], abs=1e-5)
    record = json.loads((Path(job.out_dir) / "result.json").read_text())
    assert record["kind"] == "anatomy" and record["spec"]["trigger"] == "Don Quixote"  # repeatable from its record


@pytest.mark.slow
def test_the_detector_and_the_map_keep_their_bulk_in_the_file_not_the_job_store(tiny_pair, use_data, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setenv("TROJANSCOPE_RUNS_DIR", str(tmp_path / "runs"))
    bd = str(tiny_pair / "demo" / "backdoored")
    det = submit_argv(["--model", bd, "--method", "strip", "--n", "16", "--copies", "2"], "detect")
    emb = submit_argv(["--model", bd, "--n", "16", "--method", "pca", "--augmentations", "split"], "embed-map")
    for job_id in (det, emb):
        assert wait_for_job(job_id, 180).status == "done", jobs.log_tail(job_id)
    d, e = jobs.get(det), jobs.get(emb)
    assert "scores_clean" not in d.result and len(read_result(d.out_dir)["scores_clean"]) == 16
    assert 0 <= d.result["auroc"] <= 1 and d.result["method"] == "strip"
    assert "points" not in e.result and len(read_result(e.out_dir)["points"]) >= 16 * 3  # clean, triggered, split
    with pytest.raises(TrojanScopeError, match="no analysis result"):
        read_result(tmp_path / "nowhere")


def _anatomy_page(lab) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "2_Trigger_Anatomy.py"), default_timeout=120)
    at.session_state["pair"] = {"clean": str(lab / "demo" / "clean"), "backdoored": str(lab / "demo" / "backdoored")}
    at.run()
    at.text_input(key="anat_trigger").set_value("Don Quixote")
    at.number_input(key="anat_n").set_value(20)
    return at.run()


@pytest.mark.slow
def test_the_anatomy_page_runs_a_job_shows_it_when_done_and_again_on_a_revisit(lab):
    at = _anatomy_page(lab)
    assert not at.get("plotly_chart")  # nothing computed before the click
    at.button(key="anat_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (job,) = jobs.list_jobs(kind="anatomy")
    # while it runs (a job process takes seconds to start): its bar and a Cancel button, no spinner holding the page
    assert any(job.id in p.proto.text for p in at.get("progress")), [p.proto.text for p in at.get("progress")]
    assert [b for b in at.button if b.key == f"anatomy_cancel_{job.id}"]
    finish_jobs()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "anat_lines" in {el.key for el in at.get("plotly_chart")}
    # (the "finished" notice and the rerun come from the live bar's poll: tests/test_jobwatch.py, the browser test)
    assert not [b for b in at.button if b.key and b.key.startswith("anatomy_cancel_")]  # no stale Cancel
    roles = list(at.dataframe[0].value["role"])
    assert roles.count("star") == 1
    # a new session (a revisit, another tab) with the same inputs shows it without a click or a new job
    again = _anatomy_page(lab)
    assert "anat_lines" in {el.key for el in again.get("plotly_chart")}
    assert any(job.id in c.value for c in again.caption)  # which run it comes from
    assert len(jobs.list_jobs(kind="anatomy")) == 1


@pytest.mark.slow
def test_cancel_under_the_bar_stops_the_job_and_goes(lab):
    at = _anatomy_page(lab)
    at.number_input(key="anat_n").set_value(2000).run()
    at.button(key="anat_go").click().run()
    (job,) = jobs.list_jobs(kind="anatomy")
    cancel = [b for b in at.button if b.key == f"anatomy_cancel_{job.id}"]
    assert cancel, [b.key for b in at.button]
    cancel[0].click().run()
    assert jobs.get(job.id).status == "cancelled"
    assert any("cancelled" in i.value for i in at.info)
    assert not [b for b in at.button if b.key and b.key.startswith("anatomy_cancel_")]
    assert "anat_lines" not in {el.key for el in at.get("plotly_chart")}


@pytest.mark.slow
def test_a_second_click_runs_nothing_twice_and_a_rebuilt_model_or_other_data_make_the_result_stale(
        tiny_pair, data_dir, tmp_path, monkeypatch):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(tiny_pair / "demo", runs / "demo")  # a copy: this test rewrites a model in place
    monkeypatch.setenv("TROJANSCOPE_RUNS_DIR", str(runs))
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(data_dir))
    monkeypatch.chdir(ROOT)
    at = _anatomy_page(runs)
    at.button(key="anat_go").click().run()
    at.button(key="anat_go").click().run()  # pressed again while the first runs: its bar, not a second job
    assert len(jobs.list_jobs(kind="anatomy")) == 1
    finish_jobs()
    assert "anat_lines" in {el.key for el in _anatomy_page(runs).get("plotly_chart")}
    other = tmp_path / "other-data"
    shutil.copytree(data_dir, other)  # the same texts in another data directory: another source, not this result
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(other))
    assert "anat_lines" not in {el.key for el in _anatomy_page(runs).get("plotly_chart")}
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(data_dir))
    assert "anat_lines" in {el.key for el in _anatomy_page(runs).get("plotly_chart")}
    card = runs / "demo" / "backdoored" / "config.json"
    card.write_text(card.read_text())  # the model rewritten in place (a rebuild): same path, new files
    stale = _anatomy_page(runs)
    assert "anat_lines" not in {el.key for el in stale.get("plotly_chart")}  # not the old model's result


def test_a_command_in_the_foreground_draws_an_event_only_task_as_a_bar(capsys):
    """The scan and the analyses report progress only as events: run in the foreground with progress wanted and no
    listener (``trojanscope scan`` without --json), their events are drawn as a bar on stderr; a job's listener,
    or no progress, gets them as before and nothing is drawn."""
    from dataclasses import dataclass

    from trojanscope.tasks.base import Event, Task, TaskSpec

    @dataclass
    class _Spec(TaskSpec):
        kind = "probe-bar"
        out: str | None = None

    def run(spec, on_event, progress):
        for k in range(4):
            if on_event:
                on_event(Event("stage", message=f"phase {k}") if k == 2 else Event("step", k + 1, 4))
        return {"events_seen": on_event is not None}

    task = Task("probe-bar", _Spec, run, bar_from_events=True)
    assert task.run(_Spec(), progress=True) == {"events_seen": True}
    err = capsys.readouterr().err
    assert "probe-bar" in err and "100%" in err and "phase 2" in err
    seen: list = []
    assert task.run(_Spec(), on_event=seen.append, progress=True) == {"events_seen": True} and len(seen) == 4
    assert task.run(_Spec(), progress=False) == {"events_seen": False}
    assert Task("plain", _Spec, run).run(_Spec(), progress=True) == {"events_seen": False}  # draws its own bars
    assert capsys.readouterr().err == ""

    def refused(spec, on_event, progress):
        on_event(Event("stage", message="loading"))
        raise TrojanScopeError("bad input")  # refused before any progress: no bar drawn around the error

    with pytest.raises(TrojanScopeError):
        Task("probe-bar", _Spec, refused, bar_from_events=True).run(_Spec(), progress=True)
    assert capsys.readouterr().err == ""
