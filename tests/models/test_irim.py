import pytest
import torch

from irecon.invertible.engine import invertible_chain
from irecon.models.irim import IRIM, input_scale
from irecon.physics import center_crop, root_sum_of_squares_image, zero_filled


def _model(dims: int, coils: int = 1, multiplicity: int = 1, memory_free: bool = True, **kw) -> IRIM:
    torch.manual_seed(0)
    defaults = dict(steps=3, n_latent=4 * coils * multiplicity + 4, strides=(1, 2), hidden=(5, 6))
    defaults.update(kw)
    return IRIM(coils=coils, dims=dims, multiplicity=multiplicity, memory_free=memory_free, **defaults).double()


def _data(coils: int, spatial: tuple[int, ...], batch: int = 2):
    torch.manual_seed(1)
    mask = (torch.rand(batch, 1, *([1] * (len(spatial) - 1)), spatial[-1]) > 0.5).double()
    return torch.randn(batch, coils, *spatial, dtype=torch.complex128) * mask, mask


@pytest.mark.parametrize("dims,coils,multiplicity", [(2, 1, 1), (2, 3, 2), (3, 2, 1)])
def test_memory_free_and_plain_agree_on_outputs_and_gradients(dims: int, coils: int, multiplicity: int) -> None:
    spatial = (13, 11) if dims == 2 else (3, 9, 7)
    kspace, mask = _data(coils, spatial)
    results = []
    for memory_free in (True, False):
        model = _model(dims, coils, multiplicity, memory_free)
        output = model(kspace, mask)[-1]
        output.square().mean().backward()
        results.append((output.detach(), [p.grad for p in model.parameters()]))
    (out1, grads1), (out0, grads0) = results
    assert torch.allclose(out1, out0, rtol=1e-12, atol=0)
    assert len(grads1) == len(grads0)
    for a, b in zip(grads1, grads0):
        assert ((a - b).norm() / b.norm()).item() < 1e-10


def test_steps_have_distinct_weights_and_whole_model_reverse_is_exact() -> None:
    model = _model(2)
    first = [layer.rotation.vectors for layer in (step[0] for step in model.steps)]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    kspace, mask = _data(1, (13, 11))
    with torch.no_grad():
        x0, scaled, _ = model.initial_state(kspace, mask)
        state, _, _ = model.run_state(kspace, mask)
        restored = model.reverse_state(state, scaled, mask)
    assert (state - x0).abs().max() > 1e-2
    assert (restored - x0).abs().max() <= 1e-12 * x0.abs().max()


def test_each_layer_is_one_op_with_the_map_of_its_rotation_coupling_and_inverse_rotation() -> None:
    model = _model(2)
    ops = model.ops()
    step = model.steps[0]
    assert ops[0] is model.data_consistency and ops[3] is model.data_consistency
    assert ops[1] is step[0] and ops[2] is step[1]
    unfolded = [model.data_consistency]
    for layers in model.steps:
        for layer in layers:
            unfolded += [layer.rotation.op(), layer.coupling, layer.rotation.op(transpose=True)]
        unfolded.append(model.data_consistency)
    kspace, mask = _data(1, (13, 11))
    state, scaled, _ = model.initial_state(kspace, mask)
    state[:, 4:] = torch.randn_like(state[:, 4:])
    results = []
    for chain in (ops, unfolded):
        model.zero_grad(set_to_none=True)
        out = invertible_chain(state, chain, (scaled, mask))
        out.square().sum().backward()
        results.append((out.detach(), [p.grad for p in model.parameters() if p.grad is not None]))
    (folded_out, folded_grads), (out, grads) = results
    assert torch.allclose(folded_out, out, rtol=0, atol=1e-12)
    assert len(folded_grads) == len(grads) == len(list(model.steps.parameters()))
    for a, b in zip(folded_grads, grads):
        assert ((a - b).norm() / b.norm()).item() < 1e-10


def test_shared_weights_reuses_one_step() -> None:
    model = _model(2, shared_weights=True)
    assert model.steps[0] is model.steps[1] is model.steps[2]


def test_initial_state_layout_and_scale() -> None:
    coils, multiplicity = 2, 2
    model = _model(2, coils, multiplicity, norm_crop=(8, 8))
    kspace, mask = _data(coils, (13, 11))
    state, scaled, scale = model.initial_state(kspace, mask)
    image = zero_filled(kspace, mask)
    expected_scale = center_crop(image, (8, 8)).flatten(1).std(dim=1) + 1e-6
    assert torch.allclose(scale.flatten(), expected_scale)
    image = image / scale
    assert torch.allclose(state[:, 0:2], image[:, 0:2]) and torch.allclose(state[:, 2:4], image[:, 0:2])
    assert torch.allclose(state[:, 4:6], image[:, 2:4]) and torch.allclose(state[:, 6:8], image[:, 2:4])
    assert torch.count_nonzero(state[:, 8:]) == 0
    assert torch.allclose(scaled, kspace / scale)


