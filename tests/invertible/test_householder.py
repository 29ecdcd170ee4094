import torch

from irecon.invertible.householder import HouseholderConv, HouseholderOp, wy_factors


def test_matrix_is_orthogonal_product_of_reflections() -> None:
    torch.manual_seed(0)
    conv = HouseholderConv(6, num_reflections=3).double()
    w = conv.matrix()
    assert torch.allclose(w @ w.t(), torch.eye(6, dtype=torch.float64), atol=1e-14)
    v = conv.vectors
    h = [torch.eye(6, dtype=torch.float64) - 2 * torch.outer(u, u) / u.dot(u) for u in v]
    assert torch.allclose(w, h[0] @ h[1] @ h[2], atol=1e-14)
    assert not torch.allclose(w, w.t())  # a product of 3 reflections is not symmetric


def test_in_place_reflections_equal_dense_conv_both_directions() -> None:
    torch.manual_seed(1)
    conv = HouseholderConv(5).double()
    x = torch.randn(2, 5, 4, 3, 7, dtype=torch.float64)
    for transpose in (False, True):
        op = conv.op(transpose)
        dense = op.transform(x, ())
        y = x.clone()
        op.transform_(y, ())
        assert torch.allclose(y, dense, atol=1e-13)
        op.invert_(y, ())
        assert torch.allclose(y, x, atol=1e-13)


def test_backward_matches_autograd_and_restores_input() -> None:
    torch.manual_seed(2)
    conv = HouseholderConv(7).double()
    for transpose in (False, True):
        op = conv.op(transpose)
        x = torch.randn(3, 7, 5, 6, dtype=torch.float64, requires_grad=True)
        gy = torch.randn(3, 7, 5, 6, dtype=torch.float64)
        conv.zero_grad(set_to_none=True)
        y = op.transform(x, ())
        gx_ref, gv_ref = torch.autograd.grad(y, [x, conv.vectors], gy)
        state, grad = y.detach().clone(), gy.clone()
        (gv,), data_grads = op.backward_(state, grad, ())
        assert data_grads == ()
        assert torch.allclose(state, x.detach(), atol=1e-13)
        assert torch.allclose(grad, gx_ref, atol=1e-12)
        assert torch.allclose(gv, gv_ref, atol=1e-12)


def test_single_reflection_and_few_channels() -> None:
    conv = HouseholderConv(2, num_reflections=3)
    assert conv.vectors.shape == (2, 2)
    one = HouseholderConv(4, num_reflections=1).double()
    assert torch.allclose(one.matrix(), one.matrix().t())


def test_compact_wy_factors_give_the_product_of_reflections() -> None:
    torch.manual_seed(2)
    for n in (1, 2, 3, 5):
        conv = HouseholderConv(7, num_reflections=n).double()
        eye = torch.eye(7, dtype=torch.float64)
        for transpose, expected in ((False, conv.matrix()), (True, conv.matrix().t())):
            a, v = wy_factors(conv.vectors, transpose)
            assert torch.allclose(eye - a @ v.t(), expected, atol=1e-14)


def test_a_chain_of_rotations_applies_their_product() -> None:
    torch.manual_seed(3)
    first, second = HouseholderConv(5).double(), HouseholderConv(5, num_reflections=2).double()
    op = HouseholderOp(((first, True), (second, False)))
    assert op.op_parameters == (first.vectors, second.vectors)
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    expected = torch.einsum("ij,bj...->bi...", second.matrix() @ first.matrix().t(), x)
    assert torch.allclose(op.transform(x, ()), expected, atol=1e-13)
    y = x.clone()
    op.transform_(y, ())
    assert torch.allclose(y, expected, atol=1e-13)
    op.invert_(y, ())
    assert torch.allclose(y, x, atol=1e-13)
