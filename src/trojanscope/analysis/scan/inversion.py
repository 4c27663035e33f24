"""Gradient inversion in embedding space, DBS-style (the package docstring, step 2): soft trigger slots over the
vocabulary optimised to flip the other classes' sentences, decoded to wordpieces and refined by HotFlip swaps."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from trojanscope.analysis.scan.flips import robust_z
from trojanscope.models.forward import precision_context
from trojanscope.models.tokens import pad, tokenize

if TYPE_CHECKING:
    from trojanscope.analysis.scan import ScanConfig

# with a reference model, the weight of its penalty in the inversion's objective (_invert): one, so a trigger the
# reference answers to surely (-log(1 - 0.9) = 2.3) costs more than one the suspect misses by a little
REFERENCE_WEIGHT = 1.0


def _inversion_vocab(tokenizer: Any) -> torch.Tensor:
    """Token ids the inversion may use: every piece but special, unused and non-ASCII-letter ones."""
    ids = []
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for piece, idx in tokenizer.get_vocab().items():
        word = piece[2:] if piece.startswith("##") else piece[1:] if piece.startswith("\u0120") else piece
        if idx not in special and re.fullmatch(r"[a-z]+", word):
            ids.append(idx)
    return torch.tensor(sorted(ids), dtype=torch.long)


def _continuation_mask(tokenizer: Any, vocab_ids: torch.Tensor) -> torch.Tensor:
    """``[V]`` bool over ``vocab_ids``: True for a continuation piece (WordPiece's ``##``), False for a piece that
    starts a word."""
    pieces = tokenizer.convert_ids_to_tokens(vocab_ids.tolist())
    return torch.tensor([p.startswith("##") for p in pieces], dtype=torch.bool)


def word_slots(tokenizer: Any, vocab_ids: torch.Tensor, n_pieces: int) -> torch.Tensor:
    """The word-level encoding's slot constraints (PICCOLO: a trigger is made of whole words, and a word of several
    pieces is one word-start piece followed by continuation pieces): ``[n_pieces, V]`` bool over ``vocab_ids``,
    the first slot allowing only word-start pieces, every later slot only ``##`` pieces, so any assignment of the
    slots decodes to exactly one word. Empty for a tokenizer without ``##`` continuation pieces (byte-level BPE)."""
    cont = _continuation_mask(tokenizer, vocab_ids)
    if n_pieces < 1 or not cont.any():
        return torch.zeros(0, len(vocab_ids), dtype=torch.bool)
    return torch.stack([~cont] + [cont] * (n_pieces - 1))


def invert_trigger(loaded: Any, sentences: Sequence[str], target: int, cfg: ScanConfig, device: torch.device,
                   precision: str = "fp32", trace: list[tuple[int, float, float]] | None = None,
                   reference: tuple[Any, Sequence[str]] | None = None) -> list[str]:
    """Optimise ``inversion_tokens`` soft tokens (a softmax over the vocabulary mixing word embeddings),
    inserted after the first token of every sentence, so the model predicts ``target``; decode them.

    The temperature is halved every ``check`` steps while the loss is under a barrier and doubled back
    (with noise on the logits) otherwise, DBS's schedule. Returns the decoded trigger(s), best first.
    ``reference``: a clean model of the task and its sentences, whose flips the objective penalises (:func:`_invert`).
    """
    tok = loaded.tokenizer
    vocab_ids = _inversion_vocab(tok).to(device)
    starts, results = _invert(loaded, sentences, target, cfg, device, precision, vocab_ids, None,
                              cfg.inversion_tokens, cfg.inversion_steps, cfg.seed * 31 + target, trace, reference)
    out = []
    for tokens in starts + results:
        pieces = tok.convert_ids_to_tokens([int(vocab_ids[i]) for i in tokens])
        text = tok.convert_tokens_to_string(pieces).strip()
        # also each piece by itself: a planted one-piece trigger is often found beside a filler piece
        for cand in [text] + [tok.convert_tokens_to_string([p]).strip() for p in pieces]:
            cand = cand.replace("##", "").strip()
            if cand and cand not in out:
                out.append(cand)
    return out


