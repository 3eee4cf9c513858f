"""Foreground masks from the attention to the object's word (diffu.segmentation.attention, §6; Dombrowski et al.
2023): word positions, the maps as the softmax rows they claim to be (a closed form and a recomputation from the
queries and keys), noise and determinism, dtype, Otsu's threshold against scikit-image, the IoU table, errors, and
the shipped fmnist_t2i beating chance on plain Fashion-MNIST."""

import pytest
import torch
from skimage.filters import threshold_otsu

from diffu.captions import caption, vocabulary
from diffu.metrics import iou
from diffu.nn import MMDiT, MMDiTConfig
from diffu.nn.embeddings import unpatchify
from diffu.schedules import linear_schedule
from diffu.segmentation.attention import (
    AttentionIoU,
    attention_iou_table,
    attention_masks,
    threshold_maps,
    word_positions,
)
from diffu.train import seeded

SCHED = linear_schedule()
CAPS = ["a photo of a bag", "an ankle boot", "a photo of trousers"]


def tiny(depth=2, heads=2, std=0.2):
    """A 2-block MMDiT on 8 × 8 images (a 2 × 2 patch grid), weights drawn so that attention is far from uniform
    (at std 0.2 an image query gives the text 3-96 % of its attention)."""
    with seeded(0):
        net = MMDiT(MMDiTConfig(vocab=tuple(vocabulary()), image_size=8, in_channels=1, patch_size=4, hidden_size=16,
                                depth=depth, num_heads=heads, max_len=12))  # fmt: skip
        for p in net.parameters():
            torch.nn.init.normal_(p, std=std)
    return net.eval()


@pytest.fixture(scope="module")
def net():
    m = tiny()
    # one-off start-up costs (~3 s each on a loaded CPU) paid here, not by the first test: torch's first forward
    # pass and the lazy imports of torch.testing.assert_close
    maps(m)
    torch.testing.assert_close(torch.zeros(1), torch.zeros(1))
    return m


def images(n=3, seed=0, dtype=torch.float32):
    return (torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1).clamp(-1, 1)


def maps(net, x=None, caps=CAPS, seed=1, **kw):
    kw.setdefault("t", 300)
    g = torch.Generator().manual_seed(seed)
    return attention_masks(net, images() if x is None else x, caps, SCHED, generator=g, **kw)


# ---------------------------------------------------------------------------------------------------------------
# word positions
# ---------------------------------------------------------------------------------------------------------------


def test_word_positions(net):
    tok = net.tokenizer
    # <start> is position 0, so word k sits at k + 1; "ankle boot" is one noun of two tokens (the longest match)
    assert word_positions(tok, CAPS) == [[5], [2, 3], [4]]
    assert word_positions(tok, "boot") == [[1]]
    assert word_positions(tok, ["a dark ankle boot", "a boot"]) == [[3, 4], [2]]
    assert word_positions(tok, [CAPS[0], CAPS[2]], token="a") == [[1], [1]]  # the first occurrence
    assert word_positions(tok, "a photo of a bag", token="photo of") == [[2, 3]]


def test_word_positions_errors(net):
    tok = net.tokenizer
    with pytest.raises(ValueError, match=r"captions\[1\] .* has no a class noun"):
        word_positions(tok, ["a bag", "a photo of"])
    with pytest.raises(ValueError, match="has no token 'coat'"):
        word_positions(tok, ["a bag"], token="coat")
    with pytest.raises(ValueError, match="token must hold a word"):
        word_positions(tok, ["a bag"], token="3 !")
    with pytest.raises(TypeError, match="token must"):
        word_positions(tok, ["a bag"], token=3)
    with pytest.raises(TypeError, match="tokenizer must"):
        word_positions(vocabulary(), ["a bag"])
    with pytest.raises(TypeError, match="captions must"):
        word_positions(tok, ["a bag", 3])
    with pytest.raises(ValueError, match="captions must"):
        word_positions(tok, [])


# ---------------------------------------------------------------------------------------------------------------
# the maps are the attention rows they claim to be
# ---------------------------------------------------------------------------------------------------------------


