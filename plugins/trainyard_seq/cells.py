"""The recurrent layers both models are built from: torch's cuDNN-backed nn.RNN (tanh), nn.LSTM
and nn.GRU, with the LSTM's forget gates opened at the start."""

from __future__ import annotations

from torch import nn

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

FORGET_BIAS_HELP = ("lstm: initial bias of the forget gates. 1 (Jozefowicz et al. 2015) keeps half-forgotten "
                    "memories longer than torch's 0; a memory that must last ~50 steps needs more (e.g. 5, close "
                    "to the original LSTM, which had no forget gate).")


def recurrent_layer(cell: str, inputs: int, hidden: int, layers: int, dropout: float, forget_bias: float,
                    bidirectional: bool = False) -> nn.RNNBase:
    """A batch-first stack of `layers` recurrent layers; dropout between layers only (torch's)."""
    rnn = CELLS[cell](inputs, hidden, layers, batch_first=True, bidirectional=bidirectional,
                      dropout=dropout if layers > 1 else 0.0)
    if cell == "lstm":
        # Gates are stacked (input, forget, cell, output) in each bias; the forget gate's total
        # bias is bias_ih + bias_hh, so one carries forget_bias and the other 0. A cell then
        # starts by keeping sigmoid(forget_bias) of its memory per step: 0.5 ** 50 is nothing
        # after 50 steps, sigmoid(5) ** 50 = 0.71 still carries a gradient.
        for name, bias in rnn.named_parameters():
            if name.startswith("bias_"):
                bias.data[hidden:2 * hidden] = forget_bias if name.startswith("bias_ih") else 0.0
    return rnn
