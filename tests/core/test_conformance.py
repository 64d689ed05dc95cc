"""The conformance kit: every built-in component passes it, and broken ones fail with one line."""

from __future__ import annotations

import dataclasses

import gymnasium
import numpy as np
import pytest
import torch
from pydantic import Field
from pytorch_lightning import LightningDataModule, LightningModule
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

from trainyard import Example, Params, algorithm, datamodule, environment, model
from trainyard.cli import app
from trainyard.conformance import check_component
from trainyard.registry import Registered, get_registry
from trainyard.testing import assert_conforms, components_of


# Every component of every plugin installed in the test environment: the built-in ones (the test
# fixtures' plugins are only importable inside the tests that ask for them).
@pytest.mark.parametrize("name", components_of())
def test_every_installed_component_conforms(name):
    assert_conforms(name)


def test_the_builtin_plugins_are_among_those_checked():
    assert {name.split(".")[0] for name in components_of()} >= {"cnn", "rl"}


# --- deliberately broken components --------------------------------------------------------------


class TinyParams(Params):
    width: int = Field(4, ge=1, description="Hidden units.")


class Tiny(LightningModule):
    def __init__(self, width: int, poison: bool = False):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.ReLU(), torch.nn.Linear(width, 3))
        self.example_input_array = torch.zeros(1, 2)
        self.poison = poison

    def forward(self, x):
        out = self.net(x)
        return out * float("nan") if self.poison else out

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)


class Points(LightningDataModule):
    def __init__(self, features: int = 2):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.dataset = TensorDataset(torch.randn(32, features, generator=generator), torch.randint(0, 3, (32,)))

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=4, shuffle=True)


def failures_of(component) -> list[str]:
    return [str(failure) for failure in check_component(Registered("t", component), get_registry())]


POINTS_BATCH = (("float32", (None, 2)), ("int64", (None,)))


def tiny_model(poison=False, **example):
    @model(TinyParams, example=Example(output_shape=(1, 3), **example))
    def tiny(params, ctx):
        """A tiny classifier."""
        return Tiny(params.width, poison)
    return tiny


def test_a_conforming_tiny_model_passes(monkeypatch):
    points = datamodule(Params, name="points", example=Example(batch=POINTS_BATCH))(lambda p, ctx: Points())
    monkeypatch.setitem(get_registry().components["datamodule"], "t.points", Registered("t", points))
    assert failures_of(tiny_model(data={"name": "t.points"})) == []
    assert failures_of(points) == []


def test_nan_in_forward(monkeypatch):
    points = datamodule(Params, name="points")(lambda p, ctx: Points())
    monkeypatch.setitem(get_registry().components["datamodule"], "t.points", Registered("t", points))
    assert failures_of(tiny_model(poison=True, data={"name": "t.points"})) == [
        "t.tiny: forward: the output has NaN or infinite values"]


def test_undocumented_params():
    class Sloppy(Params):
        width: int = 4

    @environment(Sloppy)
    def sloppy(params, ctx):
        """An environment with sloppy params."""
        return gymnasium.make("trainyard/GridWorld-v0")

    assert failures_of(sloppy) == ["t.sloppy: params: 'width' has no description (Field(..., description=...))"]


def test_undeclared_param_in_the_example():
    @environment(TinyParams, example=Example(params={"widht": 3}))
    def typo(params, ctx):
        """An example that sets a param the component does not declare."""
        return gymnasium.make("trainyard/GridWorld-v0")

    assert failures_of(typo) == ["t.typo: params: the example's params do not validate: widht: "
                                 "Extra inputs are not permitted"]


def test_wrong_batch_shapes():
    @datamodule(Params, example=Example(batch=(("float32", (None, 3)), ("int64", (None,)))))
    def points(params, ctx):
        """Points with two features, declared as three."""
        return Points()

    assert failures_of(points) == ["t.points: batch: tensor 0 is float32 (4, 2), declared float32 (None, 3)"]


def test_unseeded_batches():
    class Unseeded(Points):
        def train_dataloader(self):
            # A generator of its own, seeded from the clock: the run's seed cannot reach it.
            return DataLoader(self.dataset, batch_size=4, shuffle=True,
                              generator=torch.Generator().manual_seed(np.random.SeedSequence().entropy % 2**63))

    @datamodule(Params)
    def unseeded(params, ctx):
        """Batches in an order no seed fixes."""
        return Unseeded()

    assert failures_of(unseeded) == ["t.unseeded: seed: the same seed gives different training batches"]


