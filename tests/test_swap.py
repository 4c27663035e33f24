"""Embedding swap (methods.md 3a): hybrids built from the right parts, identity case, per-layer ends,
mismatch refusals, other architectures, the CLI and the page."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from conftest import finish_jobs, make_tiny
from trojanscope.analysis.swap import HYBRIDS, MODELS, SwapConfig, embedding_swap
from trojanscope.cli import main
from trojanscope.data.datasets import load_dataset
from trojanscope.errors import TrojanScopeError
from trojanscope.models.loading import LoadedModel, load_model
from trojanscope.models.swap import check_compatible, depth_hybrid, num_units, swap_embeddings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def swap_root(tmp_path_factory) -> Path:
    """Own directory for extra tiny models (make_tiny names them by arch/seed only)."""
    return tmp_path_factory.mktemp("swap-models")


@pytest.fixture(scope="module")
def pair(tiny_pair) -> tuple[LoadedModel, LoadedModel]:
    return load_model(tiny_pair / "demo" / "clean"), load_model(tiny_pair / "demo" / "backdoored")


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_parts(hybrid: torch.nn.Module, owner_of) -> None:
    """Every tensor of ``hybrid`` equals (exactly) the one of the model ``owner_of(key)`` returns."""
    for key, value in hybrid.state_dict().items():
        assert torch.equal(value, owner_of(key).state_dict()[key]), key


def test_hybrids_take_embeddings_from_the_donor_and_the_rest_from_the_receiver(pair):
    cl, bd = pair
    before = {"CL": state(cl.model), "BD": state(bd.model)}
    emb = [k for k in before["CL"] if k.startswith("bert.embeddings.")]
    assert emb and any(not torch.equal(before["CL"][k], before["BD"][k]) for k in emb)  # the test can fail
    assert any(not torch.equal(before["CL"][k], before["BD"][k]) for k in before["CL"] if k.startswith("bert.encoder."))

    cl_bd = swap_embeddings(bd.model, cl.model)  # CL_emb + BD_enc
    assert_parts(cl_bd, lambda k: cl.model if k.startswith("bert.embeddings.") else bd.model)
    bd_cl = swap_embeddings(cl.model, bd.model)  # BD_emb + CL_enc
    assert_parts(bd_cl, lambda k: bd.model if k.startswith("bert.embeddings.") else cl.model)
    # word, position and token-type embeddings and the LayerNorm all moved
    assert {k.split(".")[2] for k in emb} >= {"word_embeddings", "position_embeddings", "token_type_embeddings",
                                               "LayerNorm"}
    # the inputs are untouched (their modules too: the hybrid's are new objects) ...
    for name, m in (("CL", cl.model), ("BD", bd.model)):
        assert all(torch.equal(v, before[name][k]) for k, v in m.state_dict().items())
    assert cl_bd.bert.embeddings is not cl.model.bert.embeddings and bd.model.bert.embeddings is not cl_bd.bert.embeddings
    assert bd.model.bert.embeddings.word_embeddings.weight.data_ptr() != cl.model.bert.embeddings.word_embeddings.weight.data_ptr()
    cl_bd.train()
    assert not cl.model.training and not bd.model.training
    # ... and the hybrid costs no weight memory: it shares the donors' tensors
    assert cl_bd.bert.embeddings.word_embeddings.weight.data_ptr() == cl.model.bert.embeddings.word_embeddings.weight.data_ptr()
    assert cl_bd.bert.encoder.layer[0].attention.self.query.weight.data_ptr() == \
        bd.model.bert.encoder.layer[0].attention.self.query.weight.data_ptr()


def test_depth_hybrids_and_their_ends(pair):
    cl, bd = pair
    n = num_units(bd.model)
    assert n == 2
    ref0 = swap_embeddings(bd.model, cl.model)
    h0 = depth_hybrid(cl.model, bd.model, 0)
    assert all(torch.equal(v, ref0.state_dict()[k]) for k, v in h0.state_dict().items())
    hn = depth_hybrid(cl.model, bd.model, n)
    assert_parts(hn, lambda k: cl.model)
    h1 = depth_hybrid(cl.model, bd.model, 1)
    assert_parts(h1, lambda k: cl.model if k.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) else bd.model)
    m1 = depth_hybrid(bd.model, cl.model, 1)  # the mirror
    assert_parts(m1, lambda k: bd.model if k.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) else cl.model)
    with pytest.raises(TrojanScopeError, match="outside 0..2"):
        depth_hybrid(cl.model, bd.model, 3)


@pytest.mark.slow
def test_swap_numbers_on_the_tiny_pair(pair, use_data):
    cl, bd = pair
    test = load_dataset("sst2", "test")
    res = embedding_swap(cl, bd, test, SwapConfig(n=40))
    assert res.trigger == "cf" and res.target == 1  # from BD's card
    assert res.n_clean == 40 and res.n_poisoned == 40
    L = num_units(bd.model)
    assert [p.k for p in res.layers] == list(range(L + 1)) == [p.k for p in res.layers_mirror]
    sim = res.similarity
    assert res.layers[0].sim_BD_poisoned == sim["CL_emb+BD_enc"]["BD"]["poisoned"]
    assert res.layers[0].asr == res.asr["CL_emb+BD_enc"]
    assert res.layers[-1].sim_CL_poisoned == pytest.approx(1.0) and res.layers[-1].asr == res.asr["CL"]
    assert res.layers_mirror[0].asr == res.asr["BD_emb+CL_enc"]
    assert res.layers_mirror[-1].sim_BD_poisoned == pytest.approx(1.0) and res.layers_mirror[-1].asr == res.asr["BD"]
    assert res.layers[-1].sim_BD_poisoned == pytest.approx(res.baseline["poisoned"])
    # the backdoor works on BD and not on CL; the numbers are cosines and shares
    assert res.asr["BD"] >= 0.9 and res.asr["CL"] <= 0.5
    for h in HYBRIDS:
        for ref in ("BD", "CL"):
            for kind in ("clean", "poisoned"):
                assert -1 <= sim[h][ref][kind] <= 1 + 1e-6 and res.spread[h][ref][kind] >= 0
    assert set(res.cacc) == set(MODELS) and all(0 <= v <= 1 for v in res.cacc.values())
    # seeded: the same config gives the same numbers
    again = embedding_swap(cl, bd, test, SwapConfig(n=40, layers=False))
    assert again.similarity == res.similarity and again.asr == res.asr and again.layers == []


@pytest.mark.slow
def test_identity_swap_is_similar_everywhere(pair, use_data):
    _, bd = pair
    res = embedding_swap(bd, bd, load_dataset("sst2", "test"), SwapConfig(n=30))
    for h in HYBRIDS:
        for ref in ("BD", "CL"):
            for kind in ("clean", "poisoned"):
                assert res.similarity[h][ref][kind] == pytest.approx(1.0, abs=1e-5)
                assert res.spread[h][ref][kind] == pytest.approx(0.0, abs=1e-5)
    assert len(set(res.asr.values())) == 1
    assert all(p.sim_BD_poisoned == pytest.approx(1.0, abs=1e-5) for p in res.layers + res.layers_mirror)


@pytest.mark.slow
def test_pooler_representation(pair, use_data):
    _, bd = pair
    res = embedding_swap(bd, bd, load_dataset("sst2", "test"), SwapConfig(n=10, representation="pooler",
                                                                            layers=False))
    assert res.representation == "pooler"
    assert res.similarity["CL_emb+BD_enc"]["BD"]["clean"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["distilbert", "roberta", "albert"])
def test_other_architectures_identity_and_parts(arch, swap_root, use_data):
    a = load_model(make_tiny(swap_root, arch, seed=0))
    b = load_model(make_tiny(swap_root, arch, seed=1))
    res = embedding_swap(a, a, load_dataset("sst2", "test"), SwapConfig(n=12, trigger="cf", target=1))
    for h in HYBRIDS:
        for kind in ("clean", "poisoned"):
            assert res.similarity[h]["BD"][kind] == pytest.approx(1.0, abs=1e-5)
    assert len(res.layers) == num_units(a.model) + 1
    prefix = f"{a.model.base_model_prefix}.embeddings."
    hybrid = swap_embeddings(b.model, a.model)
    assert_parts(hybrid, lambda k: a.model if k.startswith(prefix) else b.model)
    top = depth_hybrid(a.model, b.model, num_units(a.model))
    assert_parts(top, lambda k: a.model)
    if arch == "distilbert":
        with pytest.raises(TrojanScopeError, match="no pooler"):
            embedding_swap(a, a, load_dataset("sst2", "test"),
                           SwapConfig(n=4, trigger="cf", target=1, representation="pooler"))


def test_mismatches_are_refused(pair, swap_root):
    cl, bd = pair
    deep = load_model(make_tiny(swap_root, "bert", layers=3))
    with pytest.raises(TrojanScopeError, match="number of layers 2 but the backdoored model has 3"):
        check_compatible(cl, deep)
    rob = load_model(make_tiny(swap_root, "roberta"))
    with pytest.raises(TrojanScopeError, match="model type 'bert' but the backdoored model has 'roberta'"):
        check_compatible(cl, rob)
    tok = copy.deepcopy(bd.tokenizer)
    tok.add_tokens(["zzqxtoken"])
    other_vocab = LoadedModel(bd.model, tok, "other-vocab", bd.card)
    with pytest.raises(TrojanScopeError, match="different vocabularies"):
        check_compatible(cl, other_vocab)


def test_trigger_and_target_errors(pair, tiny_bert, use_data):
    cl, bd = pair
    test = load_dataset("sst2", "test")
    with pytest.raises(TrojanScopeError, match=r"\[UNK\]"):
        embedding_swap(cl, bd, test, SwapConfig(n=4, trigger="🦄"))
    with pytest.raises(TrojanScopeError, match="target label 5 does not exist"):
        embedding_swap(cl, bd, test, SwapConfig(n=4, target=5))
    plain = load_model(tiny_bert)  # no card: no trigger to fall back on
    with pytest.raises(TrojanScopeError, match="no trigger given"):
        embedding_swap(plain, plain, test, SwapConfig(n=4))


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_cli_swap_json(tiny_pair, use_data, capsys):
    code, out, err = run_cli(capsys, "swap", "--clean", str(tiny_pair / "demo" / "clean"), "--backdoored",
                             str(tiny_pair / "demo" / "backdoored"), "--data", "sst2", "--n", "30", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert set(res) >= {"similarity", "spread", "asr", "cacc", "layers", "layers_mirror", "trigger", "target"}
    assert res["trigger"] == "cf" and res["target"] == 1
    for key in ("similarity", "spread"):
        assert set(res[key]) == set(HYBRIDS)
        for h in HYBRIDS:
            assert set(res[key][h]) == {"BD", "CL"}
            assert all(set(v) == {"clean", "poisoned"} for v in res[key][h].values())
    assert set(res["asr"]) == {"CL", "BD", "CL_emb+BD_enc", "BD_emb+CL_enc"}
    assert [p["k"] for p in res["layers"]] == [0, 1, 2]
    assert all(set(p) >= {"k", "sim_BD_poisoned", "asr"} for p in res["layers"])


def test_cli_swap_mismatch_exits_2(tiny_pair, swap_root, use_data, capsys):
    deep = make_tiny(swap_root, "bert", layers=3)
    code, out, err = run_cli(capsys, "swap", "--clean", str(deep), "--backdoored",
                             str(tiny_pair / "demo" / "backdoored"), "--n", "5", "--json")
    assert code == 2 and out == ""
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "number of layers" in lines[0]


def test_page_runs_on_click_and_keeps_the_result(lab):
    at = AppTest.from_file(str(ROOT / "pages" / "3_Embedding_Swap.py"), default_timeout=120)
    at.session_state["pair"] = {"clean": str(lab / "demo" / "clean"), "backdoored": str(lab / "demo" / "backdoored")}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_input(key="swap_trigger").value == "cf"  # from BD's card
    assert not at.get("plotly_chart")  # nothing computed before Run
    at.number_input(key="swap_n").set_value(20).run()
    at.button(key="swap_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    finish_jobs()  # a job: the page shows its result on its next run (the live bar reruns it when it ends)
    at.run()
    keys = {el.key for el in at.get("plotly_chart")}
    assert {"swap_bars", "swap_layers"} <= keys
    table = at.dataframe[0].value
    assert list(table["model"]) == list(HYBRIDS)
    assert any(i.value.startswith("This run: BD's ASR is") for i in at.info)  # its own conclusion, the seed's below
    assert "±" in str(table.iloc[0, 1])
    # a rerun without a click keeps showing the stored result, and so does a new session (a revisit)
    at.run()
    assert {"swap_bars", "swap_layers"} <= {el.key for el in at.get("plotly_chart")}
    again = AppTest.from_file(str(ROOT / "pages" / "3_Embedding_Swap.py"), default_timeout=120)
    again.session_state["pair"] = dict(at.session_state["pair"])
    again.run()
    again.number_input(key="swap_n").set_value(20).run()
    assert {"swap_bars", "swap_layers"} <= {el.key for el in again.get("plotly_chart")}
    # a bad trigger is an error box, not a traceback
    at.text_input(key="swap_trigger").set_value("🦄").run()
    at.button(key="swap_run").click().run()
    assert not at.exception and any("[UNK]" in e.value for e in at.error)


def test_the_conclusion_reads_this_runs_numbers_not_the_papers():
    """Issue 26, item 6: the swap concludes from its own similarities and ASRs (the seed's text is a caption)."""
    from trojanscope.analysis.swap import conclusion

    def sims(enc_bd, enc_cl, emb_bd, emb_cl):
        return {"CL_emb+BD_enc": {"BD": {"poisoned": enc_bd}, "CL": {"poisoned": enc_cl}},
                "BD_emb+CL_enc": {"BD": {"poisoned": emb_bd}, "CL": {"poisoned": emb_cl}}}

    encoder = conclusion(sims(0.99, 0.1, 0.05, 0.97), {"BD": 1.0, "CL_emb+BD_enc": 0.98, "BD_emb+CL_enc": 0.1})
    assert "lives in the encoder" in encoder and "cosine 0.99 to BD" in encoder and "ASR 98.0%" in encoder
    embeddings = conclusion(sims(0.1, 0.9, 0.9, 0.2), {"BD": 0.9, "CL_emb+BD_enc": 0.1, "BD_emb+CL_enc": 0.85})
    assert "lives in the embeddings" in embeddings
    assert "little backdoor" in conclusion(sims(1, 1, 1, 1), {"BD": 0.2, "CL_emb+BD_enc": 0.2, "BD_emb+CL_enc": 0.2})
    assert "together" in conclusion(sims(0.5, 0.5, 0.5, 0.5), {"BD": 1.0, "CL_emb+BD_enc": 0.1, "BD_emb+CL_enc": 0.1})
