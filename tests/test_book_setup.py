"""diffu.book: a notebook's one-call setup, null labels for class-conditional networks, committed results."""

import json

import pytest
import torch
from safetensors.torch import save_file

import diffu
from diffu.book import Chapter, Unconditional, load_result, null_labels, result_path, setup
from diffu.nn import UNet


@pytest.fixture
def threads():
    """Restore torch's thread count after a test that changes it."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_setup_picks_diffu_device_fast_on_cpu_and_the_seed():
    ch = setup(seed=5)
    assert isinstance(ch, Chapter)
    assert ch.device == diffu.device()
    assert ch.fast == (ch.device.type == "cpu")
    assert ch.seed == 5
    assert ch.generator_device == torch.device("cpu")


def test_fast_follows_the_device():
    assert setup(device="cpu").fast is True
    assert setup(device="meta").fast is False  # any non-CPU device runs the full configuration
    assert setup(device=torch.device("meta")).device == torch.device("meta")


def test_unpacks_as_device_fast_seed_gen():
    device, fast, seed, gen = setup(seed=3, device="cpu")
    assert (device, fast, seed) == (torch.device("cpu"), True, 3)
    assert torch.equal(torch.randn(5, generator=gen(2)), torch.randn(5, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("seed, offset", [(0, 0), (0, 7), (0, 100), (4, 3)])
def test_gen_reproduces_a_cpu_generator_seeded_with_seed_plus_offset(seed, offset, gen):
    g = setup(seed=seed).gen(offset)
    assert g.device == torch.device("cpu")
    assert torch.equal(torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=gen(seed + offset)))
    # a fresh generator each call: the same draws again, not the continuation of the stream
    ch = setup(seed=seed)
    assert torch.equal(torch.rand(6, generator=ch.gen(offset)), torch.rand(6, generator=ch.gen(offset)))
    assert not torch.equal(torch.rand(6, generator=ch.gen(offset)), torch.rand(6, generator=ch.gen(offset + 1)))


def test_gen_default_is_offset_zero(gen):
    assert torch.equal(torch.randn(3, generator=setup(seed=2).gen()), torch.randn(3, generator=gen(2)))


def test_device_generators_and_the_device_argument():
    ch = setup(device="cpu", device_generators=True)
    assert ch.generator_device == torch.device("cpu")
    on_device = setup(device="meta", device_generators=True)
    assert on_device.generator_device == torch.device("meta")
    assert setup(device="meta").generator_device == torch.device("cpu")  # CPU generators unless asked
    assert on_device.gen(1, device="cpu").device == torch.device("cpu")  # an explicit device wins
    assert ch.gen(0, torch.device("cpu")).device == torch.device("cpu")


@pytest.mark.gpu
def test_device_generators_on_cuda_match_a_cuda_generator():
    ch = setup(seed=1, device="cuda", device_generators=True)
    g = ch.gen(4)
    assert g.device.type == "cuda"
    ref = torch.Generator("cuda").manual_seed(5)
    assert torch.equal(torch.randn(8, generator=g, device="cuda"), torch.randn(8, generator=ref, device="cuda"))


def test_threads_caps_torch_threads(threads):
    setup(threads=1)
    assert torch.get_num_threads() == 1
    torch.set_num_threads(3)
    setup(threads=2)
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    setup(threads=2)  # a cap, never more threads than before
    assert torch.get_num_threads() == 1


def test_threads_default_leaves_one_core_free(threads, monkeypatch):
    import diffu.book

    monkeypatch.delenv("DIFFU_THREADS", raising=False)
    monkeypatch.setattr(diffu.book.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert diffu.book.default_threads() == 1  # 2 cores: one thread, the other core for everything else
    torch.set_num_threads(3)
    setup()
    assert torch.get_num_threads() == 1
    monkeypatch.setattr(diffu.book.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert diffu.book.default_threads() == 7
    setup()  # a cap: never more threads than before
    assert torch.get_num_threads() == 1
    torch.set_num_threads(16)
    setup()
    assert torch.get_num_threads() == 7
    monkeypatch.setattr(diffu.book.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert diffu.book.default_threads() == 1  # never zero
    assert diffu.book.available_cores() == 1


def test_diffu_threads_overrides_the_default(threads, monkeypatch):
    """DIFFU_THREADS=N sets the notebooks' default threads (a build that runs alone may use every core); setup still
    caps at the threads PyTorch has; a value that is not an integer >= 1 is refused, naming the variable."""
    import diffu.book

    monkeypatch.setattr(diffu.book.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setenv("DIFFU_THREADS", "2")
    assert diffu.book.default_threads() == 2
    torch.set_num_threads(2)
    setup()
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    setup()  # a cap: never more threads than before
    assert torch.get_num_threads() == 1
    for bad in ("0", "-1", "two", "1.5", ""):
        monkeypatch.setenv("DIFFU_THREADS", bad)
        with pytest.raises(ValueError, match="DIFFU_THREADS"):
            diffu.book.default_threads()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"seed": -1}, ValueError, "seed must be an integer >= 0, got -1"),
        ({"seed": 1.5}, ValueError, "seed must be an integer"),
        ({"seed": True}, ValueError, "seed must be an integer"),
        ({"threads": 0}, ValueError, "threads must be an integer >= 1, got 0"),
        ({"threads": "2"}, ValueError, "threads must be an integer"),
        ({"device": 3}, TypeError, "device must be"),
        ({"device_generators": "yes"}, TypeError, "device_generators must be a bool"),
    ],
)
def test_setup_rejects_bad_arguments(kwargs, error, match, threads):
    with pytest.raises(error, match=match):
        setup(**kwargs)
    assert torch.get_num_threads() == threads  # nothing changed on a refused call


def test_gen_rejects_bad_arguments():
    ch = setup(device="cpu")
    with pytest.raises(ValueError, match="offset must be an integer >= 0, got -1"):
        ch.gen(-1)
    with pytest.raises(ValueError, match="offset must be an integer"):
        ch.gen(1.0)
    with pytest.raises(TypeError, match="device must be"):
        ch.gen(0, device=0)


def _unet(num_classes=10):
    """A tiny UNet whose parameters are all random (the shipped init zeroes the output conv), so labels matter."""
    net = UNet(channels=8, channel_mult=(1,), num_res_blocks=1, attn_resolutions=(), image_size=8,
               num_classes=num_classes, groups=4)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return net.eval()


def test_null_labels_value_shape_dtype_and_device():
    y = null_labels(4, _unet(10))
    assert y.shape == (4,) and y.dtype == torch.long and y.device == torch.device("cpu")
    assert y.tolist() == [10] * 4
    assert null_labels(3, 7).tolist() == [7, 7, 7]  # the number of classes itself
    assert null_labels(0, 7).shape == (0,)
    assert null_labels(2, 7, device="meta").device == torch.device("meta")
    assert null_labels(2, _unet().to("meta")).device == torch.device("meta")  # follows the model's parameters


def test_null_labels_make_the_unet_unconditional():
    """The null label is the UNet's own: y = num_classes is what y=None means to it."""
    net = _unet()
    x, t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([5.0, 50.0, 500.0])
    with torch.no_grad():
        assert torch.equal(net(x, t, y=null_labels(3, net)), net(x, t))
        assert not torch.equal(net(x, t, y=torch.zeros(3, dtype=torch.long)), net(x, t))


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((-1, 10), ValueError, "n must be an integer >= 0, got -1"),
        ((2.0, 10), ValueError, "n must be an integer"),
        ((2, torch.nn.Linear(2, 2)), ValueError, "model must be class-conditional"),
        ((2, _unet(None)), ValueError, "model must be class-conditional"),
        ((2, 0), ValueError, "num_classes must be an integer >= 1, got 0"),
        ((2, True), ValueError, "model must be class-conditional"),
    ],
)
def test_null_labels_rejects_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        null_labels(*args)