def test_output_is_rescaled_back() -> None:
    model = _model(2, parametric_output=False, steps=1)
    kspace, mask = _data(1, (13, 11))
    with torch.no_grad():
        small = model(kspace, mask)[-1]
        large = model(kspace * 1000, mask)[-1]
    assert torch.allclose(large, small * 1000, rtol=1e-6)


def test_input_scale_uses_central_crop() -> None:
    image = torch.zeros(1, 2, 10, 10, dtype=torch.float64)
    image[:, :, 4:6, 4:6] = torch.tensor([[1.0, -1.0], [2.0, -2.0]])
    outer = image.clone()
    outer[:, :, 0, 0] = 100.0
    assert torch.equal(input_scale(image, (4, 4)), input_scale(outer, (4, 4)))


@pytest.mark.parametrize("pattern", ["full+mask", "full*mask"])
def test_mask_gradients_match_plain_autograd(pattern: str) -> None:
    """A learned mask: it enters the data both directly and through the k-space."""
    kspace, mask = _data(1, (13, 11))
    full = kspace + torch.randn_like(kspace)
    results = []
    for memory_free in (True, False):
        model = _model(2, memory_free=memory_free)
        learned = mask.clone().requires_grad_()
        data = full + learned if pattern == "full+mask" else full * learned
        model(data, learned)[-1].square().mean().backward()
        results.append((learned.grad, [p.grad for p in model.parameters()]))
    (mask1, grads1), (mask0, grads0) = results
    assert mask0.abs().max() > 0
    assert ((mask1 - mask0).norm() / mask0.norm()).item() < 1e-10
    for a, b in zip(grads1, grads0):
        assert ((a - b).norm() / b.norm()).item() < 1e-10


def test_keep_step_states_keeps_the_gradients_exact() -> None:
    kspace, mask = _data(1, (13, 11))
    model = _model(2)
    assert model.step_boundaries() == [0, 3, 6, 9]
    results = []
    for keep in (True, False):
        model.zero_grad(set_to_none=True)
        model.keep_step_states = keep
        model(kspace, mask)[-1].square().mean().backward()
        results.append([p.grad for p in model.parameters()])
    model.memory_free = False
    model.zero_grad(set_to_none=True)
    model(kspace, mask)[-1].square().mean().backward()
    for kept, free, plain in zip(*results, [p.grad for p in model.parameters()]):
        assert ((kept - plain).norm() / plain.norm()).item() < 1e-10
        assert ((free - plain).norm() / plain.norm()).item() < 1e-10


def _start_heads(model: IRIM) -> IRIM:
    """Give a residual head a non-zero last gain, so every head weight gets a gradient."""
    with torch.no_grad():
        model.head.layers[-1].parametrizations.weight.original0.fill_(0.3)
    return model


@pytest.mark.parametrize("output,coils,multiplicity", [("residual", 1, 1), ("residual", 3, 2), ("residual-rss", 3, 1)])
def test_residual_outputs_memory_free_and_plain_autograd_agree(output: str, coils: int, multiplicity: int) -> None:
    kspace, mask = _data(coils, (13, 11))
    results = []
    for memory_free in (True, False):
        model = _start_heads(_model(2, coils, multiplicity, memory_free, output=output))
        model(kspace, mask)[-1].square().mean().backward()
        results.append([p.grad for p in model.parameters()])
        # One output channel: the transposed conv's per-input-channel weight norm leaves only the gains free.
        head = [
            p.grad
            for n, p in model.head.named_parameters()
            if not (output == "residual-rss" and n.endswith("4.parametrizations.weight.original1"))
        ]
        assert all(g.abs().max() > 1e-6 for g in head)
    total = torch.cat([g.flatten() for g in results[1]]).norm()
    for a, b in zip(*results):
        assert (a - b).norm() <= 1e-10 * max(b.norm(), total * 1e-6)


@pytest.mark.parametrize("output,coils,multiplicity", [("residual", 1, 2), ("residual", 3, 1), ("residual-rss", 3, 2)])
def test_untrained_residual_output_is_the_state_image_and_near_zero_filled(
    output: str, coils: int, multiplicity: int
) -> None:
    kspace, mask = _data(coils, (16, 12))
    model = _model(2, coils, multiplicity, output=output)
    with torch.no_grad():
        estimate = model(kspace, mask)[-1]
        state, _, scale = model.run_state(kspace, mask)
    half = model.image_channels // 2
    copies = torch.stack([state[:, :half], state[:, half : 2 * half]], dim=1).unflatten(2, (multiplicity, coils))
    expected = root_sum_of_squares_image(copies.mean(dim=2).flatten(1, 2)) * scale.view(-1, 1, 1)
    assert torch.allclose(estimate, expected, rtol=1e-12)
    zero = root_sum_of_squares_image(zero_filled(kspace, mask))
    assert 0 < ((estimate - zero).norm() / zero.norm()).item() < 0.1
    official = _model(2, coils, multiplicity, output="official")
    with torch.no_grad():
        assert ((official(kspace, mask)[-1] - zero).norm() / zero.norm()).item() > 0.5


def test_unknown_output_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown output"):
        IRIM(output="magnitude")
