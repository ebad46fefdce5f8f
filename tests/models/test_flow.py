"""The invertible flow: exact inverses and exact log-determinants, layer by layer and whole."""

from __future__ import annotations

import pytest
import torch

from audiointerp.models.flow import ActNorm, Coupling, Flow, Householder, Permutation, coupling_mask


def randomise(module: torch.nn.Module, std: float = 0.5) -> torch.nn.Module:
    """Non-trivial parameters (couplings start as the identity)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, std)
    return module


def autograd_logdet(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(lambda v: module(v[None])[0][0], row))[1]
                        for row in x])


LAYERS = {
    "actnorm": lambda: ActNorm(6),
    "affine": lambda: Coupling(6, coupling_mask(6, "checkerboard"), hidden=8, depth=2, kind="affine"),
    "additive": lambda: Coupling(6, coupling_mask(6, "halves"), hidden=8, depth=2, kind="additive"),
    "permutation": lambda: Permutation(6, seed=3),
    "householder": lambda: Householder(6, reflections=4),
    "flow": lambda: Flow(6, blocks=2, hidden=8, depth=2),
    "flow-additive": lambda: Flow(6, blocks=2, hidden=8, depth=2, coupling="additive", mask="halves", householder=0),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_inverse_and_exact_log_determinant(name: str) -> None:
    module = randomise(LAYERS[name]().double()).eval()
    x = torch.randn(5, 6, dtype=torch.float64)
    y, logdet = module(x)
    torch.testing.assert_close(module.inverse(y), x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logdet, autograd_logdet(module, x), rtol=1e-8, atol=1e-8)


def test_float32_round_trip_of_a_64_dimensional_flow_within_1e_4_relative() -> None:
    flow = Flow(64, blocks=3, hidden=64, depth=3).train()
    x = torch.randn(256, 64) * 3 + 1
    flow(x)  # ActNorms initialise from the data
    for coupling in (m for m in flow.modules() if isinstance(m, Coupling)):
        randomise(coupling.net, std=0.1)
    flow.eval()
    z, _ = flow(x)
    assert ((flow.inverse(z) - x).norm() / x.norm()) < 1e-4


def test_actnorm_initialises_from_the_first_training_batch() -> None:
    norm = ActNorm(4).train()
    x = torch.randn(512, 4) * torch.tensor([1.0, 2.0, 5.0, 0.5]) + torch.tensor([3.0, -1.0, 0.0, 7.0])
    y, _ = norm(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(0, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    before = norm.shift.detach().clone()
    norm(x * 10)  # later batches do not re-initialise
    assert torch.equal(norm.shift.detach(), before) and bool(norm.initialised)


def test_new_couplings_start_as_the_identity_and_bad_options_are_refused() -> None:
    x = torch.randn(3, 6)
    y, logdet = Coupling(6, coupling_mask(6, "checkerboard"))(x)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(3))
    with pytest.raises(ValueError, match="affine or additive"):
        Coupling(6, coupling_mask(6, "halves"), kind="spline")
    with pytest.raises(ValueError, match="checkerboard or halves"):
        coupling_mask(6, "stripes")


def test_a_loaded_state_dict_sets_the_masks_indices_and_actnorms_flag() -> None:
    """Loading replaces the mask buffer and `initialised`: the couplings' indices and ActNorm's cached flag follow
    it (a fresh ActNorm loading an initialised one does not re-initialise from its first batch, and back)."""
    source = randomise(Coupling(6, coupling_mask(6, "halves"), hidden=8, depth=2))
    target = Coupling(6, coupling_mask(6, "halves"), hidden=8, depth=2)
    target.mask.copy_(~target.mask)  # another mask before loading: the indices must follow the loaded one
    target._index_halves()
    target.load_state_dict(source.state_dict())
    x = torch.randn(4, 6)
    torch.testing.assert_close(target(x)[0], source(x)[0], rtol=0, atol=0)
    assert target.kept.tolist() == [0, 1, 2] and target.changed.tolist() == [3, 4, 5]
    initialised = ActNorm(3).train()
    initialised(torch.randn(64, 3) * 4 + 2)
    fresh = ActNorm(3).train()
    fresh(torch.randn(64, 3))  # initialised and cached...
    fresh.load_state_dict(initialised.state_dict())  # ...then loaded: its flag is read again, and is True
    batch = torch.randn(8, 3)
    torch.testing.assert_close(fresh(batch)[0], initialised(batch)[0], rtol=0, atol=0)
    blank = ActNorm(3).train()
    initialised.load_state_dict(blank.state_dict())  # an uninitialised state: the next batch initialises it
    y, _ = initialised(batch)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-5, rtol=0)


def test_a_training_step_has_no_data_dependent_operation() -> None:
    """The whole flow, forward and backward in training mode, traces as one graph (`fullgraph=True`): no boolean
    masks (`nonzero`) and no per-step read of ActNorm's flag, each a host-device synchronisation on a GPU and a
    graph break under `torch.compile`. The compiled step equals the eager one."""
    torch._dynamo.reset()
    eager = Flow(8, blocks=2, hidden=16, depth=2, coupling="affine", householder=2).train()
    compiled = Flow(8, blocks=2, hidden=16, depth=2, coupling="affine", householder=2).train()
    x = torch.randn(32, 8) * 3 + 1
    eager(x), compiled(x)  # the first batch initialises ActNorm (one read of its flag, before compiling)
    compiled.load_state_dict(eager.state_dict())
    compiled(x)  # reads the loaded flag once
    step = torch.compile(compiled, fullgraph=True, backend="aot_eager")
    for batch in (torch.randn(32, 8), torch.randn(32, 8)):
        z, logdet = step(batch)
        (z.square().sum() - logdet.sum()).backward()
        z_ref, logdet_ref = eager(batch)
        (z_ref.square().sum() - logdet_ref.sum()).backward()
        torch.testing.assert_close(z, z_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logdet, logdet_ref, rtol=1e-5, atol=1e-5)
    for (name, ours), theirs in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-4, atol=1e-5, msg=name)
    torch._dynamo.reset()