def test_unconditional_wraps_with_null_labels_and_keeps_prediction():
    net = _unet()
    unc = Unconditional(net)
    assert unc.prediction == net.prediction
    assert [p.data_ptr() for p in unc.parameters()] == [p.data_ptr() for p in net.parameters()]
    x, t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2)), torch.tensor([10.0, 900.0])
    with torch.no_grad():
        assert torch.equal(unc(x, t), net(x, t, y=torch.full((2,), 10)))
    with pytest.raises(ValueError, match="do not give y"):
        unc(x, t, y=torch.zeros(2, dtype=torch.long))


def test_unconditional_rejects_non_conditional_models():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        Unconditional(lambda x, t: x)
    with pytest.raises(ValueError, match="model must be class-conditional"):
        Unconditional(_unet(None))


def test_load_result_reads_json_and_safetensors(tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "toy.json").write_text(json.dumps({"rows": [1, 2], "command": "python -m diffu.bench x"}))
    save_file({"a": torch.arange(3.0)}, str(tmp_path / "results" / "toy.safetensors"))
    monkeypatch.chdir(tmp_path)  # a chapter reads results relative to its working directory
    assert load_result("toy") == {"rows": [1, 2], "command": "python -m diffu.bench x"}
    assert load_result("toy.json")["rows"] == [1, 2]
    assert torch.equal(load_result("toy.safetensors")["a"], torch.arange(3.0))
    assert load_result("toy", directory=tmp_path / "results")["rows"] == [1, 2]
    assert result_path("toy") == tmp_path.joinpath("results", "toy.json").relative_to(tmp_path)


