"""Interoperability: any of our methods as an explanation function for Quantus' metrics.

Quantus (Hedström, Weber, Bareeva, Krakowczyk, Motzkus, Samek, Lapuschkin & Höhne 2023, "Quantus: An Explainable
AI Toolkit for Responsible Evaluation of Neural Network Explanations and Beyond", arXiv:2202.06861) calls
``explain_func(model=model, inputs=x_batch, targets=y_batch, **explain_func_kwargs)`` with NumPy batches and
expects a NumPy array of attributions back. Quantus is not a dependency of this package: nothing here imports it.

Example::

    import quantus
    from explainers.interop import quantus_explain_func

    metric = quantus.RandomLogit(num_classes=1000)
    scores = metric(model=bundle.model, x_batch=x, y_batch=y, explain_func=quantus_explain_func("gradcam"))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from .core import device_of, explain, unwrap
from .errors import ParameterError, PreprocessingNeeded
from .registry import get_method

# Keywords Quantus may add to explain_func_kwargs that are not method parameters; ``device`` is the only one it
# adds itself (general_preprocess copies the metric call's device there).
QUANTUS_KEYWORDS = ("device",)


def quantus_explain_func(
    method: str,
    *,
    reduce_channels: bool = True,
    layer: Any = None,
    objective: str = "logit",
    seed: int | None = 0,
    batch_size: int | None = None,
    bundle: Any = None,
    **params: Any,
) -> Callable[..., np.ndarray]:
    """A callable ``f(model, inputs, targets, **kwargs) -> np.ndarray`` running ``method`` with ``params``.

    ``inputs`` is a NumPy (or torch) batch [N, C, H, W] in the model's input space, ``targets`` one class per row
    (an int array, a list or a scalar). The result is float32, [N, 1, H, W] (the signed channel sum, what
    Quantus' own ``explain`` returns for PyTorch models) or the raw [N, C, H, W] with ``reduce_channels=False``.
    The model runs on its own device: Quantus' ``device`` keyword is accepted and the inputs follow the model
    (the model is never moved, so the caller's copy stays where it is). Call-time keywords other than ``device``
    override ``params``. ``seed`` fixes the noise of stochastic methods (None draws afresh at every call).
    ``bundle``: the ModelBundle whose normalisation pixel-space baselines (IG's black) need; Quantus passes
    bare modules, including its randomised copies, so the bundle's model itself is not used.
    """
    info = get_method(method)
    info.validate(dict(params))  # a typo fails here, not on the first metric call

    def explain_func(model: Any, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
        kwargs = {k: v for k, v in kwargs.items() if k not in QUANTUS_KEYWORDS}
        module, _, _ = unwrap(model)
        device = device_of(module)
        batch = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs)
        if batch.dim() != 4:
            raise ParameterError(f"expected inputs [N, C, H, W] (channel first), got shape {list(batch.shape)}")
        target = np.asarray(targets.detach().cpu() if isinstance(targets, torch.Tensor) else targets)
        target = target.reshape(-1).astype(np.int64)
        if target.size == 1 and len(batch) > 1:
            target = np.repeat(target, len(batch))
        model_or_bundle = module if bundle is None else replace(bundle, model=module)
        try:
            explanation = explain(model_or_bundle, batch.float().to(device), method, torch.from_numpy(target),
                                  layer=layer, objective=objective, seed=seed, batch_size=batch_size,
                                  **{**params, **kwargs})
        except PreprocessingNeeded as exc:
            if bundle is not None:
                raise
            # Quantus hands over bare modules: the preprocessing can only come from quantus_explain_func's bundle=
            raise PreprocessingNeeded(
                f"{exc}. Quantus passes bare modules, so give the bundle to the adapter: "
                f"quantus_explain_func({method!r}, bundle=explainers.load_model(...), ...)"
            ) from None
        attribution = explanation.attribution.detach().float()
        if reduce_channels:
            attribution = attribution.sum(dim=1, keepdim=True)
        return attribution.cpu().numpy().astype(np.float32)

    explain_func.__name__ = f"quantus_explain_{method}"
    explain_func.__doc__ = f"{info.display_name} ({info.reference}) for Quantus: (model, inputs, targets) -> NumPy."
    return explain_func


__all__ = ["quantus_explain_func"]
