"""Trustworthy by construction (issue 11, items 1-4, 6, 7): what the dashboard may read and write,
safe --overwrite, refused remote code and mistyped paths, pages that never crash, a model cache that
sees a rebuilt model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import tomllib
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from conftest import finish_jobs, make_tiny
from trojanscope.errors import TrojanScopeError
from trojanscope.paths import (ALLOW_ANY_PATH_ENV, check_ui_data_source, check_ui_data_sources, check_ui_model_source,
                               check_under_runs, slugify, weights_identity)
from trojanscope.utils import atomic_directory, check_output_dir, write_json

ROOT = Path(__file__).resolve().parents[1]
OTHER = "Other: a local directory or a hub id"


@pytest.fixture()
def roots(tmp_path, monkeypatch):
    """A working directory with runs/ and data/ (the data directory through the environment)."""
    work = tmp_path / "work"
    (work / "runs" / "m").mkdir(parents=True)
    (work / "data" / "sst2").mkdir(parents=True)
    (work / "data" / "mine.csv").write_text("text,label\nfine,1\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("password,label\nhunter2,1\n")
    monkeypatch.chdir(work)
    monkeypatch.setenv("TROJANSCOPE_RUNS_DIR", "runs")
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(work / "data"))
    monkeypatch.delenv(ALLOW_ANY_PATH_ENV, raising=False)
    return work, outside


# --- 1. the dashboard: localhost, and typed paths limited to runs/ and the data directory ----------

def test_the_dashboard_listens_on_localhost_only():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost"
    assert config["server"]["headless"] is True and config["server"]["enableStaticServing"] is True
    assert "--server.address 0.0.0.0" in (ROOT / "README.md").read_text()
    # an open tab must not keep a core busy: no file watcher walking the checkout (and .venv)
    assert config["server"]["fileWatcherType"] == "none" and config["server"]["runOnSave"] is False


def test_typed_model_sources_are_limited_to_runs_and_data(roots, monkeypatch):
    work, outside = roots
    (work / "runs" / "link").symlink_to(outside, target_is_directory=True)
    for ok in ("minilm", "runs/m", str(work / "runs" / "m"), "runs/not-yet", "data/sst2", " runs/m "):
        assert check_ui_model_source(ok) == ok.strip()
    for bad in (str(outside), "runs/../../outside", "runs/link", "/etc", "~", "bert-base-uncased",
                "textattack/bert-base-uncased-SST-2", "../outside"):
        with pytest.raises(TrojanScopeError) as err:
            check_ui_model_source(bad)
        message = str(err.value)
        assert ALLOW_ANY_PATH_ENV in message and str(work / "runs") in message and "\n" not in message
    with pytest.raises(TrojanScopeError, match="no model given"):
        check_ui_model_source("  ")
    monkeypatch.setenv(ALLOW_ANY_PATH_ENV, "1")
    for bad in (str(outside), "runs/link", "bert-base-uncased"):
        assert check_ui_model_source(bad) == bad


def test_typed_data_sources_are_limited_to_named_sets_data_and_runs(roots, monkeypatch):
    work, outside = roots
    for ok in ("sst2", "imdb", "data/mine.csv", str(work / "data" / "mine.csv"), "runs/m/x.tsv"):
        assert check_ui_data_source(ok) == ok
    assert check_ui_data_sources("sst2, olid,data/mine.csv") == "sst2, olid,data/mine.csv"
    for bad in (str(outside / "secret.csv"), "data/../../outside/secret.csv", "/etc/passwd", "hf:imdb"):
        with pytest.raises(TrojanScopeError) as err:
            check_ui_data_source(bad)
        assert ALLOW_ANY_PATH_ENV in str(err.value) and "hunter2" not in str(err.value)
    with pytest.raises(TrojanScopeError, match=ALLOW_ANY_PATH_ENV):
        check_ui_data_sources(f"sst2,{outside / 'secret.csv'}")
    monkeypatch.setenv(ALLOW_ANY_PATH_ENV, "1")
    assert check_ui_data_source(str(outside / "secret.csv")) == str(outside / "secret.csv")
    assert check_ui_data_source("hf:imdb") == "hf:imdb"


def test_data_errors_never_echo_a_files_contents(roots):
    from trojanscope.data.datasets import load_dataset

    _, outside = roots
    with pytest.raises(TrojanScopeError) as err:
        load_dataset(str(outside / "secret.csv"))
    assert "password" not in str(err.value) and "expected one of text, sentence" in str(err.value)
    with pytest.raises(TrojanScopeError) as err:
        load_dataset(str(outside / "secret.csv"), text_column="nope")
    assert "password" not in str(err.value)
    (outside / "lab.csv").write_text("text,label\nfine,hunter2\n")
    with pytest.raises(TrojanScopeError) as err:
        load_dataset(str(outside / "lab.csv"))
    assert "hunter2" not in str(err.value) and "line 2" in str(err.value)


@pytest.fixture()
def app_runs(tiny_pair, data_dir, monkeypatch):
    monkeypatch.setenv("TROJANSCOPE_RUNS_DIR", str(tiny_pair))
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(data_dir))
    monkeypatch.delenv(ALLOW_ANY_PATH_ENV, raising=False)
    monkeypatch.chdir(ROOT)
    return tiny_pair


def test_home_page_refuses_a_typed_directory_outside_runs(app_runs, tiny_bert):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.selectbox(key="pick_clean").set_value(OTHER).run()
    at.text_input(key="other_clean").set_value(str(tiny_bert)).run()
    assert not at.exception
    assert at.session_state["pair"]["clean"] is None  # never loaded, its card never read
    assert any(ALLOW_ANY_PATH_ENV in e.value for e in at.error)
    # a model found under runs/ typed by hand is fine
    at.text_input(key="other_clean").set_value(str(app_runs / "demo" / "clean")).run()
    assert not at.exception and not at.error
    assert at.session_state["pair"]["clean"] == str(app_runs / "demo" / "clean")


def test_pages_refuse_models_and_data_outside_runs_and_data(app_runs, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("password,label\nhunter2,1\n")
    # a pair that names a directory outside runs/ (e.g. from an older session): the page refuses it
    probe = AppTest.from_file(str(ROOT / "pages" / "1_Probe.py"), default_timeout=60)
    probe.session_state["pair"] = {"clean": str(tmp_path), "backdoored": str(app_runs / "demo" / "backdoored")}
    probe.run()
    assert not probe.exception
    assert any(ALLOW_ANY_PATH_ENV in e.value for e in probe.error)
    swap = AppTest.from_file(str(ROOT / "pages" / "3_Embedding_Swap.py"), default_timeout=60).run()
    swap.text_input(key="swap_data").set_value(str(secret)).run()
    swap.button(key="swap_run").click().run()
    assert not swap.exception
    shown = " ".join(e.value for e in swap.error)
    assert ALLOW_ANY_PATH_ENV in shown and "hunter2" not in shown and "password" not in shown


# --- 2. output names are slugs; the dashboard writes only under runs/ --------------------------------

def test_slugify_makes_safe_bounded_names():
    for text in ("/../../../../tmp/x", "..", "", "   ", "🦄", "-rf", "Don Quixote", "a" * 500, "x/y\\z:..\0"):
        slug = slugify(text)
        assert slug and len(slug) <= 48 and set(slug) <= set("abcdefghijklmnopqrstuvwxyz0123456789-_")
        assert not slug.startswith(("-", ".")) and "/" not in slug
    assert slugify("Don Quixote") == "don-quixote" and slugify("cf") == "cf"
    assert slugify("/../../tmp/x") == "tmp-x" and slugify("", fallback="model") == "model"
    assert len(slugify("a" * 500, 24)) == 24


def test_check_under_runs(roots):
    work, outside = roots
    (work / "runs" / "link").symlink_to(outside, target_is_directory=True)
    assert check_under_runs("runs/attacks/x") == work / "runs" / "attacks" / "x"
    for bad in ("runs", "runs/../x", "runs/attacks/../../x", "/tmp/x", str(outside / "x"), "runs/link/x"):
        with pytest.raises(TrojanScopeError, match="not inside the runs directory"):
            check_under_runs(bad)


def test_the_lab_names_outputs_with_slugs_and_submits_only_under_runs(app_runs, monkeypatch):
    from dataclasses import replace

    from trojanscope import jobs
    from trojanscope.tasks import TrainTaskSpec
    from ui.common import ui_job_spec

    submitted: list = []
    monkeypatch.setattr(jobs, "submit", lambda spec, kind=None, argv=None: submitted.append(spec) or "j0")
    at = AppTest.from_file(str(ROOT / "pages" / "4_Attack_Lab.py"), default_timeout=60).run()
    at.text_input(key="lab_trigger_badnets").set_value("/../../../../../../tmp/x").run()
    at.button(key="lab_launch").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (spec,) = submitted
    assert isinstance(spec, TrainTaskSpec) and spec.spec.poison.trigger == "/../../../../../../tmp/x"
    out = Path(spec.out)
    assert out.resolve().parent == (app_runs / "attacks").resolve()
    assert out.name.startswith("badnets-tmp-x-p1-tal-s0-") and ".." not in out.name
    # what the page checks before submitting
    assert ui_job_spec(spec) is spec
    with pytest.raises(TrojanScopeError, match="not inside the runs directory"):
        ui_job_spec(replace(spec, out=str(app_runs / "attacks" / ".." / ".." / "elsewhere")))
    with pytest.raises(TrojanScopeError, match=ALLOW_ANY_PATH_ENV):
        ui_job_spec(replace(spec, spec=replace(spec.spec, model="/etc")))
    with pytest.raises(TrojanScopeError, match=ALLOW_ANY_PATH_ENV):
        ui_job_spec(replace(spec, spec=replace(spec.spec, data="sst2,/etc/passwd.csv")))


# --- 3. --overwrite replaces only an empty directory or a saved model, never leaving neither ------------

def _model_dir(path: Path, tag: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / "trojanscope.json", {"base_model": tag})
    (path / "model.safetensors").write_text(tag)
    return path


def _write(tmp: Path, tag: str) -> None:
    _model_dir(tmp, tag)


def _tag(path: Path) -> str:
    return (path / "model.safetensors").read_text()


def test_overwrite_refuses_a_directory_that_is_not_a_model(tmp_path):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(TrojanScopeError, match="only an empty directory or a saved model") as err:
        with atomic_directory(out, overwrite=True) as tmp:
            _write(tmp, "new")
    assert "\n" not in str(err.value)
    assert (out / "thesis.tex").read_text() == "years of work"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".home.")]  # no temporary left
    with pytest.raises(TrojanScopeError, match="already exists"):
        check_output_dir(out, overwrite=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(TrojanScopeError, match="a file or a link"):
        check_output_dir(tmp_path / "file", overwrite=True)


def test_overwrite_refuses_early_in_run_training(tmp_path, tiny_bert, use_data):
    from trojanscope.training.pipeline import TrainSpec, run_training

    out = tmp_path / "notes"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(TrojanScopeError, match="only an empty directory or a saved model"):
        run_training(TrainSpec(model=str(tiny_bert)), out, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_a_saved_model_or_an_empty_directory(tmp_path):
    out = _model_dir(tmp_path / "m", "old")
    with atomic_directory(out, overwrite=True) as tmp:
        _write(tmp, "new")
    assert _tag(out) == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no backup, no temporary left
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_directory(empty, overwrite=True) as tmp:
        _write(tmp, "new")
    assert _tag(empty) == "new"


def _failing_rename(monkeypatch, fail_calls: set[int]):
    """Path.rename that raises on the given (1-based) calls, as a crash there would."""
    real = Path.rename
    calls = {"n": 0}

    def rename(self, target):
        calls["n"] += 1
        if calls["n"] in fail_calls:
            raise OSError(f"simulated crash on rename {calls['n']}")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    return calls


def test_a_failure_between_the_renames_keeps_the_old_model(tmp_path, monkeypatch):
    out = _model_dir(tmp_path / "m", "old")
    _failing_rename(monkeypatch, {2})  # old -> backup works, tmp -> out fails
    with pytest.raises(OSError, match="simulated crash"):
        with atomic_directory(out, overwrite=True) as tmp:
            _write(tmp, "new")
    assert _tag(out) == "old"  # put back at once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_crash_between_the_renames_is_recovered_by_the_next_call(tmp_path, monkeypatch):
    out = _model_dir(tmp_path / "m", "old")
    calls = _failing_rename(monkeypatch, {2, 3})  # the process dies: nothing is put back
    with pytest.raises(OSError, match="simulated crash"):
        with atomic_directory(out, overwrite=True) as tmp:
            _write(tmp, "new")
    assert not out.exists()
    (backup,) = [p for p in tmp_path.iterdir() if p.name.startswith(".m.old-")]
    assert _tag(backup) == "old"  # the old model is still there, aside
    calls["n"] = 100  # the next process: renames work
    with pytest.raises(TrojanScopeError, match="already exists"):  # recovered, then refused without --overwrite
        with atomic_directory(out):
            pass
    assert _tag(out) == "old" and not backup.exists()
    with atomic_directory(out, overwrite=True) as tmp:
        _write(tmp, "new")
    assert _tag(out) == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_sigterm_during_the_swap_waits_until_the_new_model_is_in_place(tmp_path, monkeypatch):
    out = _model_dir(tmp_path / "m", "old")
    seen: list[str] = []

    def on_term(signum, frame):
        seen.append(_tag(out) if out.exists() else "neither")
        raise KeyboardInterrupt  # what a job does with SIGTERM

    previous = signal.signal(signal.SIGTERM, on_term)
    real = Path.rename

    def rename(self, target):
        if Path(target).name.startswith(".m.old-"):
            os.kill(os.getpid(), signal.SIGTERM)  # arrives between the two renames
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    try:
        with pytest.raises(KeyboardInterrupt):
            with atomic_directory(out, overwrite=True) as tmp:
                _write(tmp, "new")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == ["new"] and _tag(out) == "new"
    assert signal.getsignal(signal.SIGTERM) is previous


def test_atomic_directory_works_outside_the_main_thread(tmp_path):
    out = _model_dir(tmp_path / "m", "old")
    errors: list[BaseException] = []

    def work():
        try:
            with atomic_directory(out, overwrite=True) as tmp:
                _write(tmp, "new")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert not errors and _tag(out) == "new"


# --- 4. loading: remote code refused, mistyped local paths named ---------------------------------------

@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_a_model_asking_for_remote_code_is_refused_before_loading(tmp_path, monkeypatch, where):
    import transformers

    from trojanscope.models import load_model, load_tokenizer

    path = make_tiny(tmp_path, "bert")
    cfg = json.loads((path / where).read_text())
    cfg["auto_map"] = {"AutoModelForSequenceClassification": "evil.EvilModel", "AutoConfig": "evil.EvilConfig"}
    (path / where).write_text(json.dumps(cfg))

    def never(*a, **k):
        raise AssertionError("nothing may be loaded from a model that asks for remote code")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", never)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", never)
    for load in (load_model, load_tokenizer):
        with pytest.raises(TrojanScopeError, match="asks for remote code \\(auto_map\\)") as err:
            load(path)
        assert where in str(err.value) and "\n" not in str(err.value)


def test_a_hub_config_asking_for_remote_code_is_refused(monkeypatch):
    import transformers

    from trojanscope.models import load_model

    class Config:
        model_type = "bert"
        auto_map = {"AutoModel": "evil.Model"}
        architectures = ["BertForSequenceClassification"]
        num_labels = 2

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda *a, **k: Config())
    with pytest.raises(TrojanScopeError, match="asks for remote code"):
        load_model("some-org/some-model")


def test_a_mistyped_local_path_is_not_tried_on_the_hub(tmp_path, monkeypatch):
    from trojanscope.models import resolve_source

    monkeypatch.chdir(tmp_path)
    for text in ("runs/x", "data/x"):  # runs/ and data/ need not exist: never hub ids
        with pytest.raises(TrojanScopeError, match=f"^no such directory: {text}"):
            resolve_source(text)
    assert resolve_source("bert-base-uncased") == ("hub", "bert-base-uncased")
    assert resolve_source("textattack/bert-base-uncased-SST-2") == ("hub", "textattack/bert-base-uncased-SST-2")
    (tmp_path / "textattack").mkdir()  # now "textattack/..." names a local path that does not exist
    with pytest.raises(TrojanScopeError, match="^no such directory: textattack/bert-base-uncased-SST-2"):
        resolve_source("textattack/bert-base-uncased-SST-2")
    (tmp_path / "runs" / "x").mkdir(parents=True)
    assert resolve_source("runs/x") == ("local", "runs/x")


# --- 6. Trigger Anatomy with undefined E and S ----------------------------------------------------

def test_anatomy_page_shows_undefined_e_and_s_without_an_exception(tiny_pair, tmp_path, monkeypatch):
    from trojanscope.analysis.effectiveness import model_predictor, trigger_class
    from trojanscope.models import load_model

    cls = trigger_class(model_predictor(load_model(tiny_pair / "demo" / "backdoored")), "mn")
    data = tmp_path / "data"
    (data / "sst2").mkdir(parents=True)  # every test sample is of the trigger's class: none is eligible
    (data / "sst2" / "test.tsv").write_text("text\tlabel\n" + "".join(f"the movie number {i}\t{cls}\n"
                                                                       for i in range(30)))
    runs = tmp_path / "runs"  # its own: the E and S job and its result go there
    runs.mkdir()
    (runs / "demo").symlink_to(tiny_pair / "demo")
    monkeypatch.setenv("TROJANSCOPE_RUNS_DIR", str(runs))
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(data))
    monkeypatch.setenv(ALLOW_ANY_PATH_ENV, "1")  # the symlinked pair resolves outside this runs directory
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "pages" / "2_Trigger_Anatomy.py"), default_timeout=120).run()
    at.text_input(key="es_triggers").set_value("mn").run()
    at.number_input(key="es_n").set_value(20).run()
    at.button(key="es_go").click().run()
    finish_jobs()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    es = at.dataframe[0].value
    row = es.set_index("trigger").loc["mn"]
    assert row["n"] == 0 and row["E"] != row["E"] and row["S"] != row["S"]  # NaN: undefined, shown empty
    assert any("undefined" in i.value for i in at.info)


# --- 7. a model rebuilt in place is picked up -------------------------------------------------------

def _rebuild(src: Path, out: Path) -> None:
    with atomic_directory(out, overwrite=True) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        write_json(tmp / "trojanscope.json", {"base_model": str(src)})


def test_weights_identity_changes_when_a_model_is_rebuilt(tmp_path):
    a, b = make_tiny(tmp_path, "bert", seed=1), make_tiny(tmp_path, "bert", seed=2)
    out = tmp_path / "runs" / "m"
    _rebuild(a, out)
    first = weights_identity(out)
    assert first and first == weights_identity(out) and first == weights_identity(f" {out} ")
    _rebuild(b, out)
    assert weights_identity(out) != first
    assert weights_identity("no/such/dir") == () and weights_identity("bert-base-uncased") == ()
    assert weights_identity("minilm")  # the built-in backbone is a local directory too


def test_the_model_cache_serves_the_rebuilt_weights(tmp_path, monkeypatch):
    from ui import common

    runs = tmp_path / "runs"
    monkeypatch.setenv("TROJANSCOPE_RUNS_DIR", str(runs))
    a, b = make_tiny(tmp_path, "bert", seed=1), make_tiny(tmp_path, "bert", seed=2)
    out = runs / "demo" / "backdoored"
    _rebuild(a, out)
    common._load_cached.clear()

    def weight(m):
        return m.model.bert.embeddings.word_embeddings.weight[:5].clone()

    first = common.get_model(str(out))
    assert first is not None and common.get_model(str(out)) is first  # cached while unchanged
    _rebuild(b, out)
    second = common.get_model(str(out))
    assert second is not first and not torch.equal(weight(first), weight(second))
    from trojanscope.models import load_model

    assert torch.equal(weight(second), weight(load_model(b)))
    common._load_cached.clear()


def test_the_dashboard_device_follows_the_hardware_and_the_override(monkeypatch):
    """Analyses run on the GPU when there is one; TROJANSCOPE_UI_DEVICE overrides it, and a device the machine
    lacks is refused with the reason (get_model shows it in an error box)."""
    import torch

    from trojanscope.errors import TrojanScopeError
    from ui.common import ui_device

    monkeypatch.delenv("TROJANSCOPE_UI_DEVICE", raising=False)
    assert ui_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("TROJANSCOPE_UI_DEVICE", "cpu")
    assert ui_device() == "cpu"
    if not torch.cuda.is_available():
        monkeypatch.setenv("TROJANSCOPE_UI_DEVICE", "cuda")
        with pytest.raises(TrojanScopeError, match="no CUDA GPU"):
            ui_device()
