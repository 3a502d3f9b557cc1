"""DCDM network: structure, parameter counts, conv reference, safe loading, the shipped weights."""
import json
import os
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from numopt.linalg import dcdm, random_scene  # noqa: E402
from numopt.linalg._dcdm_model import (DCDMNet, conv3d_reference, count_parameters,  # noqa: E402
                                       default_weights_path, load_model, save_model)

torch.set_num_threads(1)


@pytest.mark.parametrize("arch, count", [("N64", 97_457), ("N128", 152_881)])
def test_parameter_counts(arch, count):
    assert count_parameters(DCDMNet(arch)) == count


@pytest.mark.parametrize("shape", [(8, 8, 8), (4, 6, 10), (5, 7, 9), (16, 8, 12)])
def test_output_shape_any_grid(shape):
    net = DCDMNet("N64", width=4)
    x = torch.randn((2, 1) + shape)
    with torch.inference_mode():
        y = net(x)
    assert y.shape == x.shape


def test_odd_grid_is_zero_pad_and_crop():
    net = DCDMNet("N64", width=4)
    x = torch.randn(1, 1, 5, 7, 6)
    xp = torch.nn.functional.pad(x, (0, 0, 0, 1, 0, 1))
    with torch.inference_mode():
        np.testing.assert_allclose(net(x).numpy(), net(xp)[..., :5, :7, :6].numpy(), rtol=1e-6, atol=1e-6)


def test_conv_layer_matches_numpy_reference():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(3, 5, 3, padding=1).double()
    x = torch.randn(1, 3, 6, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        y = conv(x)[0].numpy()
    ref = conv3d_reference(x[0].numpy(), conv.weight.detach().numpy(), conv.bias.detach().numpy())
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_keras_init_and_structure():
    net = DCDMNet("N64")
    for m in net.modules():
        if isinstance(m, torch.nn.Conv3d):
            assert torch.all(m.bias == 0)
            fan_in = m.in_channels * np.prod(m.kernel_size)
            fan_out = m.out_channels * np.prod(m.kernel_size)
            assert m.weight.abs().max() <= np.sqrt(6 / (fan_in + fan_out)) + 1e-7
    assert len(net.full_res) == 1 and len(net.half_res) == 3 and len(net.up_res) == 2


def test_save_load_roundtrip(tmp_path):
    net = DCDMNet((1, 1, 1), width=4)
    path = str(tmp_path / "w.safetensors")
    save_model(net, path)
    back = load_model(path)
    x = torch.randn(1, 1, 6, 6, 6)
    with torch.inference_mode():
        np.testing.assert_array_equal(net.eval()(x).numpy(), back(x).numpy())
    # a weights-only state_dict is accepted too
    pt = str(tmp_path / "w.pt")
    torch.save(net.state_dict(), pt)
    with open(str(tmp_path / "w.json"), "w") as fh:
        json.dump({"config": net.config()}, fh)
    back2 = load_model(pt)
    with torch.inference_mode():
        np.testing.assert_array_equal(net(x).numpy(), back2(x).numpy())


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickles_are_refused(tmp_path):
    evil = str(tmp_path / "evil.pt")
    with open(evil, "wb") as fh:
        pickle.dump({"c0.weight": _Evil()}, fh)
    with pytest.raises(ValueError, match="refusing"):
        load_model(evil)
    # a pickle renamed to .safetensors
    fake = str(tmp_path / "fake.safetensors")
    with open(fake, "wb") as fh:
        pickle.dump({"a": 1}, fh)
    with pytest.raises(ValueError, match="safetensors"):
        load_model(fake)


def test_tampered_files_are_refused(tmp_path):
    net = DCDMNet("N64", width=4)
    good = str(tmp_path / "good.safetensors")
    save_model(net, good)
    raw = open(good, "rb").read()
    # corrupt the JSON header
    bad = str(tmp_path / "bad.safetensors")
    with open(bad, "wb") as fh:
        fh.write(raw[:8] + b"{" * 20 + raw[28:])
    with pytest.raises(ValueError):
        load_model(bad)
    # truncated
    trunc = str(tmp_path / "trunc.safetensors")
    with open(trunc, "wb") as fh:
        fh.write(raw[: len(raw) // 2])
    with pytest.raises(ValueError):
        load_model(trunc)
    # tensors that do not fit the network
    from safetensors.torch import save_file
    wrong = str(tmp_path / "wrong.safetensors")
    save_file({"c0.weight": torch.zeros(3)}, wrong, metadata={"numopt_dcdm_config": json.dumps(net.config())})
    with pytest.raises(ValueError, match="does not match"):
        load_model(wrong)
    # non-finite weights
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    sd["out.bias"][:] = float("nan")
    nanf = str(tmp_path / "nan.safetensors")
    save_file(sd, nanf, metadata={"numopt_dcdm_config": json.dumps(net.config())})
    with pytest.raises(ValueError, match="non-finite"):
        load_model(nanf)
    with pytest.raises(FileNotFoundError):
        load_model(str(tmp_path / "missing.safetensors"))


def test_shipped_weights_exist_and_are_small():
    path = default_weights_path()
    assert os.path.isfile(path) and os.path.getsize(path) <= 2 * 1024 * 1024
    meta = json.load(open(path.replace(".safetensors", ".json")))
    for key in ("command", "seed", "train_time_s", "torch"):
        assert key in meta
    net = load_model()
    assert count_parameters(net) == 97_457


@pytest.mark.parametrize("seed", [101, 202])
def test_shipped_model_on_unseen_scene(seed):
    import scipy.sparse.linalg as spla

    A, b, fluid = random_scene(16, random_state=seed)  # the training scenes came from seed 0
    count = [0]
    spla.cg(A, b, rtol=1e-6, callback=lambda xk: count.__setitem__(0, count[0] + 1))
    import numopt
    res = numopt.solve(A, b, method="dcdm", rtol=1e-6, fluid_mask=fluid)
    assert res.success and res.model == "pretrained"
    assert np.linalg.norm(b - A @ res.x) <= 1e-6 * np.linalg.norm(b)
    assert res.n_network_calls == res.nit
    assert res.nit < count[0] / 2  # the network's directions beat CG's clearly
    # the network alone (no safeguard needed) drives the solve
    assert res.n_fallback <= res.nit // 4


def test_network_directions_odd_grid_and_fp32_reaches_1e10():
    A, b, fluid = random_scene((14, 15, 16), random_state=5)
    x, info = dcdm(A, b, rtol=1e-10, fluid_mask=fluid)
    assert info == 0 and np.linalg.norm(b - A @ x) <= 1e-10 * np.linalg.norm(b)


def test_torch_module_as_model():
    A, b, fluid = random_scene(8, random_state=9)
    net = DCDMNet("N64", width=2)
    x, info = dcdm(A, b, rtol=1e-8, model=net, fluid_mask=fluid)
    assert info == 0
    with pytest.raises(ValueError, match="grid_shape"):
        dcdm(A, b, model=net)


@pytest.mark.parametrize("net_dtype", ["bfloat16", "float16"])
def test_low_precision_network_fp64_krylov(net_dtype):
    A, b, fluid = random_scene(8, random_state=21)
    x, info = dcdm(A, b, rtol=1e-8, fluid_mask=fluid, net_dtype=net_dtype)
    assert info == 0 and np.linalg.norm(b - A @ x) <= 1e-8 * np.linalg.norm(b)
