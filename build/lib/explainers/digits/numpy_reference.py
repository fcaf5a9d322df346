"""LeNet-5's forward pass and its input gradient in plain NumPy: the vanilla gradient, written out step by step.

The vanilla gradient (Simonyan, Vedaldi & Zisserman 2013, arXiv:1312.6034) is d logit[target] / d input. Here it is
computed by hand, layer by layer, as backpropagation does it (Rumelhart, Hinton & Williams 1986,
doi:10.1038/323533a0), so the tests can check torch's autograd against something a reader can follow. No torch
anywhere: the parameters come in as a dict of NumPy arrays (see :func:`params_from_state_dict`). Everything runs in
float64, so disagreements with torch's float32 are torch's rounding, not this file's.

Shapes for one 1x32x32 input (N inputs add a leading N; a 3x32x32 input first goes through ``gray``), both
convolutions padded by 2 ("same", as in ``explainers.digits.model.LeNet5``):
conv1 6x32x32 -> relu1 -> pool1 6x16x16 -> conv2 16x16x16 -> relu2 -> pool2 16x8x8 -> flatten 1024
-> fc1 120 -> relu3 -> fc2 84 -> relu4 -> fc3 10 (the logits).

The steps are named as in :data:`DESCRIPTIONS`; :func:`input_gradient` returns :class:`Steps`, whose ``forward`` and
``backward`` dicts hold every step's output and the gradient with respect to it, for showing side by side with
autograd's (``explainers.digits.autograd_steps``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

PADDING = 2  # zero padding of both convolutions, as in explainers.digits.model (the tests check they agree)

# The layers in order, with the names of their parameters in the PyTorch state dict of LeNet5.
LAYERS = (
    ("conv1", "features.conv1"),
    ("relu1", None),
    ("pool1", None),
    ("conv2", "features.conv2"),
    ("relu2", None),
    ("pool2", None),
    ("flatten", None),
    ("fc1", "classifier.fc1"),
    ("relu3", None),
    ("fc2", "classifier.fc2"),
    ("relu4", None),
    ("fc3", "classifier.fc3"),
)


# ---------------------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------------------


def params_from_state_dict(state: Mapping[str, object]) -> dict[str, np.ndarray]:
    """``{"conv1.weight": array, "conv1.bias": ..., ...}`` in float64 from LeNet5's state dict.

    Accepts torch tensors or arrays (anything ``np.asarray`` reads after ``.detach().cpu()`` where that exists).
    """
    params = {}
    for name, prefix in LAYERS:
        if prefix is None:
            continue
        for kind in ("weight", "bias"):
            value = state[f"{prefix}.{kind}"]
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            params[f"{name}.{kind}"] = np.asarray(value, dtype=np.float64)
    return params


def params_from_torch(model: object) -> dict[str, np.ndarray]:
    """The parameters of a LeNet5 module (anything with ``state_dict()``) as float64 arrays."""
    return params_from_state_dict(model.state_dict())  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------------------
# Convolution through im2col: every 5x5 patch becomes a row, and the convolution a matrix product
# ---------------------------------------------------------------------------------------------------------


def im2col(x: np.ndarray, k: int) -> np.ndarray:
    """[N, C, H, W] -> [N, Ho, Wo, C*k*k]: the k x k patch under each output pixel, flattened (stride 1)."""
    n, c, h, w = x.shape
    ho, wo = h - k + 1, w - k + 1
    # A strided view with no copy: index [n, c, i, j, di, dj] reads x[n, c, i + di, j + dj].
    s = x.strides
    patches = np.lib.stride_tricks.as_strided(x, (n, c, ho, wo, k, k), (s[0], s[1], s[2], s[3], s[2], s[3]))
    # Channel-major, then kernel row, then kernel column: the order of a flattened [C, k, k] weight.
    return patches.transpose(0, 2, 3, 1, 4, 5).reshape(n, ho, wo, c * k * k)


def col2im(cols: np.ndarray, shape: tuple[int, int, int, int], k: int) -> np.ndarray:
    """The adjoint of :func:`im2col`: adds each patch's gradient back onto the pixels it was read from."""
    n, c, h, w = shape
    ho, wo = h - k + 1, w - k + 1
    patches = cols.reshape(n, ho, wo, c, k, k)
    x = np.zeros(shape, dtype=cols.dtype)
    # One pixel sits under k*k output positions; loop over the kernel offsets, not the pixels.
    for di in range(k):
        for dj in range(k):
            x[:, :, di : di + ho, dj : dj + wo] += patches[:, :, :, :, di, dj].transpose(0, 3, 1, 2)
    return x


def pad(x: np.ndarray, padding: int) -> np.ndarray:
    """Zeros around the two spatial axes, ``padding`` pixels on every side."""
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding))) if padding else x


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, padding: int = 0) -> np.ndarray:
    """2-D cross-correlation, stride 1, zero padding (what ``nn.Conv2d`` computes): [N, C, H, W] -> [N, O, Ho, Wo]."""
    out_channels, _, k, _ = weight.shape
    cols = im2col(pad(x, padding), k)  # [N, Ho, Wo, C*k*k]
    y = cols @ weight.reshape(out_channels, -1).T + bias  # [N, Ho, Wo, O]
    return y.transpose(0, 3, 1, 2)


