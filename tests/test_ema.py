"""EMA teacher, beta schedule, hybrid teacher (SURF Appendix D.3; docs/math.md, section 8)."""
import pytest
import torch

from surf_mini.ema import beta_at, ema_update, hybrid_teacher_sample
from surf_mini.flow import euler_sample, initial_state, zero_sum
from surf_mini.mixit import mixture_consistency


def nets(gen):
    torch.manual_seed(0)
    s = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    t = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    s(torch.randn(8, 4, generator=gen))  # move the running stats and the counter
    return s, t


def test_ema_update(gen):
    s, t = nets(gen)
    t0 = {k: v.clone() for k, v in t.state_dict().items()}
    ema_update(t, s, 0.9)
    for k, v in t.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.9 * t0[k] + 0.1 * s.state_dict()[k])
        else:
            assert torch.equal(v, s.state_dict()[k])  # counters are copied
    ema_update(t, s, 0.0)
    for k, v in t.state_dict().items():
        torch.testing.assert_close(v, s.state_dict()[k])
    before = {k: v.clone() for k, v in t.state_dict().items()}
    with torch.no_grad():
        s[0].weight.add_(1.0)
    ema_update(t, s, 1.0)
    torch.testing.assert_close(t[0].weight, before["0.weight"])
    with pytest.raises(ValueError):
        ema_update(t, s, 1.5)


def test_ema_update_unwraps_compiled_modules(gen):
    s, t = nets(gen)

    class Wrapper(torch.nn.Module):  # what torch.compile returns: the module as _orig_mod
        def __init__(self, mod):
            super().__init__()
            self._orig_mod = mod

    ema_update(Wrapper(t), s, 0.0)
    torch.testing.assert_close(t[0].weight, s[0].weight)


def test_beta_schedule():
    assert beta_at(0, 100) == 1.0
    assert beta_at(50, 100) == 0.5
    assert beta_at(100, 100) == 0.0 and beta_at(10_000, 100) == 0.0
    assert beta_at(0, 0) == 0.0


class Counting:
    """A flow velocity that counts its calls and records the times it was called at."""

    def __init__(self, gen):
        self.w = torch.randn(4, 4, generator=gen, dtype=torch.float64)
        self.times = []

    def __call__(self, x, t, m):
        self.times.append(t[0].item())
        return zero_sum(torch.tanh(x @ self.w) + m)


def setup(gen, B=5, K=3):
    m = torch.randn(B, 1, 4, generator=gen, dtype=torch.float64)
    raw = torch.randn(B, K, 4, generator=gen, dtype=torch.float64)  # not consistent on its own
    x0 = initial_state(m, K, generator=gen)
    return m, raw, x0


def test_hybrid_beta_one_is_the_mixit_estimate(gen):
    m, raw, x0 = setup(gen)
    flow = Counting(gen)
    out = hybrid_teacher_sample(lambda m_: raw, flow, m, 3, beta=1.0, x0=x0)
    torch.testing.assert_close(out, mixture_consistency(raw, m), rtol=0, atol=1e-12)
    assert flow.times == []  # the flow network is never evaluated


def test_hybrid_beta_zero_is_the_flow_sampler(gen):
    m, raw, x0 = setup(gen)
    flow = Counting(gen)
    out = hybrid_teacher_sample(lambda m_: raw, flow, m, 3, beta=0.0, x0=x0)
    assert len(flow.times) == 5  # every floss5 step used the flow
    torch.testing.assert_close(out, euler_sample(flow, m, 3, "floss5", x0=x0), rtol=0, atol=0)
    # and it is not the MixIT estimate
    assert not torch.allclose(out, mixture_consistency(raw, m))


def test_hybrid_switches_at_beta(gen):
    m, raw, x0 = setup(gen)
    flow = Counting(gen)
    out = hybrid_teacher_sample(lambda m_: raw, flow, m, 3, beta=0.5, schedule=4, x0=x0)
    assert flow.times == [0.5, 0.75]  # steps starting at 0 and 0.25 followed MixIT
    torch.testing.assert_close(out.sum(1, keepdim=True), m)
    # by hand: two half-size steps along the line reach the midpoint, then two flow steps
    x = x0 + 0.5 * (mixture_consistency(raw, m) - x0)
    for t in (0.5, 0.75):
        x = x + 0.25 * flow(x, torch.full((5,), t, dtype=torch.float64), m)
    torch.testing.assert_close(out, x)


def test_hybrid_rejects_a_teacher_with_the_wrong_number_of_outputs(gen):
    m, raw, x0 = setup(gen)
    with pytest.raises(ValueError, match="merge_outputs"):
        hybrid_teacher_sample(lambda m_: raw[:, :2], Counting(gen), m, 3, beta=1.0, x0=x0)
