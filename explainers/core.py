"""The public call, ``explain()``, and what every method receives (``Context``) and returns (``Explanation``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .batching import Progress, batch_slices, default_batch_size
from .errors import SaliencyError
from .hooks import model_guard
from .registry import get_method
from .targets import TargetSpec


@dataclass
class Explanation:
    """What a method returns.

    ``attribution`` is raw and unnormalised, [N, C, H, W] at input resolution (C=3 for gradient methods,
    C=1 for maps). ``target`` holds class indices, [N] or [N, 2] for a contrast. ``extras`` carries
    method-specific results such as integrated gradients' completeness delta.
    """

    attribution: torch.Tensor
    target: torch.Tensor
    logits: torch.Tensor
    method: str
    params: dict[str, Any]
    elapsed_s: float
    objective: str = "logit"
    layer: str | None = None
    layer_attribution: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """Everything a method needs besides its own parameters."""

    model: nn.Module
    inputs: torch.Tensor
    target: TargetSpec
    batch_size: int | None
    progress: Progress
    seed: int | None
    bundle: Any = None  # the ModelBundle when there is one (normalisation for baselines, layer catalogue)
    layer: str | None = None
    layer_module: nn.Module | None = None
    layer_info: Any = None  # the LayerInfo (name, shape, layout) of the resolved layer
    logits: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    layer_attribution: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.inputs.device

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator: the same seed gives the same noise on any device."""
        gen = torch.Generator()
        if self.seed is None:
            gen.seed()
        else:
            gen.manual_seed(int(self.seed) + offset)
        return gen

    def ensure_logits(self) -> torch.Tensor:
        """Clean logits of the inputs (one forward pass, no gradients), resolving rank targets from them."""
        if self.logits is None:
            self.logits = self.predict(self.inputs)
            self.target.resolve(self.logits)
        return self.logits

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits of ``inputs`` without gradients, in batches of ``batch_size``."""
        with torch.no_grad():
            chunks = [
                _as_logits(self.model(inputs[start:stop])).detach()
                for start, stop in batch_slices(len(inputs), self.batch_size)
            ]
        return torch.cat(chunks)

    def record_clean_logits(self, logits: torch.Tensor, rows: torch.Tensor) -> None:
        """Keep logits computed on clean rows during a gradient pass, saving a separate forward pass."""
        if self.logits is None:
            self.logits = torch.full((len(self.inputs), logits.shape[-1]), float("nan"), device=logits.device)
        self.logits[rows.to(self.logits.device)] = logits.detach()
        self.target.resolve(logits, rows)

    def gradients(
        self,
        total: int,
        make_batch: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
        consume: Callable[[int, int, torch.Tensor, torch.Tensor], None],
        clean: bool = False,
    ) -> None:
        """Gradient of the target score for ``total`` rows, built and used one batch at a time.

        ``make_batch(start, stop)`` returns (inputs, rows) where ``rows`` maps each to its original input row;
        ``consume(start, stop, inputs, gradient)`` accumulates what the method needs. With ``clean=True`` the
        batch is the unperturbed input and its logits double as the explanation's logits.
        """
        if not clean and self.target.needs_logits:
            self.ensure_logits()
        for start, stop in batch_slices(total, self.batch_size):
            batch, rows = make_batch(start, stop)
            batch = batch.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = _as_logits(self.model(batch))
                if clean:
                    self.record_clean_logits(logits, rows)
                score = self.target.score(logits, rows).sum()
                (gradient,) = torch.autograd.grad(score, batch)
            consume(start, stop, batch.detach(), gradient)
            self.progress.advance(stop - start)


def _as_logits(output: Any) -> torch.Tensor:
    """Classifier output as [N, K]; torchvision's GoogLeNet/Inception return named tuples in train mode."""
    if isinstance(output, tuple) and hasattr(output, "logits"):
        output = output.logits
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise SaliencyError(f"the model must return logits of shape [N, classes]; it returned {shape}")
    return output


