"""The DCDM network: a fully convolutional 3-D U-shaped CNN that approximates ``c * A^{-1}``.

torch is an optional dependency (``numopt[torch]``): this module imports it at import time, and
:mod:`numopt.linalg._dcdm` imports this module only when a CNN is actually used.

Structure (Kaneda et al., ICML 2023), with ``R`` = ReLU after a 3x3x3 "same" conv and the residual
add *after* the ReLU (``a <- R(conv(b)) + a``):

1. ``c0 = conv(1 -> w)`` (linear);
2. full resolution: ``a = R(conv c0)``, then ``P`` times ``{b = R(conv a); a = R(conv b) + a}``,
   then ``s = R(conv a)``;
3. ``h = AvgPool(2)(s)``, then ``H`` times ``{g = R(conv h); h = R(conv g) + h}``;
4. ``u = NearestUpsample(2)(h) + s``, then ``U`` times ``{v = R(conv u); u = R(conv v) + u}``;
5. output ``= conv1x1(w -> 1)`` (linear).

``"N64"`` is ``P, H, U = 1, 3, 2`` (97,457 parameters at ``w = 16``); ``"N128"`` is ``2, 5, 3``
(152,881). Odd grid sides are zero-padded to even and cropped back.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["DCDMNet", "ARCHITECTURES", "load_model", "save_model", "default_weights_path", "set_torch_threads"]

ARCHITECTURES = {"N64": (1, 3, 2), "N128": (2, 5, 3)}

_WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")
DEFAULT_WEIGHTS = "dcdm_n64"


def default_weights_path(name=DEFAULT_WEIGHTS):
    """Path of the shipped ``<name>.safetensors`` file."""
    return os.path.join(_WEIGHTS_DIR, f"{name}.safetensors")


def set_torch_threads(n=None):
    """Cap torch's intra-op CPU threads so the network does not oversubscribe the cores next to Numba/BLAS.

    ``n=None`` uses ``NUMOPT_TORCH_THREADS`` when set and otherwise leaves torch's own default (one per
    physical core). On a loaded machine one thread is often fastest: OpenMP barriers spin.
    """
    if n is None:
        env = os.environ.get("NUMOPT_TORCH_THREADS")
        if env is None:
            return
        n = int(env)
    n = max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


class DCDMNet(nn.Module):
    """DCDM's U-shaped fully convolutional network (3-D).

    Parameters
    ----------
    arch : {"N64", "N128"} or tuple (P, H, U)
        Number of residual blocks at full resolution, at half resolution and after the upsampling.
    width : int
        Channels of every hidden conv (16 in the paper).
    """

    def __init__(self, arch="N64", width=16):
        super().__init__()
        if isinstance(arch, str):
            if arch not in ARCHITECTURES:
                raise ValueError(f"arch must be one of {sorted(ARCHITECTURES)} or a (P, H, U) tuple; got {arch!r}")
            self.arch_name = arch
            arch = ARCHITECTURES[arch]
        else:
            arch = tuple(int(a) for a in arch)
            if len(arch) != 3 or min(arch) < 0:
                raise ValueError(f"arch must be a (P, H, U) tuple of non-negative ints; got {arch!r}")
            self.arch_name = "P{}H{}U{}".format(*arch)
        self.arch = arch
        self.width = int(width)
        if self.width < 1:
            raise ValueError(f"width must be >= 1; got {width}")
        P, H, U = arch
        w = self.width

        def conv():
            return nn.Conv3d(w, w, 3, padding=1)

        self.c0 = nn.Conv3d(1, w, 3, padding=1)
        self.full_in = conv()
        self.full_res = nn.ModuleList([nn.ModuleList([conv(), conv()]) for _ in range(P)])
        self.full_out = conv()
        self.half_res = nn.ModuleList([nn.ModuleList([conv(), conv()]) for _ in range(H)])
        self.up_res = nn.ModuleList([nn.ModuleList([conv(), conv()]) for _ in range(U)])
        self.out = nn.Conv3d(w, 1, 1)
        self.reset_parameters()

    def reset_parameters(self):
        # Keras defaults (the paper's framework): Glorot-uniform kernels, zero biases
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _blocks(a, blocks):
        for c1, c2 in blocks:
            a = F.relu(c2(F.relu(c1(a)))) + a
        return a

    def forward(self, x):
        """``x``: (batch, 1, N1, N2, N3) -> same shape. Odd sides are zero-padded to even and cropped."""
        shape = x.shape[-3:]
        pad = [s % 2 for s in shape]
        if any(pad):
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
        a = F.relu(self.full_in(self.c0(x)))
        a = self._blocks(a, self.full_res)
        s = F.relu(self.full_out(a))
        if s.dtype in (torch.bfloat16, torch.float16) and s.device.type == "cpu":  # no 16-bit CPU avg_pool3d
            h = F.avg_pool3d(s.float(), 2).to(s.dtype)
        else:
            h = F.avg_pool3d(s, 2)
        h = self._blocks(h, self.half_res)
        u = F.interpolate(h, scale_factor=2, mode="nearest") + s
        u = self._blocks(u, self.up_res)
        y = self.out(u)
        if any(pad):
            y = y[..., :shape[0], :shape[1], :shape[2]]
        return y

    def config(self):
        return {"arch": list(self.arch), "width": self.width}


def save_model(model, path, metadata=None):
    """Write ``model``'s fp32 weights as safetensors (no pickle) with its config in the header."""
    from safetensors.torch import save_file

    meta = {"numopt_dcdm_config": json.dumps(model.config())}
    if metadata:
        meta.update({str(k): str(v) for k, v in metadata.items()})
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, path, metadata=meta)


