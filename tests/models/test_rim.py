import torch

from irecon.models.rim import RIM


def test_rim_returns_one_estimate_per_step_single_and_multi_coil() -> None:
    torch.manual_seed(0)
    for coils in (1, 4):
        model = RIM(coils=coils, steps=5, hidden=8)
        mask = (torch.rand(2, 1, 1, 11) > 0.5).float()
        kspace = torch.randn(2, coils, 13, 11, dtype=torch.complex64) * mask
        estimates = model(kspace, mask)
        assert len(estimates) == 5
        assert all(e.shape == (2, 13, 11) for e in estimates)
        assert not torch.equal(estimates[0], estimates[-1])
        sum(e.mean() for e in estimates).backward()
        assert all(p.grad is not None for p in model.parameters())