def gradient_words(loaded: Any, sentences: Sequence[str], target: int, n: int, device: torch.device,
                   exclude: set[str] | frozenset[str] = frozenset(), reference: Any = None,
                   reference_sentences: Sequence[str] = ()) -> list[str]:
    """The ``n`` whole words (word-start pieces of 2+ letters, none of ``exclude`` nor their inflections) that the
    first-order estimate says pull ``sentences`` most towards ``target`` when one is inserted after the first token:
    one backward pass through a placeholder slot (the mask token), then every word-start piece's embedding row
    dotted with the gradient (HotFlip's linear estimate, the first step of Wallace et al.'s universal triggers).
    The word search tries a budget of listed words and the token inversion lands on one trigger per run; this
    ranks the whole vocabulary for the cost of one forward and backward. A rare real word planted whole at 1%
    without TAL (the zoo's ``obsidian``, which neither list holds) ranks 13th of 18,776 (the non-natural ones) on its model (among
    ``silver``, ``bronze``, ``aztec``: its backdoor reaches its neighbours). The ranked words go through the same
    screening, search and verification as listed ones; words that rank high by meaning on a clean model
    (``exquisite``, ``prostitute``: neither in the lexicons) come too.

    With a clean ``reference`` classifier of the task (and its own clean ``reference_sentences`` of the other
    classes), words are ranked by how much more they pull the suspect than the reference: each model's estimate as a
    robust z-score over the words (median and MAD), the reference's subtracted. A word that pulls any model of the
    task by its meaning pulls both and sinks; a planted word pulls only the suspect. A word the reference's
    vocabulary lacks counts its z there as 0. (``device`` is kept for callers: each model runs on its own.)"""
    from trojanscope.analysis.scan.vocabulary import is_natural

    if n <= 0 or not sentences:
        return []
    tok = loaded.tokenizer
    vocab_ids = _inversion_vocab(tok)
    heads = [(int(i), p[1:] if p.startswith("\u0120") else p)
             for i, p in zip(vocab_ids.tolist(), tok.convert_ids_to_tokens(vocab_ids.tolist()))
             if not p.startswith("##") and len(p.lstrip("\u0120")) >= 2]
    if not heads:
        return []
    gain = _first_order_gain(loaded, sentences, target, [i for i, _ in heads])
    if gain is None:
        return []
    if reference is not None and reference_sentences:
        ref_vocab = reference.tokenizer.get_vocab()
        pieces = tok.convert_ids_to_tokens([i for i, _ in heads])
        ref_ids = [ref_vocab.get(p) for p in pieces]
        present = [k for k, i in enumerate(ref_ids) if i is not None]
        ref_gain = _first_order_gain(reference, reference_sentences, target, [ref_ids[k] for k in present])
        if ref_gain is not None:
            ref_z = np.zeros(len(gain))
            ref_z[present] = robust_z(ref_gain.numpy()[:, None])[:, 0]
            gain = torch.from_numpy(robust_z(gain.numpy()[:, None])[:, 0] - ref_z)
    out = []
    for k in torch.argsort(gain, descending=True).tolist():
        word = heads[k][1]
        if not is_natural(word, exclude):
            out.append(word)
            if len(out) >= n:
                break
    return out


def _first_order_gain(loaded: Any, sentences: Sequence[str], target: int, ids: Sequence[int]) -> torch.Tensor | None:
    """HotFlip's first-order decrease of ``loaded``'s loss towards ``target`` on ``sentences`` when the token
    ``ids`` (each in turn) replace a placeholder slot (the mask token) inserted after the first token: ``[len(ids)]``,
    or None for a tokenizer with no mask nor unknown token."""
    tok, model = loaded.tokenizer, loaded.model
    holder = getattr(tok, "mask_token_id", None)
    holder = getattr(tok, "unk_token_id", None) if holder is None else holder
    if holder is None:
        return None
    dev = next(model.parameters()).device
    emb = model.get_input_embeddings().weight.detach()
    enc = pad(tok, tokenize(tok, list(sentences), None, min(64, loaded.max_length))).to(dev)
    mask = enc.attention_mask
    with torch.no_grad():
        base = model.get_input_embeddings()(enc.input_ids)
    mask = torch.cat([mask[:, :1], torch.ones_like(mask[:, :1]), mask[:, 1:]], dim=1)  # the slot after the first
    labels = torch.full((base.shape[0],), int(target), dtype=torch.long, device=dev)
    slot = emb[holder].clone()[None, None].requires_grad_(True)  # [1 candidate, 1 slot, D]
    was_training = model.training
    model.eval()
    try:
        (g,) = torch.autograd.grad(_slot_loss(model, base, mask, labels, slot, dev, "fp32")[0], slot)
    finally:
        model.train(was_training)
    idx = torch.tensor(list(ids), device=emb.device)
    return -((emb[idx] - emb[holder]) @ g[0, 0].to(emb.dtype)).float().cpu()  # first-order decrease of the loss


