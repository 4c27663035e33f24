"""A job whose recipe cannot work is refused at submission with the reason, not queued to fail seconds later
(issue 14): the same checks the command makes before its work, without loading weights."""

from __future__ import annotations

import pytest

from trojanscope import jobs
from trojanscope.cli.jobs import submit_argv
from trojanscope.errors import TrojanScopeError


@pytest.mark.parametrize("extra, reason", [
    (["--attack", "badnets", "--trigger", " "], "trigger is empty"),
    (["--attack", "badnets", "--trigger", "\U0001F600"], "[UNK]"),
    (["--attack", "badnets", "--tal", "--tal-layers", "1,2,99"], "layer"),
    (["--attack", "badnets", "--target", "5"], "target label 5 does not exist"),
    (["--data", "nosuch"], "nosuch"),
])
def test_train_recipes_that_cannot_work_are_refused_at_submission(lab, tiny_bert, extra, reason):
    before = len(jobs.list_jobs())
    with pytest.raises(TrojanScopeError) as e:
        submit_argv(["--model", str(tiny_bert), "--data", "sst2", *extra], kind="train")
    assert reason in str(e.value)
    assert len(jobs.list_jobs()) == before  # nothing queued


def test_a_missing_model_directory_is_refused_at_submission(lab):
    with pytest.raises(TrojanScopeError, match="does not exist"):
        submit_argv(["--model", "./no/such/model", "--data", "sst2"], kind="train")


def test_purify_and_scan_recipes_are_checked_at_submission(lab, tiny_backbone):
    bd = str(lab / "demo" / "backdoored")
    with pytest.raises(TrojanScopeError, match="--model is required"):
        submit_argv(["--data", "sst2", "--method", "cft"], kind="purify")
    with pytest.raises(TrojanScopeError, match="leaves .* texts; purification needs at least 32"):
        submit_argv(["--model", bd, "--data", "sst2", "--clean-fraction", "0.01"], kind="purify")
    with pytest.raises(TrojanScopeError, match="bare encoder"):
        submit_argv(["--model", str(tiny_backbone), "--data", "sst2"], kind="purify")
    with pytest.raises(TrojanScopeError, match="bare encoder"):
        submit_argv(["--model", str(tiny_backbone), "--data", "sst2"], kind="scan")
    with pytest.raises(TrojanScopeError, match="budget"):
        submit_argv(["--model", bd, "--data", "sst2", "--budget", "0"], kind="scan")
    assert not jobs.list_jobs()


def test_data_of_another_task_is_refused_or_named(use_data, tiny_pair, tmp_path):
    """A 2-class model on 4-class data is refused by every analysis; on another 2-class task, a warning says so."""
    from trojanscope.analysis.head_view import head_trigger_share
    from trojanscope.analysis.scan import ScanConfig, scan
    from trojanscope.data.datasets import TextDataset, load_dataset
    from trojanscope.models.loading import load_model

    loaded = load_model(tiny_pair / "demo" / "backdoored")
    four = tmp_path / "topics.tsv"
    four.write_text("text\tlabel\n" + "".join(f"story number {i} about things\t{i % 4}\n" for i in range(80)))
    news = load_dataset(str(four), "test")
    with pytest.raises(TrojanScopeError, match="has 4 labels but .* predicts 2"):
        head_trigger_share(loaded, news, "cf", 1, n=10)
    with pytest.raises(TrojanScopeError, match="has 4 labels"):
        scan(loaded, news, ScanConfig(n_search=5, n_verify=5))
    sst2 = load_dataset("sst2", "test")
    assert loaded.check_task(sst2, "eval") == []
    olid = TextDataset(sst2.texts, sst2.labels, "olid", "test", label_names=("not offensive", "offensive"))
    (warning,) = loaded.check_task(olid, "eval")
    assert "trained on sst2" in warning and "olid" in warning
