"""Decoding a trained encoder-decoder: greedy search and batched beam search.

Both run the decoder one step at a time from <bos> until every output has produced <eos> (or
`max_length` tokens), on a whole batch at once. They return the token ids (<eos> included, <pad>
after it) and, with attention, the attention weights behind each token. Neither writes <pad>
or <bos>: they are no output's tokens.

- greedy: the most likely next token at each step. Fast, and what validation uses, but a first
  token that looks best may lead only to unlikely continuations.
- beam search: keeps the K most likely partial outputs ("hypotheses") of every sequence. All of
  them are decoded together, as a batch of B*K rows: row b*K + k is hypothesis k of sequence b.
  At each step every hypothesis proposes its K best next tokens; of the K*K candidates of a
  sequence, the K with the highest total log-probability survive. A finished hypothesis stays in
  the beam with its score (it continues with <pad> at no cost). At the end, the hypothesis with
  the best log p(y|x) / lp(y) is chosen, lp being GNMT's length penalty (Wu et al. 2016):
  lp(y) = ((5 + |y|) / 6)^alpha, which stops short outputs from winning only by being short.
  A sequence stops as soon as no unfinished hypothesis can overtake its best finished one, so
  one unlikely hypothesis does not keep the whole batch decoding, and the decoder then runs on
  the rows of the sequences still undecided only. With K = 1 it is greedy
  search, exactly.

`model` is an EncoderDecoderModel (encoder_decoder.py): any network that can encode a source,
take one decoding step, and reorder its decoder state by rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass
class Decoded:
    tokens: torch.Tensor  # (B, L) token ids, <eos> included, <pad> after it
    attention: torch.Tensor | None  # (B, L, S): the weights over the source behind each token


def greedy(model, source: torch.Tensor, source_lengths: torch.Tensor, max_length: int) -> Decoded:
    memory, state = model.encode(source, source_lengths)
    B = source.shape[0]
    previous = torch.full((B,), model.bos_id, dtype=torch.long, device=source.device)
    finished = torch.zeros(B, dtype=torch.bool, device=source.device)
    tokens, weights = [], []
    for _ in range(max_length):
        logits, state, step_weights = model.decode_step(previous, state, memory)
        token = _log_probs(logits, model).argmax(-1)  # (B,)
        token = token.masked_fill(finished, model.pad_id)
        tokens.append(token)
        weights.append(step_weights)
        finished |= token == model.eos_id
        previous = token
        if finished.all():
            break
    tokens = torch.stack(tokens, 1)  # (B, L)
    return Decoded(tokens, _attention(weights, tokens, model.pad_id))


def beam_search(model, source: torch.Tensor, source_lengths: torch.Tensor, beam_width: int, length_penalty: float,
                max_length: int) -> Decoded:
    B, K = source.shape[0], beam_width
    device = source.device
    memory, state = model.encode(source, source_lengths)
    # K copies of every sequence: row b*K + k is hypothesis k of sequence b. A hypothesis only
    # ever extends one of its own sequence, so the memory (one per sequence: the attention reads
    # it for all K at once) never moves; the decoder state follows the hypotheses around.
    state = model.reorder_state(state, torch.arange(B, device=device).repeat_interleave(K))  # B*K rows
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # the K copies start alike: expand only the first
    previous = torch.full((B * K,), model.bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(B * K, dtype=torch.bool, device=device)
    lengths = torch.zeros(B * K, dtype=torch.long, device=device)  # tokens up to <eos>, included
    # Each step's tokens, attention and back-pointers (the row each survivor extends); the
    # outputs are read backwards from them at the end, instead of copying every hypothesis's
    # whole history at every step.
    chosen_tokens, chosen_weights, back = [], [], []
    first_rows = torch.arange(B, device=device).unsqueeze(1) * K  # (B, 1)
    hypotheses = torch.arange(K, device=device)
    best_possible = ((5.0 + max_length) / 6.0) ** length_penalty  # the largest lp(y) any output can have
    # The sequences still being decided. The decoder runs on their rows only (the state holds
    # those, in this order, and the memory those sources'): a decided sequence costs nothing more.
    active, active_memory = torch.arange(B, device=device), memory
    for _ in range(max_length):
        A = active.shape[0]
        rows = (active.unsqueeze(1) * K + hypotheses).view(-1)  # (A*K,) their rows among the B*K
        logits, state, step_weights = model.decode_step(previous[rows], state, active_memory)
        log_probs = _log_probs(logits, model)  # (A*K, V)
        # A finished hypothesis continues with <pad> at no cost.
        done = torch.full_like(log_probs[:1], float("-inf"))
        done[0, model.pad_id] = 0.0
        log_probs = torch.where(finished[rows].unsqueeze(1), done, log_probs)
        # The K best continuations of a sequence are among its hypotheses' K best next tokens.
        top, top_tokens = log_probs.topk(min(K, log_probs.shape[-1]), dim=-1)  # (A*K, K)
        candidates = (scores[active].view(-1, 1) + top).view(A, -1)  # (A, K*K)
        best_scores, best = candidates.topk(K, dim=-1)  # (A, K)
        local_parents = (torch.arange(A, device=device).unsqueeze(1) * K + best // top.shape[-1]).view(-1)
        # Every row's token and back-pointer: a decided sequence's rows stay as they are, with <pad>.
        parents = torch.arange(B * K, device=device)
        parents[rows] = rows[local_parents]  # (B*K,): the row each survivor extends
        chosen = torch.full((B * K,), model.pad_id, dtype=torch.long, device=device)
        chosen[rows] = top_tokens.view(A, -1).gather(1, best).view(-1)
        scores[active] = best_scores
        chosen_tokens.append(chosen)
        if step_weights is not None:
            weights = step_weights.new_zeros(B * K, step_weights.shape[-1])
            weights[rows] = step_weights[local_parents]
            chosen_weights.append(weights)
        else:
            chosen_weights.append(None)
        back.append(parents)
        state = model.reorder_state(state, local_parents)
        lengths = lengths[parents] + (~finished[parents]).long()
        finished = finished[parents] | (chosen == model.eos_id)
        previous = chosen
        # A sequence is decided when its best finished output already scores at least what any
        # unfinished one could reach: log-probabilities only fall, and lp(y) is at most
        # best_possible. Its unfinished hypotheses are dropped; the beam stops when all are decided.
        penalty = ((5.0 + lengths.float()) / 6.0) ** length_penalty  # GNMT's lp(y), (B*K,)
        final = torch.where(finished, scores.view(-1) / penalty, float("-inf")).view(B, K)
        reachable = torch.where(finished, float("-inf"), scores.view(-1) / best_possible).view(B, K)
        decided = final.max(-1).values >= reachable.max(-1).values  # (B,)
        dropped = decided.repeat_interleave(K) & ~finished
        if dropped.any():
            scores = scores.masked_fill(dropped.view(B, K), float("-inf"))
            finished = finished | dropped
        going = ~finished.view(B, K).all(-1)[active]  # (A,) which active sequences remain
        if not going.all():
            kept = going.nonzero().squeeze(1)
            state = model.reorder_state(state, (kept.unsqueeze(1) * K + hypotheses).view(-1))
            active = active[kept]
            active_memory = _rows(memory, active)
        if active.numel() == 0:
            break
    choice = (scores.view(-1) / penalty).view(B, K).argmax(-1)  # (B,)
    rows = first_rows.squeeze(1) + choice
    # Follow the back-pointers from the chosen rows to the first step.
    tokens, weights = [], []
    for chosen, step_weights, parents in zip(reversed(chosen_tokens), reversed(chosen_weights), reversed(back)):
        tokens.append(chosen[rows])
        weights.append(step_weights[rows] if step_weights is not None else None)
        rows = parents[rows]
    tokens = torch.stack(tokens[::-1], 1)  # (B, L)
    return Decoded(tokens, _attention(weights[::-1], tokens, model.pad_id))


def _rows(memory, sources: torch.Tensor):
    """The memory of these sources: its tensors have the batch first, alone or in dataclasses,
    lists and tuples (each model's memory is one of those)."""
    if isinstance(memory, torch.Tensor):
        return memory[sources]
    if dataclasses.is_dataclass(memory):
        return dataclasses.replace(memory, **{f.name: _rows(getattr(memory, f.name), sources)
                                              for f in dataclasses.fields(memory)})
    if isinstance(memory, (list, tuple)):
        return type(memory)(_rows(item, sources) for item in memory)
    return memory


def _log_probs(logits: torch.Tensor, model) -> torch.Tensor:
    """log p(next token), with <pad> and <bos> never written: they are no output's tokens. Their
    probability is left out, not spread over the others, so scores stay the model's log p(y|x)."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
    log_probs[:, [model.pad_id, model.bos_id]] = float("-inf")
    return log_probs


def _attention(weights: list, tokens: torch.Tensor, pad_id: int) -> torch.Tensor | None:
    """Each step's weights as (B, L, S), none behind the <pad> that follows an output's <eos>."""
    if weights[0] is None:
        return None
    return torch.stack(weights, 1) * (tokens != pad_id).unsqueeze(-1)
