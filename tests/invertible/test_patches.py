import pytest
import torch

from irecon.invertible.patches import flat_channels, patch_image, patch_major, write_patch_columns


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "shape,size",
    [((2, 3, 2, 2, 5, 4), (10, 8)), ((1, 2, 4, 2, 3, 3), (12, 6)), ((2, 3, 1, 2, 2, 3, 5, 4), (3, 10, 8))],
)
def test_interleaved_patch_image_equals_the_permuted_copy(
    shape: tuple[int, ...], size: tuple[int, ...], dtype: torch.dtype
) -> None:
    """Patches two pixels wide that tile the image: the complex interleave (no gradient recorded) writes the very
    values the permuted copy does."""
    products = torch.randn(shape, dtype=dtype, requires_grad=True)
    with torch.no_grad():
        interleaved = patch_image(products, size)
    assert torch.equal(interleaved, patch_image(products, size).detach())


@pytest.mark.parametrize("patch", [(2, 2), (4, 2), (1, 2, 2)])
def test_patch_image_inverts_the_patch_major_view(patch: tuple[int, ...]) -> None:
    """The image's patch-major view, made contiguous, comes back as the image (both paths of patch_image)."""
    image = torch.randn(2, 3, *(2 * p * (3 + i) for i, p in enumerate(patch)))
    products = patch_major(image, patch).contiguous()
    with torch.no_grad():
        assert torch.equal(patch_image(products, image.shape[2:]), image)
    assert torch.equal(patch_image(products.requires_grad_(), image.shape[2:]).detach(), image)


@pytest.mark.parametrize("patch", [(1, 1), (2, 2), (4, 2), (1, 2, 4)])
def test_write_patch_columns_writes_the_state_as_one_op_on_its_patch_major_view(patch: tuple[int, ...]) -> None:
    """An in-place update run column by column over the patch changes the state exactly as the same update
    on its whole patch-major view, and nothing outside the view."""
    state = torch.randn(2, 5, *(p * (3 + i) for i, p in enumerate(patch)), dtype=torch.float64)
    values, gates = torch.randn(2, *patch_major(state[:, 1:4], patch).shape, dtype=torch.float64)
    whole = state.clone()
    patch_major(whole[:, 1:4], patch).addcmul_(values, gates, value=-1)
    columns = []

    def addcmul_(column: torch.Tensor, a: torch.Tensor, s: torch.Tensor, value: float) -> torch.Tensor:
        columns.append(column.shape)
        return column.addcmul_(a, s, value=value)

    write_patch_columns(addcmul_, patch_major(state[:, 1:4], patch), values, gates, value=-1)
    assert len(columns) == patch[-1]
    assert torch.equal(state, whole)


def test_flat_channels_views_contiguous_and_channels_last_tensors() -> None:
    x = torch.randn(2, 3, 4, 5)
    last = x.contiguous(memory_format=torch.channels_last)
    for t in (x, last):
        flat = flat_channels(t)
        assert flat.data_ptr() == t.data_ptr() and torch.equal(flat, x.reshape(2, 3, -1))