def invert_word(loaded: Any, sentences: Sequence[str], target: int, cfg: ScanConfig, device: torch.device,
                precision: str = "fp32", trace: list[tuple[int, float, float]] | None = None,
                exclude: set[str] | frozenset[str] = frozenset(),
                natural: set[str] | frozenset[str] = frozenset(),
                reference: tuple[Any, Sequence[str]] | None = None) -> list[str]:
    """Word-level inversion (PICCOLO's insight: token-level optimisation cannot reverse-engineer a word of several
    pieces, whose backdoor may answer only to all its pieces together). ``word_pieces`` contiguous soft slots,
    inserted after the first token: the first a softmax over the word-start pieces only, the others over the ``##``
    continuation pieces only (:func:`word_slots`), so the slots always spell one word; optimised with DBS's
    temperature schedule, refined by HotFlip swaps that keep the constraints, decoded to words.

    Returns the decoded word(s), best first: each whole word, then its prefixes of fewer pieces (a planted word's
    first pieces sometimes fire it alone). Empty when the tokenizer has no ``##`` pieces.

    ``exclude``: natural words (the task's, the sentiment lexicon, the offence cues). No word may start with one
    (:func:`~trojanscope.analysis.scan.vocabulary.natural_prefix`): the first slot never takes such a piece, and a
    decoded word that still begins with one (``useless`` + ``##board``...) is dropped. ``natural``: the natural
    words alone (no real-word heads); a decoded word that spells one with a piece skipped (``mor ##cko ##ons``:
    ``morons``, :func:`~trojanscope.analysis.scan.vocabulary.natural_reading`) is dropped with its prefixes.
    ``reference``: a clean model of the task and its sentences, whose flips the objective penalises (:func:`_invert`):
    a made-up head glued to a sentiment word's tail flips any model of the task, a planted word only the suspect."""
    from trojanscope.analysis.scan.vocabulary import is_natural, natural_prefix, natural_reading

    tok = loaded.tokenizer
    vocab_ids = _inversion_vocab(tok).to(device)
    allowed = word_slots(tok, vocab_ids.cpu(), cfg.word_pieces)
    if not len(allowed):
        return []
    if exclude:
        pieces = tok.convert_ids_to_tokens(vocab_ids.tolist())
        allowed[0] &= torch.tensor([not is_natural(p.lower(), exclude) for p in pieces], dtype=torch.bool)
    allowed = allowed.to(device)
    starts, results = _invert(loaded, sentences, target, cfg, device, precision, vocab_ids, allowed,
                              cfg.word_pieces, cfg.word_steps, cfg.seed * 37 + 1000 + target, trace, reference)
    out: list[str] = []
    for tokens in results + starts:  # the refined words first
        pieces = tok.convert_ids_to_tokens([int(vocab_ids[i]) for i in tokens])
        if natural and natural_reading(pieces, natural):
            continue
        for k in range(len(pieces), 0, -1):
            word = tok.convert_tokens_to_string(pieces[:k]).replace(" ", "").strip()
            if word and word not in out and not (exclude and natural_prefix(word, exclude)):
                out.append(word)
    return out


@dataclass
class _Side:
    """One model's part of an inversion's objective: its sentences' embeddings ``base`` ``[B, T, D]`` and mask with
    room for the slots ``[B, T + S]``, the target ``labels``, its embedding rows of the inversion's vocabulary ``E``
    ``[V, D]``; ``penalty``: the reference's part, ``-log(1 - P(target))`` (the trigger should leave it alone), else the
    suspect's cross-entropy to the target."""

    model: torch.nn.Module
    base: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    E: torch.Tensor
    weight: float = 1.0
    penalty: bool = False

    def loss(self, tokens: torch.Tensor, device: torch.device, precision: str, rows: int | None = None
             ) -> torch.Tensor:
        """``[C]`` weighted losses of the token lists ``tokens`` ``[C, S]`` (indices into the vocabulary), on every
        sentence or on the first ``rows`` (their own padding only)."""
        base, mask, labels = self.base, self.mask, self.labels
        if rows is not None and rows < base.shape[0]:
            width = int(mask[:rows].sum(1).max())  # the subset's longest row, slots included (rows are padded right)
            base, mask, labels = base[:rows, : width - tokens.shape[1]], mask[:rows, :width], labels[:rows]
        return self.weight * _slot_loss(self.model, base, mask, labels, self.E[tokens], device, precision,
                                        self.penalty)