def load_model(path=None, *, device="cpu", dtype=torch.float32):
    """Load a DCDM network without unpickling anything.

    Parameters
    ----------
    path : str, optional
        A ``.safetensors`` file (default: the shipped weights) or a ``.pt``/``.pth`` ``state_dict``
        read with ``torch.load(weights_only=True)``; its config is then read from a ``.json`` next to it.
    device : str or torch.device
    dtype : torch.float32, torch.float16 or torch.bfloat16

    Raises
    ------
    ValueError
        If the file is not a valid safetensors/weights-only file, holds pickled objects, or its tensors
        do not match the network.
    """
    path = default_weights_path() if path is None else os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model weights not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # corrupt header, pickle renamed to .safetensors, truncated file
            raise ValueError(f"model file {path!r} is not a valid safetensors file: {exc}") from None
        if "numopt_dcdm_config" not in meta:
            raise ValueError(f"model file {path!r} has no 'numopt_dcdm_config' metadata")
        cfg = json.loads(meta["numopt_dcdm_config"])
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # weights_only refuses arbitrary pickled objects
            raise ValueError(f"refusing to load {path!r}: not a weights-only state_dict ({exc})") from None
        cfg_path = os.path.splitext(path)[0] + ".json"
        cfg = {"arch": "N64", "width": 16}
        if os.path.isfile(cfg_path):
            with open(cfg_path) as fh:
                cfg = json.load(fh).get("config", cfg)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"model file {path!r} does not hold a dict of tensors")
    arch = cfg.get("arch", "N64")
    model = DCDMNet(arch if isinstance(arch, str) else tuple(arch), width=int(cfg.get("width", 16)))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"model file {path!r} does not match the DCDM network: {exc}") from None
    for k, v in state.items():
        if not torch.isfinite(v).all():
            raise ValueError(f"model file {path!r}: tensor {k!r} holds non-finite values")
    model.eval()
    return model.to(device=device, dtype=dtype)


def count_parameters(model):
    return int(sum(p.numel() for p in model.parameters()))


def conv3d_reference(x, weight, bias):
    """NumPy reference of one 3x3x3 zero-padded conv layer: x (C_in, N1, N2, N3) -> (C_out, N1, N2, N3)."""
    x = np.asarray(x, dtype=np.float64)
    c_in, n1, n2, n3 = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (1, 1)))
    out = np.zeros((weight.shape[0], n1, n2, n3))
    for di in range(3):
        for dj in range(3):
            for dk in range(3):
                patch = xp[:, di:di + n1, dj:dj + n2, dk:dk + n3]
                out += np.einsum("oc,cijk->oijk", weight[:, :, di, dj, dk], patch)
    return out + bias[:, None, None, None]
