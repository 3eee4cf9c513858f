"""Tests of diffu.segmentation.evaluation: Dice against the ensemble size, and uncertainty against error."""

import pytest
import torch

from diffu.metrics import dice
from diffu.segmentation import UncertaintyError, encode_masks, ensemble_dice, one_hot, uncertainty_error

K = 4


def labels_of(seed, n=3, size=8):
    return torch.randint(0, K, (n, size, size), generator=torch.Generator().manual_seed(seed))


def noisy_members(truth, e, flip, seed=0, encoding="onehot", jitter=0.3):
    """``e`` members: the truth with each pixel independently replaced by a random label with probability flip, then
    encoded and jittered by ``jitter`` · N(0, 1) (sampled masks are continuous: no exact ties in their mean)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(e):
        noise = torch.randint(0, K, truth.shape, generator=g)
        m = encode_masks(torch.where(torch.rand(truth.shape, generator=g) < flip, noise, truth), K, encoding)
        out.append(m + jitter * torch.randn(m.shape, generator=g))
    return torch.stack(out)


def test_identical_members_give_the_same_dice_at_every_size():
    truth, other = labels_of(0), labels_of(1)
    samples = one_hot(other, K)[None].expand(10, -1, -1, -1, -1)
    table = ensemble_dice(samples, truth, K)  # exact ±1 members: their mean is the member, no ties
    assert sorted(table) == [1, 2, 5, 10]
    for m in table:
        torch.testing.assert_close(table[m], dice(other, truth, K), equal_nan=True)


def test_averaging_independent_errors_raises_the_dice():
    """Members = truth with 40 % of pixels randomised independently: the mean of more members votes the errors out
    (for one-hot and for analog bits), and a group of 10 is nearly perfect — but a pair gains nothing: where its two
    members disagree the jitter breaks the tie, a coin flip, so a pair is right as often as one member."""
    truth = labels_of(2, n=4, size=16)
    for encoding in ("onehot", "bits"):
        table = ensemble_dice(noisy_members(truth, 10, 0.4, encoding=encoding), truth, K, encoding=encoding)
        means = [float(table[m].nanmean()) for m in (1, 2, 5, 10)]
        # a single member keeps 60 % + 40 %/4 = 70 % of its pixels right; so does a one-hot pair (0.7² + 2·0.7·0.3/2);
        # an analog-bits pair less: a wrong member differs in 2 bits one time in 3 (then the truth is one of 4
        # codes), so a split pair recovers 2/3·1/2 + 1/3·1/4 = 5/12: 0.49 + 0.42·5/12 ≈ 0.665
        assert means[0] < 0.75, (encoding, means)
        if encoding == "onehot":
            assert abs(means[1] - means[0]) < 0.03, means  # measured: |Δ| = 0.007 (s.e. ≈ 0.005)
        else:
            assert means[1] < means[0] - 0.015, means  # measured: 0.670 vs 0.705
        assert means[2] > means[1] + 0.1 and means[3] > means[2] and means[3] > 0.93, (encoding, means)


def test_size_one_averages_every_member():
    truth = labels_of(3)
    samples = noisy_members(truth, 4, 0.5, seed=1)
    single = torch.stack([dice(s.argmax(1), truth, K) for s in samples]).nanmean(0)
    torch.testing.assert_close(ensemble_dice(samples, truth, K, sizes=(1,))[1], single, equal_nan=True)


def test_ensemble_dice_errors_name_the_argument():
    truth = labels_of(0)
    samples = one_hot(truth, K)[None]
    with pytest.raises(ValueError, match="sizes"):
        ensemble_dice(samples, truth, K, sizes=(2,))
    with pytest.raises(ValueError, match="sizes"):
        ensemble_dice(samples, truth, K, sizes=())
    with pytest.raises(ValueError, match="samples"):
        ensemble_dice(samples[0], truth, K)
    with pytest.raises(ValueError, match="samples"):
        ensemble_dice(samples, truth[:2], K)
    with pytest.raises(ValueError, match="samples"):
        ensemble_dice(samples.clone().fill_(float("nan")), truth, K)
    with pytest.raises(ValueError, match="target"):
        ensemble_dice(samples, truth + K, K)
    with pytest.raises(ValueError, match="encoding"):
        ensemble_dice(samples, truth, K, encoding="gray")


def test_an_uncertainty_equal_to_the_error_is_perfect():
    truth = labels_of(4)
    pred = torch.where(torch.rand(truth.shape, generator=torch.Generator().manual_seed(0)) < 0.3, (truth + 1) % K,
                       truth)  # fmt: skip
    err = (pred != truth).float()
    r = uncertainty_error(err, pred, truth, bins=4)
    assert isinstance(r, UncertaintyError)
    assert r.correlation == pytest.approx(1.0) and r.auroc == pytest.approx(1.0)
    assert r.error_rate == pytest.approx(float(err.mean()))
    assert r.bin_error.shape == (4,) and torch.all(r.bin_error[1:] >= r.bin_error[:-1])
    # an uninformative constant: AUROC 1/2 (all ties), correlation undefined
    c = uncertainty_error(torch.ones_like(err), pred, truth)
    assert c.auroc == pytest.approx(0.5) and c.correlation != c.correlation


def test_an_independent_uncertainty_is_uninformative():
    """Independent uniform noise: r within 4 standard errors (1/√n) of 0, AUROC within 4 of its null s.e."""
    g = torch.Generator().manual_seed(5)
    truth = torch.randint(0, K, (16, 32, 32), generator=g)
    pred = torch.where(torch.rand(truth.shape, generator=g) < 0.3, (truth + 1) % K, truth)
    r = uncertainty_error(torch.rand(truth.shape, generator=g), pred, truth)
    n = truth.numel()
    n_err = int((pred != truth).sum())
    se_auc = ((n_err + (n - n_err) + 1) / (12 * n_err * (n - n_err))) ** 0.5
    assert abs(r.correlation) < 4 / n**0.5 and abs(r.auroc - 0.5) < 4 * se_auc


def test_auroc_and_spearman_closed_forms():
    """Three error pixels with uncertainties 3, 1, 5 against correct ones 0, 2, 4: 6 of the 9 pairs ranked right
    (3 > 0, 2; 1 > 0; 5 > 0, 2, 4).
    Per image: errors rise with the mean uncertainty → Spearman 1."""
    u = torch.tensor([[[3.0, 1.0, 5.0, 0.0, 2.0, 4.0]]])
    pred = torch.tensor([[[1, 1, 1, 0, 0, 0]]])
    truth = torch.zeros_like(pred)
    assert uncertainty_error(u, pred, truth, bins=2).auroc == pytest.approx(6 / 9)
    u2 = torch.arange(3.0)[:, None, None].expand(3, 2, 2).contiguous()
    pred2 = torch.zeros(3, 2, 2, dtype=torch.long)
    pred2[1, 0, 0], pred2[2, :, 0] = 1, 1
    assert uncertainty_error(u2, pred2, torch.zeros_like(pred2)).image_correlation == pytest.approx(1.0)


def test_uncertainty_error_float64_and_errors():
    truth = labels_of(6)
    r = uncertainty_error(torch.rand(truth.shape, dtype=torch.float64), truth, truth)
    assert r.bin_uncertainty.dtype == torch.float64 and r.error_rate == 0 and r.auroc != r.auroc  # no errors: NaN
    u = torch.rand(truth.shape)
    for kwargs, name in (
        (dict(uncertainty=u[0]), "uncertainty"),
        (dict(uncertainty=u.long()), "uncertainty"),
        (dict(uncertainty=u.masked_fill(u > 0.5, float("nan"))), "uncertainty"),
        (dict(pred=truth.float()), "pred"),
        (dict(target=truth[:, :4]), "target"),
        (dict(bins=0), "bins"),
    ):
        args = dict(uncertainty=u, pred=truth, target=truth) | kwargs
        with pytest.raises(ValueError, match=name):
            uncertainty_error(args.pop("uncertainty"), args.pop("pred"), args.pop("target"), **args)