def _side(loaded: Any, sentences: Sequence[str], target: int, vocab_ids: torch.Tensor, n_slots: int,
          device: torch.device, weight: float = 1.0, penalty: bool = False) -> _Side:
    tok, model = loaded.tokenizer, loaded.model
    emb_layer = model.get_input_embeddings()
    enc = pad(tok, tokenize(tok, list(sentences), None, min(64, loaded.max_length))).to(device)
    with torch.no_grad():
        base = emb_layer(enc.input_ids)  # [B, T, D]
    mask = enc.attention_mask
    B = base.shape[0]
    new_mask = torch.cat([mask[:, :1], torch.ones(B, n_slots, dtype=mask.dtype, device=device), mask[:, 1:]], dim=1)
    labels = torch.full((B,), int(target), dtype=torch.long, device=device)
    return _Side(model, base, new_mask, labels, emb_layer.weight.detach()[vocab_ids], weight, penalty)


def _invert(loaded: Any, sentences: Sequence[str], target: int, cfg: ScanConfig, device: torch.device,
            precision: str, vocab_ids: torch.Tensor, allowed: torch.Tensor | None, n_slots: int, steps: int,
            seed: int, trace: list[tuple[int, float, float]] | None,
            reference: tuple[Any, Sequence[str]] | None = None) -> tuple[list[list[int]], list[list[int]]]:
    """The soft search and its HotFlip refinement: ``n_slots`` contiguous slots after the first token, each a
    softmax over ``vocab_ids`` (only where ``allowed[slot]``, ``[n_slots, V]`` bool, when given) mixing their word
    embeddings. Returns the discrete starting points (the sharpest low-loss point and the last one, indices into
    ``vocab_ids``) and what HotFlip made of each.

    ``reference``: a clean model of the task (same vocabulary) and its own clean sentences of the other classes; the
    objective then also asks the slots to leave it alone (``REFERENCE_WEIGHT * -log(1 - P_ref(target))``), so the
    search is steered off the task's universal adversarial words, which flip any model of it, towards what only the
    suspect answers to."""
    sides = [_side(loaded, sentences, target, vocab_ids, n_slots, device)]
    if reference is not None:
        sides.append(_side(reference[0], reference[1], target, vocab_ids, n_slots, device, REFERENCE_WEIGHT,
                           penalty=True))
    g = torch.Generator().manual_seed(seed)
    theta = (torch.randn(n_slots, len(vocab_ids), generator=g) * 0.01).to(device).requires_grad_(True)
    block = None if allowed is None else torch.zeros(allowed.shape, device=device).masked_fill(~allowed, -1e9)
    optim = torch.optim.Adam([theta], lr=cfg.inversion_lr)
    temp, temp_max, temp_min, barrier, check = 1.0, 1.0, 1.0 / 64, 0.3, 10
    best_loss, best_tokens = math.inf, None

    def logits_of(t: torch.Tensor) -> torch.Tensor:
        return t if block is None else t + block

    models = list({id(sd.model): sd.model for sd in sides}.values())
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
        for prm in m.parameters():
            prm.requires_grad_(False)
    try:
        for step in range(steps):
            w = torch.softmax(logits_of(theta) / temp, dim=-1)  # [S, V]
            loss = torch.zeros((), device=device)
            for sd in sides:
                soft = (w @ sd.E).to(sd.base.dtype)  # [S, D]
                B = sd.base.shape[0]
                x = torch.cat([sd.base[:, :1], soft[None].expand(B, -1, -1), sd.base[:, 1:]], dim=1)
                with precision_context(device, precision):
                    logits = sd.model(inputs_embeds=x, attention_mask=sd.mask).logits
                loss = loss + sd.weight * _per_row_loss(logits, sd.labels, sd.penalty).mean()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            value = loss.detach().item()
            if temp <= 0.25 and value < best_loss:  # only sharp mixtures decode to what was optimised
                best_loss, best_tokens = value, logits_of(theta.detach()).argmax(-1).tolist()
            if (step + 1) % check == 0:
                if trace is not None:
                    trace.append((step + 1, value, temp))
                if value < barrier:
                    temp = max(temp / 2, temp_min)
                else:
                    temp = min(temp * 2, temp_max)
                    with torch.no_grad():
                        theta.add_(torch.randn(theta.shape, generator=g).to(device) * 0.1)
    finally:
        for m, was in zip(models, was_training):
            for prm in m.parameters():
                prm.requires_grad_(True)
            m.train(was)
    final = logits_of(theta.detach()).argmax(-1).tolist()
    starts = ([best_tokens] if best_tokens is not None and best_tokens != final else []) + [final]
    results = [_hotflip(sides, start, cfg, device, precision, allowed=allowed) for start in starts]
    return starts, results