def _unwrap(model_or_bundle: Any) -> tuple[nn.Module, Any, Sequence[str] | None]:
    if isinstance(model_or_bundle, nn.Module):
        return model_or_bundle, None, None
    model = getattr(model_or_bundle, "model", None)
    if not isinstance(model, nn.Module):
        raise SaliencyError(f"expected a ModelBundle or an nn.Module; got {type(model_or_bundle).__name__}")
    return model, model_or_bundle, getattr(model_or_bundle, "categories", None)


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def explain(
    model_or_bundle: Any,
    inputs: torch.Tensor,
    method: str,
    target: Any = None,
    *,
    layer: Any = None,
    objective: str = "logit",
    batch_size: int | None = None,
    seed: int | None = None,
    progress: Callable[[int, int], object] | None = None,
    **params: Any,
) -> Explanation:
    """Explain ``target``'s score for each row of ``inputs`` [N, 3, H, W] with ``method``.

    ``target``: an int or one int per row, "topK" (k-th ranked prediction), a class name, or a pair (a, b)
    meaning score(a) - score(b). ``objective``: "logit", "probability" or "log_probability".
    ``progress(done, total)`` is called after each batch of passes; returning False, or raising Cancelled,
    stops the run. The model is left as it was found: no hooks, same parameters, same train/eval mode.
    """
    info = get_method(method)
    resolved = info.validate(params)
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise SaliencyError(f"batch_size must be a positive integer; got {batch_size!r}")
    model, bundle, categories = _unwrap(model_or_bundle)
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        shape = list(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise SaliencyError(f"inputs must be a preprocessed tensor [N, 3, H, W]; got {shape}")
    if not torch.isfinite(inputs).all():
        raise SaliencyError("inputs contain NaN or infinite values")
    device = _device_of(model)
    # contiguous NCHW: a channels-last view (e.g. from a permute) would pick other conv kernels per batch
    inputs = inputs.detach().to(device=device, dtype=next(model.parameters(), inputs).dtype).contiguous()

    spec = TargetSpec(target, len(inputs), categories, objective)
    forwards, backwards = info.cost(resolved, tuple(inputs.shape[-2:]), None)
    if batch_size is None:
        batch_size = default_batch_size(device, forward_only=backwards == 0)
    batch_size = int(batch_size)
    ctx = Context(
        model=model,
        inputs=inputs,
        target=spec,
        batch_size=batch_size,
        # progress counts the passes that dominate: backward ones for gradient methods, else forward ones
        progress=Progress((backwards or forwards) * len(inputs), progress),
        seed=seed,
        bundle=bundle,
    )
    if info.needs_layer:
        from .layers import cached_catalogue, resolve_layer

        shape = tuple(inputs[:1].shape)
        catalogue = getattr(bundle, "layers", None)
        if not catalogue or tuple(shape[-2:]) != (bundle.input_size, bundle.input_size):
            catalogue = cached_catalogue(model, shape)  # a bare module, or another input size than measured
        ctx.layer, ctx.layer_module = resolve_layer(model, layer, catalogue, input_shape=shape)
        ctx.layer_info = next(entry for entry in catalogue if entry.name == ctx.layer)
    elif layer is not None:
        raise SaliencyError(f"method {method!r} does not use a layer; drop layer={layer!r} or pick a CAM method")

    started = time.perf_counter()
    with model_guard(model):
        attribution = info.fn(ctx, inputs, torch.arange(len(inputs), device=device), **resolved)
        logits = ctx.ensure_logits()
    ctx.progress.finish()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return Explanation(
        attribution=attribution.detach(),
        target=spec.indices.clone(),
        logits=logits.detach(),
        method=method,
        params=resolved,
        elapsed_s=time.perf_counter() - started,
        objective=objective,
        layer=ctx.layer,
        layer_attribution=None if ctx.layer_attribution is None else ctx.layer_attribution.detach(),
        extras=ctx.extras,
    )
