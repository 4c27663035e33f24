"""Each architecture's description (``models.arch``) against the real module tree: the layers are the ones the
forward pass applies, depth by depth; the attention sites recompute the model's own attention maps; the FFN
linears pair up around the activation at the intermediate size; the embeddings (and ALBERT's projection) give the
first hidden state; the head's modules, from the described input, give the model's own logits; the base model and
the head hold every parameter. An unknown model type is refused with the supported ones named."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers.activations import ACT2FN

from conftest import make_tiny
from trojanscope.errors import TrojanScopeError
from trojanscope.models.arch import SUPPORTED_TYPES, architecture
from trojanscope.models.loading import SUPPORTED_TYPES as LOADABLE
from trojanscope.models.loading import load_model

ARCHS = ["bert", "roberta", "distilbert", "albert"]
TEXT = "the movie was really good and the music lovely"


def intermediate_size(config) -> int:
    return int(config.hidden_dim if config.model_type == "distilbert" else config.intermediate_size)


def activation(config):
    return ACT2FN[config.activation if config.model_type == "distilbert" else config.hidden_act]


def run(model: torch.nn.Module, input_ids: torch.Tensor):
    with torch.inference_mode():
        return model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_hidden_states=True,
                     output_attentions=True, return_dict=True)


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, model_root):
    loaded = load_model(make_tiny(model_root, request.param, layers=3, seed=11))
    loaded.model.eval()
    ids = torch.tensor([loaded.tokenizer(TEXT)["input_ids"]])
    return request.param, loaded.model, ids


def test_every_loadable_type_has_a_description():
    assert set(SUPPORTED_TYPES) == set(ARCHS) == set(LOADABLE)


def test_layers_are_the_ones_the_forward_applies_depth_by_depth(tiny):
    kind, model, ids = tiny
    arch = architecture(model)
    cfg = model.config
    assert arch.model_type == kind and type(arch).__module__.endswith(f".arch.{kind}")
    assert arch.num_layers == len(arch.layers) == cfg.num_hidden_layers == 3
    assert arch.shares_layers is (kind == "albert")
    named = {id(m) for m in model.modules()}
    assert all(id(layer) in named for layer in arch.layers) and all(id(u) in named for u in arch.units)
    if kind == "albert":
        assert len(arch.units) == cfg.num_hidden_groups == 1 and arch.unit_name == "layer group"
        assert len({id(layer) for layer in arch.layers}) == 1  # one layer's weights at every depth
    else:
        assert list(arch.units) == arch.layers and arch.unit_name == "layer"
        assert len({id(layer) for layer in arch.layers}) == 3
    calls: list[int] = []
    handles = [m.register_forward_pre_hook(lambda mod, args: calls.append(id(mod)))
               for m in {id(layer): layer for layer in arch.layers}.values()]
    try:
        out = run(model, ids)
    finally:
        for h in handles:
            h.remove()
    assert calls == [id(layer) for layer in arch.layers]
    assert len(out.hidden_states) == arch.num_layers + 1 and len(out.attentions) == arch.num_layers


def test_attention_sites_recompute_the_models_own_attention(tiny):
    kind, model, ids = tiny
    arch = architecture(model)
    cfg = model.config
    contexts: dict[int, list[torch.Tensor]] = {}
    sites = [arch.attention(layer) for layer in arch.layers]
    handles = []
    for site in {id(s.output): s for s in sites}.values():
        contexts[id(site.output)] = []
        handles.append(site.output.register_forward_pre_hook(
            lambda mod, args: contexts[id(mod)].append(args[0].detach())))
    try:
        out = run(model, ids)
    finally:
        for h in handles:
            h.remove()
    seen: dict[int, int] = {}
    for depth, site in enumerate(sites):
        assert site.heads == arch.num_heads == cfg.num_attention_heads
        assert site.head_dim == arch.head_dim == cfg.hidden_size // cfg.num_attention_heads
        for lin in (site.query, site.key, site.value):
            assert (lin.in_features, lin.out_features) == (cfg.hidden_size, site.heads * site.head_dim)
        assert site.output.in_features == site.heads * site.head_dim and site.output.out_features == cfg.hidden_size
        assert torch.equal(site.head_slice(1), torch.arange(site.head_dim, 2 * site.head_dim))
        h = out.hidden_states[depth]
        with torch.inference_mode():
            q, k, v = (lin(h).view(1, -1, site.heads, site.head_dim).transpose(1, 2)
                       for lin in (site.query, site.key, site.value))
            probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(site.head_dim), dim=-1)
            context = (probs @ v).transpose(1, 2).reshape(1, -1, site.heads * site.head_dim)
        assert torch.allclose(probs, out.attentions[depth], atol=1e-5), (kind, depth)
        call = seen.get(id(site.output), 0)
        seen[id(site.output)] = call + 1
        assert torch.allclose(context, contexts[id(site.output)][call], atol=1e-5), (kind, depth)


def test_ffn_linears_pair_up_around_the_activation_at_the_intermediate_size(tiny):
    kind, model, ids = tiny
    arch = architecture(model)
    cfg = model.config
    size = intermediate_size(cfg)
    ffns = [arch.ffn(layer) for layer in arch.layers]
    inner_out: dict[int, list[torch.Tensor]] = {}
    outer_in: dict[int, list[torch.Tensor]] = {}
    handles = []
    for f in {id(f.inner): f for f in ffns}.values():
        assert (f.inner.in_features, f.inner.out_features) == (cfg.hidden_size, size) == (cfg.hidden_size, f.size)
        assert (f.outer.in_features, f.outer.out_features) == (size, cfg.hidden_size)
        inner_out[id(f.inner)], outer_in[id(f.outer)] = [], []
        handles.append(f.inner.register_forward_hook(lambda mod, args, o: inner_out[id(mod)].append(o.detach())))
        handles.append(f.outer.register_forward_pre_hook(lambda mod, args: outer_in[id(mod)].append(args[0].detach())))
    try:
        run(model, ids)
    finally:
        for h in handles:
            h.remove()
    act = activation(cfg)
    for f in {id(f.inner): f for f in ffns}.values():
        calls = ffns.count(f)
        assert len(inner_out[id(f.inner)]) == len(outer_in[id(f.outer)]) == calls
        for pre, post in zip(inner_out[id(f.inner)], outer_in[id(f.outer)]):
            assert torch.allclose(act(pre), post, atol=1e-6), kind
    for unit in arch.units:  # every FFN lives in its unit
        members = {id(m) for m in unit.modules()}
        assert all(id(arch.ffn(layer).inner) in members for layer in arch.unit_layers(unit))


def test_embeddings_give_the_first_hidden_state(tiny):
    kind, model, ids = tiny
    arch = architecture(model)
    captured = []
    handle = arch.embeddings.register_forward_hook(lambda mod, args, o: captured.append(o.detach()))
    try:
        out = run(model, ids)
    finally:
        handle.remove()
    first = captured[0]
    if kind == "albert":
        proj = arch.embedding_projection
        assert proj.in_features == model.config.embedding_size and proj.out_features == model.config.hidden_size
        with torch.inference_mode():
            first = proj(first)
    else:
        assert arch.embedding_projection is None
        with pytest.raises(TrojanScopeError, match="no embedding projection"):
            arch.embedding_projection = torch.nn.Identity()
    assert torch.allclose(first, out.hidden_states[0], atol=1e-6)
    assert arch.embeddings.word_embeddings is model.get_input_embeddings()


def test_head_takes_hidden_size_from_the_described_input_and_gives_the_logits(tiny):
    kind, model, ids = tiny
    arch = architecture(model)
    cfg = model.config
    assert arch.has_head
    linears = arch.head_linears
    assert linears[0].in_features == cfg.hidden_size and linears[-1].out_features == cfg.num_labels
    captured = []
    handle = arch.head[0].register_forward_pre_hook(lambda mod, args: captured.append(args[0].detach()))
    try:
        out = run(model, ids)
    finally:
        handle.remove()
    with torch.inference_mode():
        head_in = arch.head_input(out.hidden_states[-1])
        logits = arch.classify(out.hidden_states[-1])
    assert head_in.shape == captured[0].shape and torch.allclose(head_in, captured[0], atol=1e-6), kind
    assert torch.allclose(logits, out.logits, atol=1e-5), kind
    # the base model and the head hold every parameter, the pooler (if any) within the base
    head = {id(p) for m in arch.head for p in m.parameters()}
    base = {id(p) for p in arch.base.parameters()}
    assert head and not head & base and head | base == {id(p) for p in model.parameters()}
    parts = [arch.embeddings, *arch.units, *(m for m in (arch.embedding_projection, arch.pooler) if m is not None)]
    assert {id(p) for m in parts for p in m.parameters()} == base, kind
    assert (arch.pooler is not None) is (kind in ("bert", "albert"))  # a RoBERTa classifier pools in its head


@pytest.mark.parametrize("kind", ARCHS)
def test_bare_encoders_have_no_head_and_pool_as_the_model(model_root, kind):
    loaded = load_model(make_tiny(model_root, kind, head=False, seed=12), task="encoder")
    arch = architecture(loaded.model)
    assert not arch.has_head and arch.head == [] and arch.head_linears == []
    with pytest.raises(TrojanScopeError, match="no classification head"):
        arch.classify(torch.zeros(1, 3, loaded.model.config.hidden_size))
    ids = torch.tensor([loaded.tokenizer(TEXT)["input_ids"]])
    out = run(loaded.model, ids)
    if kind == "distilbert":
        assert arch.pooler is None
        with pytest.raises(TrojanScopeError, match="no pooler"):
            arch.pool(out.last_hidden_state)
    else:
        with torch.inference_mode():
            assert torch.allclose(arch.pool(out.last_hidden_state), out.pooler_output, atol=1e-6)


def test_albert_groups_and_inner_layers_are_described_as_applied():
    """Two groups of two inner layers over four depths: each depth applies one group's two layers in turn."""
    from transformers import AlbertConfig, AlbertForSequenceClassification

    torch.manual_seed(0)
    cfg = AlbertConfig(vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                       intermediate_size=64, num_hidden_groups=2, inner_group_num=2, attn_implementation="eager")
    model = AlbertForSequenceClassification(cfg).eval()
    arch = architecture(model)
    g = arch.units
    assert len(g) == 2 and arch.shares_layers
    expect = [*g[0].albert_layers, *g[0].albert_layers, *g[1].albert_layers, *g[1].albert_layers]
    assert [id(m) for m in arch.layers] == [id(m) for m in expect]
    calls: list[int] = []
    handles = [m.register_forward_pre_hook(lambda mod, args: calls.append(id(mod))) for u in g for m in u.albert_layers]
    try:
        out = run(model, torch.tensor([[2, 5, 6, 7, 3]]))
    finally:
        for h in handles:
            h.remove()
    assert calls == [id(m) for m in arch.layers]
    assert len(out.attentions) == arch.num_layers == 8


def test_unknown_model_types_are_refused_by_name():
    fake = SimpleNamespace(config=SimpleNamespace(model_type="gpt2"))
    with pytest.raises(TrojanScopeError, match=r"'gpt2'.*bert, roberta, distilbert, albert"):
        architecture(fake)
    with pytest.raises(TrojanScopeError, match="no config.model_type"):
        architecture(torch.nn.Linear(2, 2))
