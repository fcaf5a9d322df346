"""The same steps as ``numpy_reference``, read from torch's autograd through hooks: the other column of the table.

Forward hooks catch each module's output and a hook on that output tensor catches the gradient autograd sends
back to it, so every step of :mod:`explainers.digits.numpy_reference` gets torch's own numbers under the same
name. Hooks live only inside the call and are removed in ``finally``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..hooks import HookSet, model_guard
from .numpy_reference import DESCRIPTIONS, Steps, input_gradient, params_from_torch

# Step name -> the LeNet5 / LeNet5RGB module whose output it is. ``flatten`` is ``torch.flatten`` inside
# ``forward``, not a module: it is read as the input of ``classifier``.
TORCH_MODULES = {
    "gray": "gray",
    "conv1": "features.conv1",
    "relu1": "features.relu1",
    "pool1": "features.pool1",
    "conv2": "features.conv2",
    "relu2": "features.relu2",
    "pool2": "features.pool2",
    "fc1": "classifier.fc1",
    "relu3": "classifier.relu3",
    "fc2": "classifier.fc2",
    "relu4": "classifier.relu4",
    "fc3": "classifier.fc3",
}
ORDER = (
    "input",
    "gray",
    "conv1",
    "relu1",
    "pool1",
    "conv2",
    "relu2",
    "pool2",
    "flatten",
    "fc1",
    "relu3",
    "fc2",
    "relu4",
    "fc3",
)


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def autograd_steps(model: nn.Module, inputs: torch.Tensor, target: int | torch.Tensor | np.ndarray) -> Steps:
    """Autograd's forward outputs and gradients of logit[target] for every step, as NumPy arrays by step name.

    ``model`` is a LeNet5 (1-channel input) or LeNet5RGB (3 channels; adds the ``gray`` step); ``inputs`` [N, C, H, W]
    are moved to the model's device and dtype. Runs in eval mode and leaves the model as it was found.
    """
    parameter = next(model.parameters())
    x = inputs.detach().to(device=parameter.device, dtype=parameter.dtype).clone().requires_grad_(True)
    outputs: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}

    def keep(name: str, tensor: torch.Tensor) -> None:
        outputs[name] = tensor
        if tensor.requires_grad:
            tensor.register_hook(lambda grad: grads.__setitem__(name, grad))

    modules = dict(model.named_modules())
    hooks = HookSet()
    try:
        with model_guard(model):
            for name, module_name in TORCH_MODULES.items():
                if module_name in modules:
                    hooks.add(
                        modules[module_name].register_forward_hook(
                            lambda _m, _args, output, name=name: keep(name, output)
                        )
                    )
            hooks.add(modules["classifier"].register_forward_pre_hook(lambda _m, args: keep("flatten", args[0])))
            logits = model(x)
            targets = torch.as_tensor(np.asarray(target), dtype=torch.long, device=logits.device)
            targets = targets.expand(len(logits)) if targets.dim() == 0 else targets
            score = logits.gather(1, targets[:, None]).sum()  # rows are independent in eval mode
            (gradient,) = torch.autograd.grad(score, x)
    finally:
        hooks.remove()

    names = [name for name in ORDER if name == "input" or name in outputs]
    outputs["input"], grads["input"] = x, gradient
    return Steps(
        logits=_to_numpy(logits),
        target=_to_numpy(targets),
        forward=OrderedDict((name, _to_numpy(outputs[name])) for name in names),
        backward=OrderedDict((name, _to_numpy(grads[name])) for name in names),
    )


@dataclass(frozen=True)
class StepComparison:
    """One step of the pass in both columns: the NumPy reference's arrays and autograd's, and how far apart."""

    name: str
    description: str
    shape: tuple[int, ...]
    forward_numpy: np.ndarray
    forward_autograd: np.ndarray
    backward_numpy: np.ndarray | None
    backward_autograd: np.ndarray | None

    @property
    def forward_difference(self) -> float:
        return float(np.abs(self.forward_numpy - self.forward_autograd).max())

    @property
    def backward_difference(self) -> float | None:
        if self.backward_numpy is None or self.backward_autograd is None:
            return None
        return float(np.abs(self.backward_numpy - self.backward_autograd).max())


def side_by_side(model: nn.Module, inputs: torch.Tensor, target: int) -> list[StepComparison]:
    """Every step of one image's vanilla gradient, computed by the NumPy reference (float64) and by autograd
    (the model's own dtype), in forward order: what the "Inside the gradient" page shows for the digits model."""

    reference = input_gradient(params_from_torch(model), _to_numpy(inputs[:1]).astype(np.float64), target)
    torch_steps = autograd_steps(model, inputs[:1], target)
    rows = []
    for name, forward in reference.forward.items():
        if name not in torch_steps.forward:
            continue
        rows.append(StepComparison(
            name=name, description=DESCRIPTIONS.get(name, ""), shape=tuple(forward.shape),
            forward_numpy=forward, forward_autograd=np.asarray(torch_steps.forward[name], dtype=np.float64),
            backward_numpy=reference.backward.get(name),
            backward_autograd=None if name not in torch_steps.backward
            else np.asarray(torch_steps.backward[name], dtype=np.float64),
        ))
    return rows