def test_uniform_attention_closed_form():
    """With every query and key zero, each softmax row is uniform over the T_x + L = 4 + 12 keys: the raw map of a
    one-token word is 1/16 (joint) or 1/12 (text keys only) everywhere, twice that for "ankle boot"; normalised, a
    constant map is 0 (no foreground)."""
    net = tiny()
    with torch.no_grad():
        for b in net.blocks:
            for lin in (b.qkv_x, b.qkv_c):
                lin.weight[: 2 * 16].zero_()  # the q and k rows of the fused qkv projection
                lin.bias[: 2 * 16].zero_()
    raw = maps(net, normalize=False)
    want = torch.tensor([1.0, 2.0, 1.0])[:, None, None].expand(3, 8, 8)
    torch.testing.assert_close(raw, want / 16, rtol=1e-6, atol=0)
    torch.testing.assert_close(maps(net, normalize=False, keys="text"), want / 12, rtol=1e-6, atol=0)
    assert torch.equal(maps(net), torch.zeros(3, 8, 8))


def test_maps_recomputed_from_queries_and_keys(net):
    """The raw map (nearest upsampling) equals softmax(q kᵀ / √d_h) computed here from the projections the forward
    pass used: image-query rows, the word's key columns after the T_x = 4 patches, averaged over the chosen heads and
    blocks; each patch fills its 4 × 4 block in raster order (diffu.nn.embeddings.unpatchify)."""
    qk = {}
    hooks = [getattr(b, name).register_forward_hook(lambda m, i, o, key=(k, name): qk.__setitem__(key, o.detach()))
             for k, b in enumerate(net.blocks) for name in ("qkv_x", "qkv_c")]  # fmt: skip
    try:
        got = maps(net, normalize=False, upsample="nearest", layers=[0, 1], heads=1)
    finally:
        for h in hooks:
            h.remove()
    d, heads, tx = 16, 2, 4
    pos = [[5], [2, 3], [4]]
    want = 0
    for k in range(2):
        q = torch.cat([qk[k, "qkv_x"][..., :d], qk[k, "qkv_c"][..., :d]], 1)  # (N, T_x + L, D)
        key = torch.cat([qk[k, "qkv_x"][..., d : 2 * d], qk[k, "qkv_c"][..., d : 2 * d]], 1)
        q, key = (z.reshape(3, -1, heads, d // heads).transpose(1, 2) for z in (q, key))  # (N, heads, S, d_h)
        a = torch.softmax(q @ key.transpose(-1, -2) / (d // heads) ** 0.5, -1)[:, 1]  # head 1 only
        want = want + torch.stack([a[i, :tx, [tx + p for p in pos[i]]].sum(-1) for i in range(3)]) / 2  # (N, T_x)
    grid = unpatchify(want[:, :, None].expand(3, tx, 16), 4, 2)[:, 0]  # (N, 8, 8)
    torch.testing.assert_close(got, grid, rtol=1e-5, atol=1e-7)


def test_text_keys_renormalise_the_joint_share(net):
    """keys="text" divides the word's share by the text keys' total share (< 1), so it is larger, and at most 1."""
    j = maps(net, normalize=False, upsample="nearest")
    t = maps(net, normalize=False, upsample="nearest", keys="text")
    assert bool((t > j).all()) and bool((t <= 1).all())
    # where the text's share underflows to 0 (std 0.3: logits far apart), the ratio is refused, not NaN
    with pytest.raises(ValueError, match="keys='text' is undefined"):
        maps(tiny(std=0.3), keys="text")


def test_the_noised_input_is_q_sample_with_the_generators_noise(net):
    seen = []
    h = net.register_forward_pre_hook(lambda m, args, kw: seen.append((args[0].clone(), args[1].clone())),
                                      with_kwargs=True)  # fmt: skip
    try:
        maps(net, t=[100, 700], seed=5)
    finally:
        h.remove()
    g, x = torch.Generator().manual_seed(5), images()
    for (x_t, tt), t in zip(seen, (100, 700)):
        torch.testing.assert_close(x_t, SCHED.q_sample(x, t, torch.randn(x.shape, generator=g)), rtol=0, atol=0)
        assert torch.equal(tt, torch.full((3,), float(t)))


def test_several_timesteps_average_and_layers_heads_average(net):
    """t = [a, b] is the mean of the raw maps at a then b drawn from one generator; layers/heads select and
    average."""
    both = maps(net, t=[100, 700], normalize=False)
    g = torch.Generator().manual_seed(1)
    one = [attention_masks(net, images(), CAPS, SCHED, t=t, generator=g, normalize=False) for t in (100, 700)]
    torch.testing.assert_close(both, (one[0] + one[1]) / 2, rtol=1e-6, atol=1e-7)
    per = [maps(net, normalize=False, layers=k, heads=h) for k in range(2) for h in range(2)]
    torch.testing.assert_close(maps(net, normalize=False), sum(per) / 4, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(per[0], per[3])


def test_normalised_maps_determinism_and_dtype(net):
    m = maps(net)
    assert m.shape == (3, 8, 8) and m.dtype == torch.float32
    lo, hi = m.flatten(1).min(1).values, m.flatten(1).max(1).values
    assert torch.equal(lo, torch.zeros(3)) and torch.allclose(hi, torch.ones(3))
    assert torch.equal(m, maps(net)) and not torch.equal(m, maps(net, seed=2))
    assert attention_masks(net, images(), CAPS, SCHED, t=10).shape == (3, 8, 8)  # generator=None
    # float64 in, float64 out, through a float64 copy of the network
    net64 = tiny().double()
    m64 = maps(net64, x=images(dtype=torch.float64))
    assert m64.dtype == torch.float64 and m64.shape == (3, 8, 8)
    # one caption for every image
    assert maps(net, caps="a photo of a bag").shape == (3, 8, 8)


@pytest.mark.gpu
def test_maps_follow_the_device(net):
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    m = attention_masks(tiny().to(dev), images().to(dev), CAPS, SCHED, t=300, generator=g)
    assert m.device.type == "cuda" and m.shape == (3, 8, 8)


# ---------------------------------------------------------------------------------------------------------------
# thresholds
# ---------------------------------------------------------------------------------------------------------------


def test_threshold_maps_by_hand():
    m = torch.tensor([[[0.0, 0.1], [0.9, 1.0]], [[0.5, 0.5], [0.5, 0.5]]])
    assert torch.equal(threshold_maps(m), torch.tensor([[[0, 0], [1, 1]], [[0, 0], [0, 0]]]))  # constant: empty
    assert torch.equal(threshold_maps(m, 0.5), torch.tensor([[[0, 0], [1, 1]], [[0, 0], [0, 0]]]))
    assert threshold_maps(m.double()).dtype == torch.int64


def test_otsu_splits_where_scikit_image_does():
    """On 8-bit data scikit-image's histogram has one bin per grey level, so its threshold and the exact split over
    sorted values must give the same mask."""
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (20, 16, 16), generator=g)
    u8[:10] = (u8[:10] // 3 + 150 * (torch.rand(10, 16, 16, generator=g) < 0.4)).clamp(max=255)  # two modes
    ours = threshold_maps(u8.float() / 255)
    for i in range(20):
        ref = u8[i].numpy() > threshold_otsu(u8[i].numpy().astype("uint8"))
        assert torch.equal(ours[i].bool(), torch.from_numpy(ref)), i


def test_threshold_maps_errors():
    m = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="maps must"):
        threshold_maps(m[0])
    with pytest.raises(ValueError, match="maps"):
        threshold_maps(torch.ones(2, 4, 4, dtype=torch.long))
    bad = m.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="maps"):
        threshold_maps(bad)
    with pytest.raises(ValueError, match="threshold must"):
        threshold_maps(m, "mean")
    with pytest.raises(ValueError, match="threshold must"):
        threshold_maps(m, float("nan"))
    with pytest.raises(TypeError, match="threshold must"):
        threshold_maps(m, None)


# ---------------------------------------------------------------------------------------------------------------
# the IoU table
# ---------------------------------------------------------------------------------------------------------------


def test_iou_table_matches_attention_masks(net):
    x = images()
    true = (x[:, 0] > 0).long()
    g = torch.Generator().manual_seed(1)
    tab = attention_iou_table(net, x, true, CAPS, SCHED, timesteps=[100, 700], generator=g, progress=False)
    assert isinstance(tab, AttentionIoU) and tab.timesteps == (100, 700) and tab.layers == (0, 1, "mean")
    assert tab.iou.shape == (2, 3, 3) and tab.iou.dtype == torch.float64 and tab.mean().shape == (2, 3)
    assert bool(((tab.iou >= 0) & (tab.iou <= 1)).all()) and tab.seconds_per_image > 0
    # the table's column "layer 1" at t = 700 is attention_masks at t = 700 after the draw for t = 100
    g = torch.Generator().manual_seed(1)
    attention_masks(net, x, CAPS, SCHED, t=100, generator=g)
    m = attention_masks(net, x, CAPS, SCHED, t=700, layers=1, generator=g)
    torch.testing.assert_close(tab.iou[1, 1], iou(threshold_maps(m), true, 2)[:, 0].double())
    # the baselines: Otsu on the image itself, its better polarity, and "everything is foreground"
    plain = threshold_maps(x[:, 0])
    torch.testing.assert_close(tab.image_otsu, iou(plain, true, 2)[:, 0].double())
    assert bool((tab.image_otsu_best >= tab.image_otsu).all())
    torch.testing.assert_close(tab.all_foreground, true.double().flatten(1).mean(1))


def test_iou_table_errors(net):
    x = images()
    true = (x[:, 0] > 0).long()

    def call(**kw):
        args = dict(model=net, images=x, masks=true, captions=CAPS, schedule=SCHED, timesteps=[10], progress=False)
        args.update(kw)
        return attention_iou_table(**args)

    with pytest.raises(ValueError, match="masks must"):
        call(masks=true.float())
    with pytest.raises(ValueError, match="masks must"):
        call(masks=true[:, :4])
    with pytest.raises(ValueError, match="masks must"):
        call(masks=true * 2)
    with pytest.raises(ValueError, match="masks must each hold a foreground pixel"):
        call(masks=torch.zeros_like(true))
    with pytest.raises(TypeError, match="timesteps must"):
        call(timesteps=10)
    with pytest.raises(ValueError, match="timesteps must"):
        call(timesteps=[])
    with pytest.raises(ValueError, match="timesteps must"):
        call(timesteps=[1000])
    with pytest.raises(ValueError, match="threshold must"):
        call(threshold="gmm")
    with pytest.raises(TypeError, match="progress must"):
        call(progress="yes")


# ---------------------------------------------------------------------------------------------------------------
# errors of attention_masks
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(model=lambda x, t: x), TypeError, "model must be a diffu.nn.MMDiT"),
        (dict(images=images()[0]), ValueError, "images must"),
        (dict(images=torch.zeros(3, 2, 8, 8)), ValueError, "images must"),
        (dict(images=torch.zeros(3, 1, 16, 16)), ValueError, "images must"),
        (dict(images=images() * 200), ValueError, "images must"),
        (dict(images=torch.full((3, 1, 8, 8), float("nan"))), ValueError, "images"),
        (dict(images=torch.zeros(3, 1, 8, 8, dtype=torch.long)), ValueError, "images must"),
        (dict(images=images(dtype=torch.float64)), ValueError, "images must have the model's device and dtype"),
        (dict(captions=CAPS[:2]), ValueError, "captions must hold one caption per image"),
        (dict(captions=["a photo of a cat"] * 3), ValueError, "captions: .*outside the vocabulary"),
        (dict(captions=["a photo of"] * 3), ValueError, "has no a class noun"),
        (dict(captions=3), TypeError, "captions must"),
        (dict(schedule="linear"), TypeError, "schedule must"),
        (dict(t=1000), ValueError, "t must"),
        (dict(t=2.5), ValueError, "t must"),
        (dict(t=[]), ValueError, "t must"),
        (dict(layers=2), ValueError, "layers must"),
        (dict(layers=[0, 0]), ValueError, "layers must"),
        (dict(layers=[]), ValueError, "layers must"),
        (dict(heads=-1), ValueError, "heads must"),
        (dict(token="coat"), ValueError, "has no token"),
        (dict(keys="cross"), ValueError, "keys must"),
        (dict(upsample="bicubic"), ValueError, "upsample must"),
        (dict(normalize="yes"), TypeError, "normalize must"),
        (dict(generator=0), TypeError, "generator must"),
    ],
)
def test_attention_masks_errors(net, kw, err, match):
    args = dict(model=net, images=images(), captions=CAPS, schedule=SCHED, t=300)
    args.update(kw)
    with pytest.raises(err, match=match):
        attention_masks(args.pop("model"), args.pop("images"), args.pop("captions"), args.pop("schedule"), **args)


# ---------------------------------------------------------------------------------------------------------------
# the shipped text-to-image model
# ---------------------------------------------------------------------------------------------------------------


def test_shipped_t2i_attention_beats_chance_on_plain_fashion_mnist():
    """fmnist_t2i, t = 600, last block: the Otsu-thresholded map of the class noun overlaps the item better than
    calling every pixel foreground (the chance level: the item's area share). Measured on these 32 test images,
    noise seeds 0-4: mean IoU 0.63-0.67 against 0.47, a gain of 0.16-0.20 with a standard error of 0.02-0.03 over
    the images; the margin 0.08 is three standard errors below the smallest gain."""
    from diffu.data import fashion_mnist
    from diffu.data.textured import foreground_masks
    from diffu.pretrained import load

    model = load("fmnist_t2i")
    x, y = fashion_mnist("test", 32)
    true = foreground_masks(x)
    m = attention_masks(model, x, [caption(int(k)) for k in y], SCHED, t=600, layers=3,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    got = iou(threshold_maps(m), true, 2)[:, 0]
    chance = true.float().flatten(1).mean(1)
    assert float((got - chance).mean()) > 0.08
