"""The transformer's attention and layers are correct: equal to torch's nn.MultiheadAttention,
causal, blind to padding, and the same with a key-value cache as without."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainyard_transformer.attention import MultiHeadAttention
from trainyard_transformer.decoder_lm import DecoderLM, DecoderLMParams
from trainyard_transformer.layers import Embedding, Stack, TransformerParams

POSITIONS = ["sinusoidal", "learned", "rotary"]


def torch_twin(ours: MultiHeadAttention, d_model: int, heads: int) -> nn.MultiheadAttention:
    twin = nn.MultiheadAttention(d_model, heads, batch_first=True)
    twin.load_state_dict({"in_proj_weight": ours.in_proj.weight, "in_proj_bias": ours.in_proj.bias,
                          "out_proj.weight": ours.out_proj.weight, "out_proj.bias": ours.out_proj.bias})
    return twin.eval()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("need_weights", [False, True])
def test_attention_equals_torch_multihead_attention_with_the_same_weights(causal, need_weights):
    torch.manual_seed(0)
    B, T, D, H = 3, 7, 32, 4
    ours = MultiHeadAttention(D, H).eval()
    twin = torch_twin(ours, D, H)
    x = torch.randn(B, T, D)
    lengths = torch.tensor([7, 5, 2])
    real = torch.arange(T) < lengths.unsqueeze(1)  # (B, T), True at real tokens
    out, weights, _ = ours(x, key_mask=real, causal=causal, need_weights=need_weights)
    future = torch.ones(T, T, dtype=torch.bool).triu(1) if causal else None  # torch's: True = may not look
    expected, expected_weights = twin(x, x, x, key_padding_mask=~real, attn_mask=future, need_weights=True,
                                      average_attn_weights=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    if need_weights:
        torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=1e-5)
        assert torch.allclose(weights.sum(-1), torch.ones(B, H, T))
        assert (weights.masked_select(~real[:, None, None, :].expand_as(weights)) == 0).all()


def test_cross_attention_equals_torch_and_lets_beam_hypotheses_share_their_source():
    torch.manual_seed(1)
    B, K, T, S, D, H = 2, 3, 1, 6, 16, 2
    ours = MultiHeadAttention(D, H).eval()
    twin = torch_twin(ours, D, H)
    memory = torch.randn(B, S, D)
    real = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    queries = torch.randn(B * K, T, D)  # K hypotheses of each source, rows b*K .. b*K + K-1
    out, weights, _ = ours(queries, real, memory=ours.memory_keys_values(memory), need_weights=True)
    expected, expected_weights = twin(queries, memory.repeat_interleave(K, 0), memory.repeat_interleave(K, 0),
                                      key_padding_mask=~real.repeat_interleave(K, 0), average_attn_weights=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=1e-5)


def test_d_model_must_divide_into_heads():
    with pytest.raises(ValueError, match="d_model 30 is not divisible by heads 4"):
        TransformerParams(d_model=30, heads=4)


def tiny_lm(positions: str, norm: str = "pre") -> DecoderLM:
    torch.manual_seed(0)
    params = DecoderLMParams(d_model=32, heads=4, layers=2, dropout=0.0, positions=positions, norm=norm,
                             max_positions=64)
    return DecoderLM(params, vocab_size=20, tokens=[str(i) for i in range(20)], tokenizer="char").eval()


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_changing_a_future_token_never_changes_an_earlier_output(positions, norm):
    model = tiny_lm(positions, norm)
    ids = torch.randint(4, 20, (2, 12))
    changed = ids.clone()
    changed[:, 7] = (changed[:, 7] + 1 - 4) % 16 + 4
    before, after = model(ids), model(changed)
    torch.testing.assert_close(before[:, :7], after[:, :7])
    assert not torch.allclose(before[:, 7:], after[:, 7:])


@pytest.mark.parametrize("positions", POSITIONS)
def test_padding_with_its_mask_never_changes_the_real_positions(positions):
    torch.manual_seed(0)
    params = TransformerParams(d_model=32, heads=4, layers=2, dropout=0.0, positions=positions, max_positions=64)
    embedding, stack = Embedding(params, 20, pad_id=0).eval(), Stack(params).eval()
    ids = torch.randint(4, 20, (3, 9))
    alone, _ = stack(embedding(ids))
    padded = torch.cat([ids, torch.zeros(3, 5, dtype=torch.long)], dim=1)  # five <pad> after every row
    real = torch.arange(14) < 9
    out, _ = stack(embedding(padded), key_mask=real.expand(3, 14))
    torch.testing.assert_close(out[:, :9], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positions", POSITIONS)
def test_generation_with_the_key_value_cache_gives_the_logits_of_the_whole_prefix(positions):
    model = tiny_lm(positions)
    ids = torch.randint(4, 20, (2, 16))
    whole = model(ids)  # (B, T, V), every position from scratch
    logits, cache = model._logits(ids[:, :5])  # a prompt of five, then one token at a time
    steps = [logits]
    for t in range(5, 16):
        logits, cache = model._logits(ids[:, t:t + 1], cache)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, atol=1e-5, rtol=1e-5)
    assert cache[0][0].shape == (2, 4, 16, 8)  # (B, h, t, d): every position's keys kept


def test_learned_positions_end_at_max_positions():
    model = tiny_lm("learned")
    with pytest.raises(ValueError, match="beyond max_positions 64"):
        model(torch.randint(4, 20, (1, 65)))