def conv2d_backward_input(
    grad_y: np.ndarray, weight: np.ndarray, x_shape: tuple[int, int, int, int], padding: int = 0
) -> np.ndarray:
    """d loss / d x from d loss / d y: each output's gradient, times the kernel, spread over its patch; the part
    that lands on the padding is dropped (those zeros are constants, not inputs)."""
    out_channels, _, k, _ = weight.shape
    n, c, h, w = x_shape
    grad_cols = grad_y.transpose(0, 2, 3, 1) @ weight.reshape(out_channels, -1)  # [N, Ho, Wo, C*k*k]
    grad_padded = col2im(grad_cols, (n, c, h + 2 * padding, w + 2 * padding), k)
    return grad_padded[:, :, padding : padding + h, padding : padding + w]


# ---------------------------------------------------------------------------------------------------------
# ReLU, max-pooling, flatten, linear
# ---------------------------------------------------------------------------------------------------------


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def relu_backward(grad_y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The gradient passes where the input was positive (at exactly 0 it stops, as in torch)."""
    return grad_y * (x > 0)


def maxpool2x2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 max-pooling, stride 2 -> (pooled [N, C, H/2, W/2], argmax 0..3 within each window).

    Ties go to the first maximum in row-major order, as in torch; after a ReLU the only likely ties are zeros,
    where the gradient dies at the ReLU anyway.
    """
    n, c, h, w = x.shape
    windows = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    argmax = windows.argmax(axis=-1)
    return np.take_along_axis(windows, argmax[..., None], axis=-1)[..., 0], argmax


def maxpool2x2_backward(grad_y: np.ndarray, argmax: np.ndarray, x_shape: tuple[int, int, int, int]) -> np.ndarray:
    """Routes each pooled gradient to the one input that won its window; the other three get zero."""
    n, c, h, w = x_shape
    windows = np.zeros((n, c, h // 2, w // 2, 4), dtype=grad_y.dtype)
    np.put_along_axis(windows, argmax[..., None], grad_y[..., None], axis=-1)
    return windows.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(x_shape)


def flatten(x: np.ndarray) -> np.ndarray:
    """[N, C, H, W] -> [N, C*H*W] in C order, the order of ``torch.flatten(x, 1)``."""
    return x.reshape(len(x), -1)


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """y = x W^T + b, with W of shape [out, in] as in ``nn.Linear``."""
    return x @ weight.T + bias


def linear_backward_input(grad_y: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return grad_y @ weight


# ---------------------------------------------------------------------------------------------------------
# Gray: the mean over channels (LeNet5RGB's first step)
# ---------------------------------------------------------------------------------------------------------


def gray(x: np.ndarray) -> np.ndarray:
    """[N, C, H, W] -> [N, 1, H, W], the channel mean."""
    return x.mean(axis=1, keepdims=True)


def gray_backward(grad_y: np.ndarray, channels: int) -> np.ndarray:
    """Each channel gets 1/C of the gray pixel's gradient."""
    return np.repeat(grad_y / channels, channels, axis=1)


# ---------------------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------------------

# What each step computes, for a page that lists them (shapes for one 32 x 32 input).
DESCRIPTIONS = {
    "input": "the normalised input, [N, C, 32, 32]",
    "gray": "mean over the C channels -> [N, 1, 32, 32] (only for a 3-channel input)",
    "conv1": "6 filters 5x5, stride 1, zero padding 2 (+ bias) -> [N, 6, 32, 32]",
    "relu1": "max(x, 0)",
    "pool1": "max over each 2x2 window, stride 2 -> [N, 6, 16, 16]; backward routes to the window's argmax",
    "conv2": "16 filters 6x5x5, zero padding 2 (+ bias) -> [N, 16, 16, 16]",
    "relu2": "max(x, 0)",
    "pool2": "max over each 2x2 window -> [N, 16, 8, 8]",
    "flatten": "[N, 16, 8, 8] -> [N, 1024] in C order; backward is a reshape",
    "fc1": "x W^T + b, W [120, 1024] -> [N, 120]",
    "relu3": "max(x, 0)",
    "fc2": "x W^T + b, W [84, 120] -> [N, 84]",
    "relu4": "max(x, 0)",
    "fc3": "x W^T + b, W [10, 84] -> the logits [N, 10]",
}


@dataclass
class Steps:
    """One pass through LeNet-5, every step kept; every array has the batch axis first.

    ``forward[name]``: the step's output (``"input"`` is the input itself). ``backward[name]``: the gradient of the
    target's logit with respect to that same output, so ``forward[k]`` and ``backward[k]`` have the same shape;
    ``backward["input"]`` is the vanilla gradient. ``routes["pool1"]``, ``routes["pool2"]``: the argmax (0..3, in
    row-major order within each 2x2 window) that max-pooling's backward sends the gradient to.
    """

    logits: np.ndarray
    target: np.ndarray
    forward: OrderedDict[str, np.ndarray]
    backward: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict)
    routes: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def gradient(self) -> np.ndarray:
        """d logit[target] / d input, shaped like the input [N, C, H, W]."""
        return self.backward["input"]


def _batch(x: np.ndarray) -> np.ndarray:
    """Inputs as float64 [N, C, H, W]; one [C, H, W] image becomes N = 1."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected an input of shape [N, 1 or 3, H, W] or [1 or 3, H, W], got {list(x.shape)}")
    return x


def forward(params: Mapping[str, np.ndarray], x: np.ndarray) -> Steps:
    """The forward pass, every step's output by name (``backward`` left empty).

    ``x`` is already normalised (``explainers.digits.data.to_tensor`` gives the 1-channel input, a bundle's
    ``preprocess`` the 3-channel one). A 3-channel input goes through ``gray`` first, as in ``LeNet5RGB``.
    """
    p = params
    x = _batch(x)
    out: OrderedDict[str, np.ndarray] = OrderedDict(input=x)
    routes: dict[str, np.ndarray] = {}
    h = x
    if x.shape[1] != 1:
        h = out["gray"] = gray(x)
    out["conv1"] = conv2d(h, p["conv1.weight"], p["conv1.bias"], PADDING)
    out["relu1"] = relu(out["conv1"])
    out["pool1"], routes["pool1"] = maxpool2x2(out["relu1"])
    out["conv2"] = conv2d(out["pool1"], p["conv2.weight"], p["conv2.bias"], PADDING)
    out["relu2"] = relu(out["conv2"])
    out["pool2"], routes["pool2"] = maxpool2x2(out["relu2"])
    out["flatten"] = flatten(out["pool2"])
    out["fc1"] = linear(out["flatten"], p["fc1.weight"], p["fc1.bias"])
    out["relu3"] = relu(out["fc1"])
    out["fc2"] = linear(out["relu3"], p["fc2.weight"], p["fc2.bias"])
    out["relu4"] = relu(out["fc2"])
    out["fc3"] = linear(out["relu4"], p["fc3.weight"], p["fc3.bias"])
    return Steps(logits=out["fc3"], target=np.zeros(0, dtype=np.int64), forward=out, routes=routes)


def input_gradient(params: Mapping[str, np.ndarray], x: np.ndarray, target: int | np.ndarray) -> Steps:
    """Forward, then backward from logit[target] to the input, every step's gradient by name.

    ``target`` is one class for every input, or one class per input. Backpropagation runs the forward steps in
    reverse, each turning the gradient at its output into the gradient at its input:
    ``d_in = step_backward(d_out, what the forward kept)``.
    """
    p = params
    steps = forward(params, x)
    f, r = steps.forward, steps.routes
    n, classes = steps.logits.shape
    targets = np.broadcast_to(np.asarray(target, dtype=np.int64), (n,)).copy()
    if targets.min() < 0 or targets.max() >= classes:
        raise ValueError(f"target must be a class index in 0..{classes - 1}, got {target!r}")

    g: OrderedDict[str, np.ndarray] = OrderedDict()
    # The seed: d logit[target] / d logits is one-hot, one row per input, so each input gets its own gradient.
    g["fc3"] = np.zeros_like(f["fc3"])
    g["fc3"][np.arange(n), targets] = 1.0
    g["relu4"] = linear_backward_input(g["fc3"], p["fc3.weight"])
    g["fc2"] = relu_backward(g["relu4"], f["fc2"])
    g["relu3"] = linear_backward_input(g["fc2"], p["fc2.weight"])
    g["fc1"] = relu_backward(g["relu3"], f["fc1"])
    g["flatten"] = linear_backward_input(g["fc1"], p["fc1.weight"])
    g["pool2"] = g["flatten"].reshape(f["pool2"].shape)
    g["relu2"] = maxpool2x2_backward(g["pool2"], r["pool2"], f["relu2"].shape)
    g["conv2"] = relu_backward(g["relu2"], f["conv2"])
    g["pool1"] = conv2d_backward_input(g["conv2"], p["conv2.weight"], f["pool1"].shape, PADDING)
    g["relu1"] = maxpool2x2_backward(g["pool1"], r["pool1"], f["relu1"].shape)
    g["conv1"] = relu_backward(g["relu1"], f["conv1"])
    below_conv1 = "gray" if "gray" in f else "input"
    g[below_conv1] = conv2d_backward_input(g["conv1"], p["conv1.weight"], f[below_conv1].shape, PADDING)
    if "gray" in f:
        g["input"] = gray_backward(g["gray"], f["input"].shape[1])
    steps.target = targets
    # Listed in forward order, like ``forward``, so the two dicts line up key for key.
    steps.backward = OrderedDict((name, g[name]) for name in f)
    return steps