def test_environment_that_breaks_gymnasiums_api():
    class NoSeed(gymnasium.Env):
        observation_space = gymnasium.spaces.Discrete(2)
        action_space = gymnasium.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            return 0, {}  # ignores the seed: check_env notices

        def step(self, action):
            return 1, 0.0, True, False, {}

    @environment(Params)
    def noseed(params, ctx):
        """An environment whose reset ignores its seed."""
        return NoSeed()

    [line] = failures_of(noseed)
    assert line.startswith("t.noseed: check_env: AssertionError: ")


def test_algorithm_that_does_not_solve_its_example():
    class Lazy:
        def run(self, sink):
            sink.log_metrics({"eval/success": 0.0}, step=1)
            return {"eval/success": 0.0}

    @algorithm(Params, metrics=("eval/success",), example=Example(env={"name": "FrozenLake-v1"},
                                                                  solves={"eval/success": 0.9}))
    def lazy(params, ctx):
        """Never moves."""
        return Lazy()

    assert failures_of(lazy) == ["t.lazy: solves: eval/success is 0, needs at least 0.9"]


def test_plugin_check_command():
    result = CliRunner().invoke(app, ["plugin", "check", "rl"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("rl: 8 components conform: rl.dqn, ")
    missing = CliRunner().invoke(app, ["plugin", "check", "nope"])
    assert missing.exit_code == 2 and missing.stderr.strip() == "no plugin named 'nope' is installed (see `trainyard plugins`)"


# --- every model family: structured outputs, sampling, tokens, facts, optimizers ----------------


@pytest.fixture
def points(monkeypatch):
    """Registers the Points data module as t.points, for models to train on."""
    component = datamodule(Params, name="points")(lambda p, ctx: Points())
    monkeypatch.setitem(get_registry().components["datamodule"], "t.points", Registered("t", component))


@dataclasses.dataclass
class Classified:
    logits: torch.Tensor
    hidden: torch.Tensor


class Structured(LightningModule):
    """Tiny, with its logits inside a tuple, a dict or a dataclass, and a tuple input (x, scale)."""

    def __init__(self, packing: str):
        super().__init__()
        self.encoder = torch.nn.Linear(2, 4)
        self.head = torch.nn.Linear(4, 3)
        self.packing = packing
        self.example_input_array = (torch.zeros(1, 2), torch.tensor(1.0))

    def forward(self, x, scale):
        hidden = torch.relu(self.encoder(x))
        logits = self.head(hidden) * scale
        if self.packing == "tuple":  # the sampled class is an integer output: not differentiated
            return logits, hidden, logits.argmax(-1)
        if self.packing == "dict":
            return {"logits": logits, "hidden": hidden}
        return Classified(logits, hidden)

    def training_step(self, batch, batch_idx):
        x, y = batch
        output = self(x, torch.tensor(1.0))
        logits = output[0] if self.packing == "tuple" else output["logits"] if self.packing == "dict" else output.logits
        return torch.nn.functional.cross_entropy(logits, y)


STRUCTURES = {"tuple": ((1, 3), (1, 4), (1,)), "dict": {"logits": (1, 3), "hidden": (1, None)},
              "dataclass": {"logits": (1, 3), "hidden": None}}


def structured_model(packing: str, output_shape):
    @model(Params, name="structured", example=Example(output_shape=output_shape, data={"name": "t.points"}))
    def structured(params, ctx):
        """Tiny with a structured output."""
        return Structured(packing)
    return structured


@pytest.mark.parametrize("packing", STRUCTURES)
def test_tuple_dict_and_dataclass_outputs_pass(points, packing):
    assert failures_of(structured_model(packing, STRUCTURES[packing])) == []


@pytest.mark.parametrize(("packing", "declared", "line"), [
    ("tuple", ((1, 3), (1, 8), (1,)), "output[1] shape (1, 4), declared (1, 8)"),
    ("tuple", ((1, 3), (1, 4)), "output has 3 elements, declared 2"),
    ("dict", {"logits": (1, 3), "state": None}, "output has no 'state' (it has: 'logits', 'hidden')"),
    ("dataclass", {"logits": (1, 5), "hidden": None}, "output.logits shape (1, 3), declared (1, 5)"),
    ("dict", (1, 3), "output is a dict, declared a tensor of shape (1, 3)"),
])
def test_a_structure_mismatch_is_one_line(points, packing, declared, line):
    assert failures_of(structured_model(packing, declared)) == [f"t.structured: forward: {line}"]


def test_a_tensor_output_declared_as_a_structure(points):
    tiny = model(TinyParams, name="tiny", example=Example(output_shape=((1, 3), (1, 3)), data={"name": "t.points"}))(
        lambda params, ctx: Tiny(params.width))
    assert failures_of(tiny) == ["t.tiny: forward: output is a tensor of shape (1, 3), declared a tuple of 2"]


class Vae(LightningModule):
    """A VAE whose forward samples its latent (the reparameterisation trick)."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(2, 4)  # the latent's mean and log-variance, two each
        self.decoder = torch.nn.Linear(2, 2)
        self.example_input_array = torch.zeros(1, 2)

    def forward(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decoder(z), mu, logvar

    def training_step(self, batch, batch_idx):
        x, _ = batch
        reconstruction, mu, logvar = self(x)
        kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(-1).mean()
        return torch.nn.functional.mse_loss(reconstruction, x) + kl


def test_a_sampling_model_round_trips_under_the_fixed_seed(points):
    vae = model(Params, name="vae", example=Example(output_shape=((1, 2), (1, 2), (1, 2)), data={"name": "t.points"}))(
        lambda params, ctx: Vae())
    assert failures_of(vae) == []


# Token ids of variable length, padded, with a mask, the lengths and the source texts.
SENTENCES = ["a b c", "b c", "c a b a", "a", "b b", "c b a", "a c", "b a c b"]
VOCABULARY = {"<pad>": 0, "a": 1, "b": 2, "c": 3}


class Tokens(LightningDataModule):
    def __init__(self, ctx, facts=None):
        super().__init__()
        # What a real module derives from its input files goes to the cache the kit gives it.
        self.vocabulary = ctx.cache.json("vocab", inputs=[], compute=lambda: VOCABULARY)
        self._facts = facts

    def facts(self):
        return self._facts if self._facts is not None else {"vocab_size": len(self.vocabulary), "pad_id": 0}

    def train_dataloader(self):
        return DataLoader(SENTENCES, batch_size=4, shuffle=True, collate_fn=self.collate)

    def collate(self, texts):
        ids = [torch.tensor([self.vocabulary[word] for word in text.split()]) for text in texts]
        padded = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=0)
        return {"ids": padded, "mask": padded != 0, "lengths": torch.tensor([len(i) for i in ids]),
                "text": list(texts)}


TOKENS_BATCH = {"ids": ("int64", (4, None)), "mask": ("bool", (4, None)), "lengths": ("int64", (4,)),
                "text": "list"}


def tokens(batch=TOKENS_BATCH, facts=None):
    @datamodule(Params, example=Example(batch=batch))
    def tokens(params, ctx):
        """Variable-length token ids."""
        return Tokens(ctx, facts)
    return tokens


def test_a_token_data_module_with_mapping_batches_passes():
    assert failures_of(tokens()) == []


@pytest.mark.parametrize(("change", "line"), [
    ({"ids": ("int32", (4, None))}, "'ids' is int64 (4, 4), declared int32 (4, None)"),
    ({"text": "str"}, "'text' is a list of 4, declared str"),
    ({"mask": "list"}, "'mask' is a tensor of shape (4, 4), declared list"),
    ({"extra": ("int64", (4,))}, "the batch has 'ids', 'mask', 'lengths', 'text', declared 'ids', 'mask', "
                                 "'lengths', 'text', 'extra'"),
])
def test_a_wrong_batch_declaration_is_one_line(change, line):
    assert failures_of(tokens(TOKENS_BATCH | change)) == [f"t.tokens: batch: {line}"]


def test_facts_must_be_a_mapping_of_names():
    assert failures_of(tokens(facts=[1, 2])) == ["t.tokens: facts: t.tokens.facts() returned a list, not a "
                                                 "mapping of names"]


class Recurrent(LightningModule):
    """A language model sized by its data's facts, called with keyword inputs."""

    def __init__(self, vocab_size: int, pad_id: int):
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab_size, 4, padding_idx=pad_id)
        self.head = torch.nn.Linear(4, vocab_size)
        self.example_input_array = {"ids": torch.tensor([[1, 2, 0]]), "mask": torch.tensor([[True, True, False]])}

    def forward(self, ids, mask):
        return {"logits": self.head(self.embedding(ids)) * mask.unsqueeze(-1)}

    def training_step(self, batch, batch_idx):
        logits = self(batch["ids"], batch["mask"])["logits"]
        return torch.nn.functional.cross_entropy(logits[batch["mask"]], batch["ids"][batch["mask"]])


@pytest.fixture
def token_data(monkeypatch):
    monkeypatch.setitem(get_registry().components["datamodule"], "t.tokens", Registered("t", tokens()))


def language_model(facts=("vocab_size", "pad_id"), module=Recurrent):
    @model(Params, name="lm", facts=facts, example=Example(output_shape={"logits": (1, 3, 4)},
                                                           data={"name": "t.tokens"}))
    def lm(params, ctx):
        """A tiny language model."""
        return module(ctx.facts["vocab_size"], ctx.facts["pad_id"])
    return lm


def test_a_model_sized_by_its_datas_facts_passes(token_data):
    assert failures_of(language_model()) == []


def test_a_model_that_reads_a_fact_its_data_does_not_give(token_data):
    assert failures_of(language_model(facts=("vocab_size", "max_length"))) == [
        "t.lm: facts: t.lm reads 'max_length', which t.tokens does not give (it gives: pad_id, vocab_size)"]


def one_line(failures: list[str]) -> str:
    """The one failure, checked to be a line and no traceback."""
    [line] = failures
    assert "\n" not in line and "Traceback" not in line
    return line


def test_exceptions_inside_components_are_one_line(token_data):
    class NoFacts(Tokens):
        def facts(self):
            return {"vocab_size": self.vocabulary["<unk>"]}

    class NoSetup(Tokens):
        def setup(self, stage):
            raise RuntimeError("the corpus is missing\n  (a second line)")

    class Refuses(Recurrent):
        def forward(self, ids, mask):
            raise ValueError("mask must be float")

    no_facts = datamodule(Params, name="nofacts")(lambda params, ctx: NoFacts(ctx))
    no_setup = datamodule(Params, name="nosetup")(lambda params, ctx: NoSetup(ctx))
    assert one_line(failures_of(no_facts)) == "t.nofacts: facts: KeyError: '<unk>'"
    assert one_line(failures_of(no_setup)) == "t.nosetup: batch: RuntimeError: the corpus is missing"
    assert one_line(failures_of(language_model(module=Refuses))) == "t.lm: forward: ValueError: mask must be float"


def test_configure_optimizers_without_declaring_own(points):
    class Own(Tiny):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    undeclared = model(TinyParams, name="own", example=Example(data={"name": "t.points"}))(
        lambda params, ctx: Own(params.width))
    assert failures_of(undeclared) == [
        "t.own: optimizers: Own defines configure_optimizers: declare the model with optimizers='own' "
        "(the spec's optimizer section would be ignored otherwise)"]
    declared = model(TinyParams, name="own", optimizers="own", example=Example(data={"name": "t.points"}))(
        lambda params, ctx: Own(params.width))
    assert failures_of(declared) == []


class Gan(LightningModule):
    """A generator and a discriminator, one optimizer each, stepped by hand."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.generator = torch.nn.Linear(2, 2)
        self.discriminator = torch.nn.Linear(2, 1)
        self.example_input_array = torch.zeros(1, 2)

    def forward(self, z):
        return self.generator(z)

    def training_step(self, batch, batch_idx):
        real, _ = batch
        opt_g, opt_d = self.optimizers()
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        fake = self(torch.randn_like(real))
        d_real, d_fake = self.discriminator(real), self.discriminator(fake.detach())
        d_loss = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        g_score = self.discriminator(fake)
        g_loss = bce(g_score, torch.ones_like(g_score))
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()


def test_a_two_optimizer_manual_optimization_model_passes(points):
    gan = model(Params, name="gan", optimizers={"generator": "generator", "discriminator": "discriminator"},
                example=Example(output_shape=(1, 2), data={"name": "t.points"}))(lambda params, ctx: Gan())
    assert failures_of(gan) == []