def test_missing_result_names_the_path_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"guidance\.json not found.*python -m diffu\.bench guidance"):
        load_result("guidance", directory=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"unknown\.json not found.*python -m diffu\.bench"):
        result_path("unknown", directory=tmp_path)


def test_book_results_are_readable_from_the_book_folder(monkeypatch):
    """Every committed result that names a benchmark loads from book/ (where the chapters run) with its command."""
    from pathlib import Path

    book = Path(__file__).resolve().parents[1] / "book"
    monkeypatch.chdir(book)
    res = load_result("guidance")
    assert res["command"].startswith("python -m diffu.bench guidance")


@pytest.mark.parametrize(
    "args, error, match",
    [
        (("x.csv",), ValueError, "must be a .json or .safetensors file"),
        (("../x",), ValueError, "name must be a file name"),
        (("",), ValueError, "name must be a file name"),
        ((3,), ValueError, "name must be a file name"),
        (("x", 3), TypeError, "directory must be a str or a path"),
    ],
)
def test_load_result_rejects_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        load_result(*args)


# ----------------------------------------------------------------------------------------------------------------
# argument checks (issue 18)
# ----------------------------------------------------------------------------------------------------------------


def test_setup_and_gen_refuse_unparsable_devices_and_huge_seeds(threads):
    with pytest.raises(ValueError, match="device must name a torch device"):
        setup(device="gpu")  # torch's own RuntimeError before
    with pytest.raises(ValueError, match=r"seed must be at most 2\*\*63 - 1"):
        setup(seed=2**64)
    ch = setup(device="cpu")
    with pytest.raises(ValueError, match=r"offset must be at most 2\*\*63 - 1"):
        ch.gen(2**63)
    with pytest.raises(ValueError, match="device must name a torch device"):
        ch.gen(0, device="gpu")
    assert torch.get_num_threads() == threads


def test_chapter_validates_its_fields():
    cpu = torch.device("cpu")
    with pytest.raises(TypeError, match="device must be a torch.device"):
        Chapter(device="cpu", fast=True, seed=0, generator_device=cpu)
    with pytest.raises(TypeError, match="fast must be a bool"):
        Chapter(device=cpu, fast=1, seed=0, generator_device=cpu)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        Chapter(device=cpu, fast=True, seed=-3, generator_device=cpu)


def test_null_labels_and_unconditional_check_device_and_input():
    with pytest.raises(TypeError, match="device must be"):
        null_labels(2, 7, device=3)
    with pytest.raises(ValueError, match="device must name a torch device"):
        null_labels(2, 7, device="gpu")
    unc = Unconditional(_unet())
    with pytest.raises(ValueError, match="x must be a tensor"):
        unc([[0.0]], torch.zeros(1))
