import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from diffu.samplers import Trajectory, ddim  # noqa: E402
from diffu.schedules import linear_schedule  # noqa: E402
from diffu.viz import (  # noqa: E402
    _frames,
    animate_trajectory,
    animation_html,
    image_grid,
    plot_trajectory,
    show_images,
)


def test_image_grid_layout():
    x = torch.stack([torch.full((1, 2, 3), v) for v in (-1.0, 0.0, 1.0)])  # three constant 2×3 images
    g = image_grid(x, nrow=2, pad=1, pad_value=0.5)
    assert g.shape == (2 * 3 + 1, 2 * 4 + 1, 1)
    assert float(g[1, 1, 0]) == 0.0 and float(g[1, 5, 0]) == 0.5 and float(g[4, 1, 0]) == 1.0
    assert float(g[4, 5, 0]) == 0.5  # the missing fourth image is padding
    with pytest.raises(ValueError, match="shape"):
        image_grid(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="nrow"):
        image_grid(x, nrow=0)


def test_frames():
    assert _frames(10, 3) == [0, 4, 9] or _frames(10, 3) == [0, 5, 9]
    assert _frames(3, 10) == [0, 1, 2] and _frames(5, 1) == [0]
    with pytest.raises(ValueError):
        _frames(0, 2)


def test_plots_run():
    class M(torch.nn.Module):
        def forward(self, x, t):
            return 0.5 * x

    traj = Trajectory()
    ddim(M(), (4, 1, 8, 8), linear_schedule(100), steps=10, progress=False, callback=traj,
         generator=torch.Generator().manual_seed(0))  # fmt: skip
    fig = plot_trajectory(traj, n_frames=4, n_images=2)
    assert len(fig.axes) == 2
    html = animate_trajectory(traj, n_frames=3, nrow=4).to_jshtml()
    assert "<script" in html
    assert show_images(traj.xs[-1], nrow=2, title="x") is not None


# ----------------------------------------------------------------------------------------------------------------
# argument checks (issue 18)
# ----------------------------------------------------------------------------------------------------------------


