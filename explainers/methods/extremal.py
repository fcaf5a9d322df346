"""Extremal perturbations: the smooth mask of a given area that keeps the class score highest, or lowers it most."""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F

from ..batching import forward
from ..core import Attribution, Call, as_logits
from ..errors import ParameterError
from ..registry import Cost, Param, Reference, Sanity, register

FONG_2019 = Reference(
    "Fong, Patrick & Vedaldi", 2019, "Understanding Deep Networks via Extremal Perturbations and Smooth Masks",
    "1910.08485",
)
MODES = ("preservation", "deletion", "dual")
# The paper's optimiser (and TorchRay's, its authors' code): SGD with momentum 0.9 and dampening 0.9, step 0.01,
# the area weight λ starting at 300 and growing by 0.35% per iteration for 800 iterations (to about 4900), so the
# area constraint tightens as the mask settles. Fewer iterations stretch this schedule (see ``schedule``).
MOMENTUM = 0.9
AREA_WEIGHT = 300.0
AREA_WEIGHT_GROWTH = 1.0035
PAPER_ITERATIONS = 800
# At most this much faster: steps of 0.32 (25 iterations compressed 32×) overshoot, and the clamped parameters
# all land on 0, an empty mask.
MAX_STRETCH = 4.0
# The smooth max-convolution: a softmax of this "coldness" over the weighted neighbours is close to their max
# and keeps a gradient for every one of them.
COLDNESS = 20.0
# Blur perturbation pyramid: LEVELS copies from the blurriest (sigma = blur) to the image itself; a mask value m
# reads the copy at level m·(LEVELS - 1), interpolated linearly between the two nearest ones.
LEVELS = 8
# A final mask whose area on the image is further than this from the asked one gets a note.
AREA_TOLERANCE = 0.05
SAY_EVERY = 10  # iterations between progress messages


def blur_pyramid(inputs: torch.Tensor, blur: float, levels: int = LEVELS) -> torch.Tensor:
    """[N, levels, C, H, W]: ``inputs`` blurred with sigma = blur·(1 − l/(levels − 1)), level 0 the blurriest and
    the last one the input itself. A separable Gaussian truncated at 4 sigma, zero beyond the border (zero in the
    model's input space, the mean colour of a normalised model), as the paper's code does."""
    fractions = torch.linspace(0, 1, levels)  # float32, as the paper's code: the same sigmas to the last bit
    copies = []
    channels = inputs.shape[1]
    for fraction in fractions:
        sigma = float((1 - fraction) * blur)
        if sigma == 0:
            copies.append(inputs)
            continue
        half = math.ceil(4 * sigma)
        offsets = torch.arange(-half, half + 1, dtype=torch.float32, device=inputs.device)
        kernel = torch.exp(-((offsets / (math.sqrt(2) * sigma)) ** 2))
        kernel = (kernel / kernel.sum()).to(inputs.dtype)
        vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
        horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
        blurred = F.conv2d(inputs, vertical, padding=(half, 0), groups=channels)
        copies.append(F.conv2d(blurred, horizontal, padding=(0, half), groups=channels))
    return torch.stack(copies, dim=1)