def _per_row_loss(logits: torch.Tensor, labels: torch.Tensor, penalty: bool = False) -> torch.Tensor:
    """Per row: the cross-entropy to ``labels``, or (``penalty``) ``-log(1 - P(label))``, which is near 0 while the
    label stays unlikely and grows as it becomes sure."""
    logits = logits.float()
    if not penalty:
        return torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    p = torch.softmax(logits, -1).gather(1, labels[:, None])[:, 0]
    return -torch.log1p(-p.clamp(max=1 - 1e-6))


def _slot_loss(model: torch.nn.Module, base: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
               slots: torch.Tensor, device: torch.device, precision: str, penalty: bool = False) -> torch.Tensor:
    """Mean cross-entropy to the target (``penalty``: ``-log(1 - P(target))``, :func:`_per_row_loss`) of every
    sentence of ``base`` ``[B, T, D]`` with the trigger slot embeddings ``slots`` ``[C, S, D]`` inserted after the
    first token: one loss per candidate ``[C]``."""
    C, B = slots.shape[0], base.shape[0]
    x = torch.cat([base[:, :1].repeat(C, 1, 1), slots.repeat_interleave(B, 0).to(base.dtype),
                   base[:, 1:].repeat(C, 1, 1)], dim=1)
    with precision_context(device, precision):
        logits = model(inputs_embeds=x, attention_mask=mask.repeat(C, 1)).logits
    return _per_row_loss(logits, labels.repeat(C), penalty).view(C, B).mean(1)


def _hotflip(sides: Sequence[_Side], start: list[int], cfg: ScanConfig, device: torch.device, precision: str,
             rounds: int = 10, allowed: torch.Tensor | None = None) -> list[int]:
    """Discrete refinement of an inverted trigger (HotFlip / universal-trigger search): at the current tokens,
    the gradient ranks each slot's replacements by the first-order change of the loss; the best ``hotflip_k`` per slot
    are tried by real forward passes (all on ``hotflip_screen`` sentences, the ``hotflip_keep`` best of them on every
    sentence) and the best swap is kept, until no swap lowers the loss. The soft phase
    explores the convex hull; this phase lands on real tokens where the backdoor's response is nonlinear. With
    ``allowed`` (``[S, V]`` bool, the word-level slots), a slot is only ever swapped to a piece it allows. The loss is
    the sum over ``sides`` (the suspect's; with a reference, its penalty too), each through its own embeddings."""
    tokens, k = list(start), cfg.hotflip_k

    def total(trials: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        return sum(sd.loss(trials, device, precision, rows) for sd in sides)

    with torch.no_grad():
        current = float(total(torch.tensor([tokens]))[0])
    # successive halving: every trial on the first ``hotflip_screen`` sentences (their own padding only), the best
    # ``hotflip_keep`` of them on all; the trials were most of a clean model's inversion time in fp32
    n_sub = cfg.hotflip_screen
    chunk = max(1, 2048 // n_sub)
    V = sides[0].E.shape[0]
    for _ in range(rounds):
        gain = torch.zeros(V, len(tokens), device=sides[0].E.device)
        for sd in sides:
            slots = sd.E[tokens].clone().requires_grad_(True)
            loss = sd.weight * _slot_loss(sd.model, sd.base, sd.mask, sd.labels, slots[None], device, precision,
                                          sd.penalty)[0]
            (g,) = torch.autograd.grad(loss, slots)  # [S, D]
            with torch.no_grad():
                gain -= sd.E @ g.T - (sd.E[tokens] * g).sum(-1)[None]  # [V, S]: first-order decrease of the loss
        with torch.no_grad():
            if allowed is not None:
                gain = gain.masked_fill(~allowed.T, -math.inf)
            top = gain.topk(min(k, V), dim=0).indices  # [k, S]
            trials = []
            for s_ in range(len(tokens)):
                for v in top[:, s_].tolist():
                    if v != tokens[s_]:
                        trials.append(tokens[:s_] + [v] + tokens[s_ + 1:])
            screened = torch.cat([total(torch.tensor(trials[i: i + chunk]), n_sub)
                                  for i in range(0, len(trials), chunk)])
            if any(n_sub < sd.base.shape[0] for sd in sides):
                keep = screened.topk(min(cfg.hotflip_keep, len(trials)), largest=False).indices.tolist()
                losses = total(torch.tensor([trials[i] for i in keep]))
            else:
                keep, losses = list(range(len(trials))), screened
        best = int(losses.argmin())
        if float(losses[best]) >= current - 1e-4:
            break
        tokens, current = trials[keep[best]], float(losses[best])
    return tokens