def test_image_grid_refuses_integer_nan_and_empty_images():
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"x must be a floating-point tensor.*from_uint8"):
        image_grid(torch.full((2, 1, 4, 4), 255, dtype=torch.uint8))  # shown as a white square before
    with pytest.raises(ValueError, match="x must be finite"):
        image_grid(torch.full((2, 1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="x must hold at least one image"):
        image_grid(x[:0])  # divided by zero before
    with pytest.raises(ValueError, match="pad must be an integer >= 0"):
        image_grid(x, pad=1.5)
    with pytest.raises(ValueError, match="nrow must be an integer"):
        image_grid(x, nrow=2.0)
    with pytest.raises(ValueError, match="pad_value must be a finite number"):
        image_grid(x, pad_value=float("nan"))
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        show_images(x, scale=0)


def test_regression_plot_trajectory_which_must_name_a_row():
    """Any name other than "x" (a typo such as "xt") silently plotted the x̂_0 row."""

    class M(torch.nn.Module):
        def forward(self, x, t):
            return 0.5 * x

    traj = Trajectory()
    ddim(M(), (2, 1, 4, 4), linear_schedule(100), steps=3, progress=False, callback=traj,
         generator=torch.Generator().manual_seed(0))  # fmt: skip
    with pytest.raises(ValueError, match=r"which must be one of \('x', 'x0'\), got 'xt'"):
        plot_trajectory(traj, which=("xt",))
    with pytest.raises(ValueError, match="n_frames must be an integer >= 1"):
        plot_trajectory(traj, n_frames=0)
    with pytest.raises(TypeError, match="traj must be a diffu.samplers.Trajectory"):
        plot_trajectory([torch.zeros(1, 1, 4, 4)])
    with pytest.raises(ValueError, match="interval must be an integer >= 1"):
        animate_trajectory(traj, interval=0)
    fig = plot_trajectory(traj, n_frames=2, n_images=1, which="x0")  # one row named by a string
    assert len(fig.axes) == 1
    import matplotlib.pyplot as plt

    plt.close("all")


def test_regression_unet_diagram_of_a_config_leaves_the_global_rng():
    """Drawing a UNetConfig builds the network (random initialisation), which advanced torch's global RNG."""
    import matplotlib.pyplot as plt

    from diffu.nn import UNetConfig
    from diffu.viz import unet_diagram

    before = torch.random.get_rng_state()
    unet_diagram(UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8,
                            groups=4))  # fmt: skip
    assert torch.equal(torch.random.get_rng_state(), before)
    plt.close("all")


def test_show_feature_maps_checks_index_and_features():
    from diffu.viz import show_feature_maps

    feats = {"a": torch.randn(2, 3, 4, 4)}
    with pytest.raises(ValueError, match="index must be an integer"):
        show_feature_maps(feats, index=0.5)
    with pytest.raises(ValueError, match="n_channels must be an integer >= 1"):
        show_feature_maps(feats, n_channels=0)
    with pytest.raises(ValueError, match=r"features\['a'\] must be finite"):
        show_feature_maps({"a": torch.full((2, 3, 4, 4), float("nan"))})
    with pytest.raises(ValueError, match="image must be finite"):
        show_feature_maps(feats, image=torch.full((1, 4, 4), float("nan")))


def test_regression_image_grid_refuses_0_255_float_images():
    """A 0–255 float batch was clamped to [-1, 1] and shown as a white grid."""
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x255 = (x + 1) * 127.5
    with pytest.raises(ValueError, match=r"x must be \[-1, 1\] images.*0–255 data.*from_uint8"):
        image_grid(x255)
    with pytest.raises(ValueError, match=r"x must be \[-1, 1\] images"):
        show_images(x255)
    from diffu.viz import show_feature_maps

    with pytest.raises(ValueError, match=r"image must be \[-1, 1\] images"):
        show_feature_maps({"a": torch.randn(2, 3, 4, 4)}, image=x255[0])
    # noisy states (signed, beyond ±2) and overshoot are still clamped for display, as before
    noisy = 4 * torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    assert noisy.abs().max() > 2
    torch.testing.assert_close(image_grid(noisy, pad=0)[..., 0], ((noisy.clamp(-1, 1) + 1) / 2)[:, 0].transpose(0, 1)
                               .reshape(4, 8), rtol=0, atol=0)  # fmt: skip
    assert float(image_grid(torch.full((1, 1, 2, 2), 1.8)).max()) == 1.0  # overshoot within 2 and >= 0: clamped


def test_regression_image_grid_pad_value_in_the_display_range():
    """pad_value=2.0 wrote 2 into a grid documented to lie in [0, 1]."""
    x = torch.zeros(2, 1, 4, 4)
    for bad in (2.0, -0.5):
        with pytest.raises(ValueError, match=r"pad_value must be a finite number in \[0, 1\]"):
            image_grid(x, pad_value=bad)
    with pytest.raises(TypeError, match="pad_value must be a finite number"):
        image_grid(x, pad_value="1")
    assert float(image_grid(x, pad_value=0.0).min()) == 0.0


def test_regression_ax_must_be_matplotlib_axes():
    """ax='ax' raised AttributeError ('str' object has no attribute 'imshow' / 'figure')."""
    import matplotlib.pyplot as plt

    from diffu.nn import UNetConfig
    from diffu.viz import unet_diagram

    with pytest.raises(TypeError, match="ax must be a matplotlib Axes or None"):
        show_images(torch.zeros(1, 1, 4, 4), ax="ax")
    cfg = UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8, groups=4)
    with pytest.raises(TypeError, match=r"ax must be a matplotlib Axes or None \(a new figure\), got str"):
        unet_diagram(cfg, ax="ax")
    _, ax = plt.subplots()
    assert show_images(torch.zeros(1, 1, 4, 4), ax=ax) is ax
    plt.close("all")


def test_regression_empty_trajectory_names_traj():
    """An empty Trajectory raised "need at least one state and one frame" without naming the argument."""
    for fn in (plot_trajectory, animate_trajectory):
        with pytest.raises(ValueError, match="traj must hold at least one recorded state"):
            fn(Trajectory())


def test_animation_html_needs_no_network_and_keeps_every_control():
    from diffu.sampling import SamplerState, Trajectory

    traj = Trajectory()
    for i, t in enumerate((999, 500, 0)):
        traj(SamplerState(i, t, torch.zeros(4, 1, 8, 8) + i, torch.zeros(4, 1, 8, 8)))
    anim = animate_trajectory(traj, n_frames=3, nrow=4)
    plain, html = anim.to_jshtml(), animation_html(anim)
    assert "font-awesome" in plain and 'class="fa' in plain  # what matplotlib writes
    assert "font-awesome" not in html and 'class="fa' not in html and "http" not in html.split("<script")[0]
    # every button is still there, now with a text symbol, and the frames are embedded
    assert html.count("<button") == plain.count("<button") == 9
    assert all(sym in html for sym in ("\u25b6", "\u275a\u275a", "\u23ee", "\u23ed"))
    assert html.count("data:image/png;base64") == plain.count("data:image/png;base64") == 3
    with pytest.raises(TypeError, match="anim must be a matplotlib animation"):
        animation_html(html)