def perturb(pyramid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each pixel of ``pyramid`` [B, L, C, H, W] read at level mask·(L − 1) (mask [B, 1, H, W] in [0, 1]): 1 keeps
    the pixel, 0 gives the blurriest copy, values between interpolate the two nearest levels."""
    top = pyramid.shape[1] - 1
    position = mask * top
    low = position.detach().floor().clamp(0, top).long()
    fraction = (position - low).unsqueeze(1)  # the gradient flows through the interpolation weight
    index = low.unsqueeze(1).expand(-1, 1, pyramid.shape[2], -1, -1)
    below = pyramid.gather(1, index)
    above = pyramid.gather(1, (index + 1).clamp(max=top))
    return ((1 - fraction) * below + fraction * above).squeeze(1)


class SmoothMax(torch.autograd.Function):
    """Σ_k v_k·softmax(COLDNESS·v)_k over the neighbours k of v = around_k · weight_k, with its gradient written
    out: d/dv_k = softmax_k·(1 + COLDNESS·(v_k − result)). Autograd's chain of softmax, product and sum keeps
    three neighbour-sized tensors per mask (about 22 MB each at 224 px); this keeps one. Measured on this CPU:
    as fast for one 224 px mask, about 1.5× faster for four, a little slower on 64 px images. The forward is
    autograd's op for op, so the clamp that follows sees the same rounding as the paper's code.

    ``around`` [B, K, rows, cols] (each cell's K neighbouring parameters), ``weights`` [1, K, 1, step, 1, step];
    returns [B, rows, step, cols, step].
    """

    @staticmethod
    def forward(ctx, around, weights):
        values = around[:, :, :, None, :, None] * weights
        shares = torch.softmax(COLDNESS * values, dim=1)
        result = (values * shares).sum(dim=1, keepdim=True)
        ctx.save_for_backward(around, weights, shares, result)
        return result.squeeze(1)

    @staticmethod
    def backward(ctx, grad_result):
        around, weights, shares, result = ctx.saved_tensors
        values = around[:, :, :, None, :, None] * weights
        grad_values = values.sub_(result).mul_(COLDNESS).add_(1).mul_(shares).mul_(grad_result.unsqueeze(1))
        return grad_values.mul_(weights).sum(dim=(3, 5)), None


class SmoothMask:
    """The paper's smooth masks: parameters on a grid every ``step`` pixels; each pixel takes a smooth max over
    the nearby parameters, each weighted by a bump of its distance (1 within sigma/2, then a Gaussian fall-off).

    The mask is built on a canvas that extends ``sigma`` pixels beyond the image's top-left border (and about as
    much beyond the others): the area constraint counts the whole canvas, as the paper's code does, and the image
    is the window [sigma, sigma + H) × [sigma, sigma + W).
    """

    def __init__(self, hw: tuple[int, int], step: int, sigma: float, device, dtype):
        self.hw, self.step, self.sigma = tuple(hw), int(step), float(sigma)
        self.offset = round(self.sigma)  # where the image starts on the canvas
        self.pad = 1 + math.ceil(2 * self.sigma / self.step)  # parameter cells beyond the grid's border
        self.reach = 1 + math.ceil(self.sigma / self.step)  # neighbours on each side a pixel looks at
        self.grid = tuple(math.ceil(side / self.step) for side in self.hw)
        # canvas cells: the padded grid less the neighbourhood; pixels: step per cell, less the last partial cell
        self.cells = tuple(g + 2 * (self.pad - self.reach) for g in self.grid)
        self.canvas = tuple(self.step * c - self.step + 1 for c in self.cells)
        if any(c < self.offset + side for c, side in zip(self.canvas, self.hw)):
            raise ParameterError(
                f"sigma {self.sigma:g} is too small for step {self.step}: the smooth mask would not cover the "
                f"{self.hw[0]}×{self.hw[1]} image; use sigma ≥ 3 × step (the paper: step 7, sigma 21)"
            )
        # A pixel's distance to its neighbours' centres depends only on its offset inside its cell, so the
        # weights are one [K, step, step] pattern repeated over the canvas.
        within = torch.arange(self.step, dtype=torch.float32)
        cells = torch.arange(2 * self.reach + 1, dtype=torch.float32) - self.pad
        along = within.view(1, -1) - (self.sigma + self.step * cells).view(-1, 1)  # [neighbour, offset]
        # [row neighbour, column neighbour, row offset, column offset]
        distance = torch.sqrt(along[:, None, :, None] ** 2 + along[None, :, None, :] ** 2)
        bump = torch.exp(-2 * (distance / self.sigma - 0.5).clamp(min=0) ** 2)
        width = 2 * self.reach + 1
        self.weights = bump.reshape(width * width, self.step, self.step).to(device=device, dtype=dtype)

    @property
    def neighbours(self) -> int:
        return len(self.weights)

    def canvas_mask(self, parameters: torch.Tensor) -> torch.Tensor:
        """[B, 1, canvas_h, canvas_w] in [0, 1] from ``parameters`` [B, 1, grid_h, grid_w]."""
        count = len(parameters)
        width = 2 * self.reach + 1
        around = F.unfold(parameters, (width, width), padding=self.pad)  # [B, K, cells_h·cells_w]
        rows, cols = self.cells
        around = around.view(count, self.neighbours, rows, cols)
        weights = self.weights.view(1, self.neighbours, 1, self.step, 1, self.step)
        canvas = SmoothMax.apply(around, weights).reshape(count, 1, rows * self.step, cols * self.step)
        return canvas[:, :, : self.canvas[0], : self.canvas[1]].clamp(0, 1)

    def crop(self, canvas: torch.Tensor) -> torch.Tensor:
        """The image's window of a canvas mask: [B, 1, H, W]."""
        top = self.offset
        return canvas[:, :, top : top + self.hw[0], top : top + self.hw[1]]


def area_reference(generator: SmoothMask, area: float, device, dtype) -> torch.Tensor:
    """The sorted canvas values of a mask covering ``area`` of the image: zeros, then round(area·H·W) ones.

    The paper defines the area as a share of the image; its code counts the share of the whole canvas, margin
    included, which at 224 px with sigma 21 keeps 35% more pixels than asked (and 67% of the image at a = 0.5).
    """
    size = generator.canvas[0] * generator.canvas[1]
    ones = min(size, round(area * generator.hw[0] * generator.hw[1]))
    reference = torch.ones(size, device=device, dtype=dtype)
    reference[: size - ones] = 0
    return reference


def _steps(params, hw) -> int:
    return (params["max_iter"] - 1) * (2 if params["mode"] == "dual" else 1)


@register(
    "extremal_perturbation",
    display_name="Extremal perturbation",
    family="Perturbation",
    attribution_channels=1,
    reference=FONG_2019,
    summary=(
        "Searches, by gradient descent, for the smooth mask covering a chosen share of the image that keeps the "
        "class score highest when everything outside it is blurred (preservation), lowers it most when what it "
        "covers is blurred (deletion), or both at once (dual). The map is that mask: 1 inside, 0 outside."
    ),
    weaknesses=(
        "The area is the user's choice, and the mask fills it whatever the evidence: a small object gets padded, "
        "a large one truncated; an optimisation of hundreds of forward and backward passes per image and target, "
        "so slow on a CPU; may stop in a local optimum; blur is a perturbation the model never saw in training."
    ),
    formula="m* = argmax_m S_c(blur(x, m)) − λ‖sort(m) − r_a‖², m a smooth max-convolution, r_a a·|m| ones",
    sanity=Sanity.UNTESTED,
    sanity_note=(
        "not in Adebayo et al. 2018; it reads the model only through its scores and their gradients with respect "
        "to the mask, so a randomised model should give a different mask, but this was not measured here"
    ),
    params={
        "area": Param(
            "float", 0.1, "Share of the image the mask keeps (preservation) or removes (deletion).",
            minimum=0.01, maximum=0.9,
        ),
        "mode": Param(
            "choice", "preservation",
            "preservation: keep the score highest with only the mask visible; deletion: lower it most by "
            "blurring the mask; dual: both (two passes per iteration).",
            choices=MODES,
        ),
        "max_iter": Param(
            "int", 300, "Optimisation iterations, each a forward and a backward pass (two in dual mode). The "
            "paper's 800 are exactly its schedule; fewer compress it in time (bigger steps, faster-growing area "
            "weight): 300 reach the area on 224 px images at 3/8 of the time.",
            minimum=2, maximum=5000,
        ),
        "step": Param(
            "int", 7, "Pixels between the mask's parameters: the mask's coarsest detail.", minimum=1, maximum=64,
        ),
        "sigma": Param(
            "float", 21.0, "Smoothing radius of the mask in pixels (at least 3 × step).", minimum=1.0, maximum=200.0,
        ),
        "blur": Param(
            "float", 20.0, "Sigma in pixels of the blur that stands in for the removed parts.",
            minimum=0.5, maximum=200.0,
        ),
        "learning_rate": Param(
            "float", 0.01, "SGD step size (momentum 0.9) at the paper's 800 iterations; scaled by 800 / max_iter "
            "(at most 4×).", minimum=1e-5, maximum=10.0,
        ),
        "jitter": Param(
            "bool", True, "Mirror the perturbed image on every other iteration, as the paper's code does, so the "
            "mask does not exploit one fixed pixel alignment.",
        ),
    },
    # the clean pass and the final preserved and deleted inputs, then per update one forward and one backward
    # pass for every perturbed copy (two in dual mode)
    cost=Cost(fixed=(3, 0), per_step=(1, 1), steps=_steps),
)
def extremal_perturbation(call: Call, inputs, area=0.1, mode="preservation", max_iter=300, step=7, sigma=21.0,
                          blur=20.0, learning_rate=0.01, jitter=True):
    """Fong, Patrick & Vedaldi 2019, arXiv:1910.08485 (after Fong & Vedaldi 2017, arXiv:1704.03296).

    The paper's optimisation (see :func:`optimise`) with its 800-iteration schedule stretched to ``max_iter``
    (see :func:`schedule`): at max_iter = 800 exactly the paper's, as its code (TorchRay) runs it.
    """
    rate, growth = schedule(max_iter, learning_rate)
    return optimise(call, inputs, area=area, mode=mode, iterations=max_iter, step=step, sigma=sigma, blur=blur,
                    learning_rate=rate, growth=growth, jitter=jitter)


def schedule(max_iter: int, learning_rate: float) -> tuple[float, float]:
    """(step size, λ growth per iteration) for ``max_iter`` iterations: the paper's 800-iteration schedule
    compressed in time, so λ ends where the paper's does (≈ 4900) and the mask can travel as far. With the
    paper's rates 300 iterations end at λ ≈ 860 with the mask still about twice the asked area (measured on the
    sample cat: 0.19 for 0.1); stretched, they reach it (0.098). Compressed at most MAX_STRETCH times: below
    200 iterations the steps stay those of 200."""
    stretch = PAPER_ITERATIONS / max(max_iter, PAPER_ITERATIONS / MAX_STRETCH)
    return learning_rate * stretch, AREA_WEIGHT_GROWTH**stretch


def optimise(call: Call, inputs: torch.Tensor, *, area: float, mode: str, iterations: int, step: int, sigma: float,
             blur: float, learning_rate: float, growth: float, jitter: bool) -> Attribution:
    """One mask m per (target, row), optimised by SGD with momentum for ``iterations − 1`` updates: maximise
    reward(m) − λ_t·mean((sort(m) − r_a)²), reward = S(blur(x, m)) (preservation), −S(blur(x, 1 − m))
    (deletion) or their difference (dual), λ_t = 300·growth^t. The returned mask is the one the last iteration
    would evaluate, as in the paper's code (TorchRay). Deterministic: no random draws. Each mask sees only its
    own row and target, so a row's mask does not depend on the others or on ``batch_size``; all masks of an
    iteration share batched passes.
    """
    device, dtype = inputs.device, inputs.dtype
    count, targets = len(inputs), len(call.targets)
    masks = targets * count  # mask j explains target j // count on row j % count
    kinds = 2 if mode == "dual" else 1  # perturbed copies per mask and iteration: item i is mask i // kinds
    items = masks * kinds
    generator = SmoothMask(inputs.shape[-2:], step, sigma, device, dtype)
    pyramid = blur_pyramid(inputs, blur)
    reference = area_reference(generator, area, device, dtype)
    logits = call.predict(inputs)
    parameters = torch.ones((masks, 1, *generator.grid), device=device, dtype=dtype)  # the whole image kept
    velocity = None
    weight = AREA_WEIGHT

    def gradient(start, stop, iteration):
        """Items start..stop: (first mask, d(−energy)/d(parameters) of masks first.., each item's score and its
        sign in the reward, each mask's area on the image). A mask's area term counts with its first copy, in
        whichever batch that falls."""
        first, last = start // kinds, (stop - 1) // kinds + 1
        leaf = parameters[first:last].detach().requires_grad_(True)
        with torch.enable_grad():
            canvases = generator.canvas_mask(leaf)
            on_image = generator.crop(canvases)
            batch, rows, target_of, sign = perturbed(start, stop, on_image, first)
            if jitter and iteration % 2 == 0:
                batch = batch.flip(dims=(3,))
            scores = item_scores(batch, rows, target_of)
            owned = torch.arange(first, last, device=device) * kinds >= start
            ordered = canvases.flatten(1).sort(dim=1).values
            area_loss = weight * ((ordered - reference) ** 2).mean(dim=1)
            energy = (sign * scores).sum() - (area_loss * owned).sum()
            (grad,) = torch.autograd.grad(-energy, leaf)
        return first, grad, scores.detach(), sign, on_image.detach().flatten(1).mean(dim=1)

    def perturbed(start, stop, on_image, first):
        """The inputs of items start..stop, with (row, target, sign of the score in the reward) of each; a
        deleting copy (deletion; the second of each pair in dual mode) keeps the mask's complement."""
        index = torch.arange(start, stop, device=device)
        mask_index = index // kinds
        deleting = (index % kinds == 1) if mode == "dual" else torch.full_like(index, mode == "deletion", dtype=bool)
        mask = on_image[mask_index - first]
        kept = torch.where(deleting.view(-1, 1, 1, 1), 1 - mask, mask)
        rows = mask_index % count
        return perturb(pyramid[rows], kept), rows, mask_index // count, 1 - 2 * deleting.to(dtype)

    def item_scores(batch, rows, target_of):
        scores = call.scores(as_logits(forward(call.model, batch)), rows)  # [T, B]: every target's score
        return scores.gather(0, target_of.view(1, -1)).squeeze(0)

    # each mask's lowest and highest score seen, the clean one included: equal means blurring moves nothing
    lowest = call.scores(logits, slice(None)).flatten().clone()
    highest = lowest.clone()
    # progress counts Request.units: backward passes per image (kinds per iteration) times the rows
    done = 0
    for iteration in range(iterations - 1):
        grad_total = torch.zeros_like(parameters)
        reward = torch.zeros(masks, device=device, dtype=dtype)
        shown = torch.zeros(masks, device=device, dtype=dtype)
        step_of = partial(gradient, iteration=iteration)
        for start, stop, (first, grad, scores, sign, areas) in call.batches.run(items, step_of):
            grad_total[first : first + len(grad)] += grad
            owner = torch.arange(start, stop, device=device) // kinds
            reward.index_add_(0, owner, sign * scores)
            lowest.scatter_reduce_(0, owner, scores, "amin")
            highest.scatter_reduce_(0, owner, scores, "amax")
            shown[first : first + len(areas)] = areas
            now = ((iteration * items + stop) * count * kinds) // items
            if now > done:  # several targets share an image's units: a small batch may not finish one
                call.progress.advance(now - done)
                done = now
        # SGD with momentum and dampening, as torch.optim.SGD: the first step takes the gradient as it is
        velocity = grad_total if velocity is None else MOMENTUM * velocity + (1 - MOMENTUM) * grad_total
        parameters = (parameters - learning_rate * velocity).clamp(0, 1)
        weight *= growth
        if iteration % SAY_EVERY == 0 or iteration == iterations - 2:
            label = {"preservation": "score", "deletion": "score left", "dual": "kept − deleted score"}[mode]
            value = -float(reward.mean()) if mode == "deletion" else float(reward.mean())
            call.progress.say(f"iteration {iteration + 1}/{iterations}: {label} {value:.3g}, "
                              f"area {float(shown.mean()):.2f}")

    with torch.no_grad():
        final = generator.crop(generator.canvas_mask(parameters))  # [masks, 1, H, W]
    kept_scores, deleted_scores = final_scores(call, pyramid, final, count)
    for last in (kept_scores.flatten(), deleted_scores.flatten()):
        lowest, highest = torch.minimum(lowest, last), torch.maximum(highest, last)
    # a score that no blur moves explains nothing: the mask would only show where the area term put it
    flat = lowest == highest
    final[flat] = 0
    actual = final.flatten(1).mean(dim=1).view(targets, count)
    flat = flat.view(targets, count).tolist()
    extras, notes = [], []
    for t in range(targets):
        extras.append({"mask_area": actual[t].cpu(), "target_area": area, "preserved_score": kept_scores[t].cpu(),
                       "deleted_score": deleted_scores[t].cpu()})
        notes.append([_note(float(a), area, unmoved) for a, unmoved in zip(actual[t], flat[t])])
    attribution = final.view(targets, count, 1, *final.shape[-2:])
    return Attribution(attribution, extras=extras, logits=logits, target_notes=notes)


def _note(covered: float, area: float, unmoved: bool) -> tuple[str, ...]:
    if unmoved:
        return ("the map is all zero: blurring any part of the image left the score unchanged, so no region "
                "matters to it",)
    if abs(covered - area) > AREA_TOLERANCE:
        return (f"the mask covers {covered:.0%} of the image, not the {area:.0%} asked: the optimisation did not "
                "reach the area; raise max_iter or the learning rate",)
    return ()


def final_scores(call: Call, pyramid: torch.Tensor, final: torch.Tensor, count: int):
    """[T, N] scores of the input with only the mask kept, and with the mask blurred; unmirrored."""
    masks = len(final)

    def compute(start, stop):
        index = torch.arange(start, stop, device=final.device)
        mask_index = index // 2
        mask = final[mask_index]
        kept = torch.where((index % 2 == 1).view(-1, 1, 1, 1), 1 - mask, mask)
        rows = mask_index % count
        with torch.inference_mode():
            scores = call.scores(as_logits(forward(call.model, perturb(pyramid[rows], kept))), rows)
        return scores.gather(0, (mask_index // count).view(1, -1)).squeeze(0)

    scores = torch.cat([s for _, _, s in call.batches.run(2 * masks, compute)]).view(masks, 2)
    return scores[:, 0].view(-1, count), scores[:, 1].view(-1, count)
