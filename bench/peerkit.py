"""What every row of bench/peers.py shares: the subjects (model, input, layer, settings), how a row is made, and
when two maps count as the same. Each family of comparisons (bench/peers.py's own, bench/peers_*.py) imports it."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from common import ROOT, agreement, minmax, sample_pixels, seeded_resnet50, seeded_torchvision
from torch import nn

from explainers import Explanation, get_method, load_model, open_image
from explainers.layers import cached_catalogue

SAMPLE = ROOT / "assets" / "samples" / "cat.png"
GOAL = 1.0
LIMIT_GOAL = 1.2  # a multi-pass method's time over its limit (bench/limit.py)
# a map is "the same" when it correlates this well with the peer's, or differs by at most this fraction of its max
SAME_CORR, SAME_MAX_REL = 0.99, 1e-3
# pytorch-grad-cam and torchcam have these CAMs under these names; ours on the left
GRAD_CAM_PEERS = {"gradcam": "GradCAM", "gradcam_pp": "GradCAMPlusPlus", "scorecam": "ScoreCAM", "eigencam": "EigenCAM"}
TORCHCAM_PEERS = {"gradcam": "GradCAM", "gradcam_pp": "GradCAMpp", "xgradcam": "XGradCAM", "layercam": "LayerCAM",
                  "scorecam": "ScoreCAM", "cam": "CAM"}
CAM_BATCH = 64  # Score-CAM's batch for both peer libraries
PEER_NAMES = {"captum": "Captum", "pytorch-grad-cam": "pytorch-grad-cam", "torchcam": "torchcam",
              "saliency": "PAIR saliency"}
# known differences on the peer's side, read from its source: a "no" there is reported as expected
EXPECTED = {
    ("torchcam", "gradcam_pp"): ("torchcam's α differs", "torchcam 0.5's Grad-CAM++ α is not eq. 19 of the paper: "
                                 "its denominator sums g³·A over positions, and its masked in-place division "
                                 "(alpha[mask].div_) writes to a copy, so α stays g²; ours matches "
                                 "pytorch-grad-cam's."),
    ("captum", "guided_backprop"): ("Captum skips ReLU6", "Captum's GuidedBackprop rectifies nn.ReLU modules only: "
                                    "on a model with ReLU6 activations (efficientnet_lite0) those pass plain "
                                    "gradients there, so its map is not guided backpropagation; ours rectifies "
                                    "ReLU6 too (tests/explainers/test_oracle_captum.py checks the rule directly)."),
}
EXPLAINED: dict[str, str] = {}  # the expected differences that showed up, for the report's notes


@dataclass
class Settings:
    ig_steps: int = 50
    sg_samples: int = 25
    window: int = 32
    stride: int = 16


@dataclass
class Subject:
    """One model and everything each library needs to explain the same thing on it."""

    name: str
    label: str
    model: nn.Module
    explained: object  # what explain() gets: the bundle where there is one, else the model
    x: torch.Tensor
    layer: str
    fc: str | None
    settings: Settings
    notes: list[str] = field(default_factory=list)
    limit: Any = None  # bench/limit.py's Limit for this model and input, where measured
    _logits: torch.Tensor | None = field(default=None, repr=False)

    @property
    def layer_module(self) -> nn.Module:
        return self.model.get_submodule(self.layer)

    @property
    def target(self) -> int:
        return int(self.logits.argmax())

    @property
    def logits(self) -> torch.Tensor:
        """The model's output on ``x``, computed once."""
        if self._logits is None:
            with torch.no_grad():
                self._logits = self.model(self.x).detach()
        return self._logits

    @property
    def only_nn_relu(self) -> bool:
        """Captum's GuidedBackprop rectifies nn.ReLU modules only; other activations (ReLU6) pass plain gradients."""
        return not any(isinstance(m, (nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.GELU, nn.LeakyReLU))
                       for m in self.model.modules())


class TinyNet(nn.Module):
    """A small seeded CNN (nn.ReLU only, no in-place) for --quick: every peer supports it."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def upsample(layer_map: torch.Tensor, size) -> torch.Tensor:
    """[1, h, w] -> [1, 1, H, W], bilinear: how our CAMs reach the input's resolution."""
    return torch.nn.functional.interpolate(layer_map[None].float(), size=size, mode="bilinear", align_corners=False)


def last_linear(model: nn.Module) -> str | None:
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def subject(name: str, device: torch.device, args) -> Subject:
    from explainers.models import affine_normalizer

    if name == "tiny":
        torch.manual_seed(0)
        model = TinyNet()
        with torch.no_grad():
            model.features[4].running_var.uniform_(0.5, 2.0)
            model.fc.weight.mul_(10)
        model = model.eval().to(device)
        normalize, _ = affine_normalizer([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        x = normalize(sample_pixels(SAMPLE, 64, device)).contiguous()
        return Subject("tiny", "tiny seeded CNN (--quick), 64 px", model, model, x, "features.8", "fc",
                       Settings(ig_steps=8, sg_samples=4, window=16, stride=8))
    if name in ("resnet50", "resnet18"):
        model, normalize = seeded_resnet50(device) if name == "resnet50" else seeded_torchvision(name, device)
        x = normalize(sample_pixels(SAMPLE, args.resnet_size, device)).contiguous()
        return Subject(name, f"{name}, seeded weights (ImageNet weights not cached offline), "
                       f"{args.resnet_size} px", model, model, x, "layer4", "fc", Settings())
    bundle = load_model(name, device=device)
    x = bundle.preprocess(open_image(SAMPLE)).contiguous().to(device)
    layer = bundle.default_layer or "_head_act"
    return Subject(name, f"{name} (its shipped weights), {x.shape[-1]} px", bundle.model, bundle, x, layer,
                   last_linear(bundle.model), Settings())


# ---- the CAM libraries' calls, as bench/peers.py and bench/gpu.py make them ----


def importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def grad_cam_call(s: Subject, name: str, reshape_transform: Callable | None = None) -> Callable[[], object]:
    """pytorch-grad-cam's CAM ``name`` on ``s``'s layer and top-1 target: a new extractor per call (its hooks
    live as long as the extractor), ScoreCAM at ``CAM_BATCH`` rows per batch; its map min-max scaled at the
    input's resolution. ``reshape_transform`` turns a token layer's output into [N, C, h, w] (vision
    transformers)."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x, target, model, module = s.x, s.target, s.model, s.layer_module

    def call():
        cam = getattr(pytorch_grad_cam, name)(model=model, target_layers=[module],
                                              reshape_transform=reshape_transform)
        if name == "ScoreCAM":
            cam.batch_size = CAM_BATCH
        with cam:
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
    return call


def torchcam_call(s: Subject, name: str) -> Callable[[], object]:
    """torchcam's CAM ``name`` on ``s``'s layer and top-1 target, a new extractor per call, ScoreCAM at
    ``CAM_BATCH`` rows per batch; its map min-max scaled at the layer's resolution."""
    import torchcam.methods as torchcam

    x, target, model, layer = s.x, s.target, s.model, s.layer

    def call():
        kwargs = {"input_shape": tuple(x.shape[1:])}
        if name == "ScoreCAM":
            kwargs["batch_size"] = CAM_BATCH
        if name == "CAM":
            kwargs["fc_layer"] = s.fc
        extractor = getattr(torchcam, name)(model, target_layer=layer, **kwargs)
        with extractor:
            if name in ("ScoreCAM", "CAM"):
                with torch.no_grad():
                    model(x)
                return extractor(target)[0]
            leaf = x.detach().requires_grad_(True)
            return extractor(target, model(leaf))[0]
    return call


def cam_agreement(peer: str, ours, theirs) -> dict[str, float]:
    """Our CAM (an Explanation) against a CAM library's map, scaled as that library scales its maps: min-max at
    the input's resolution (pytorch-grad-cam) or at the layer's (torchcam)."""
    if peer == "pytorch-grad-cam":
        return agreement(minmax(ours.attribution[0, 0]), theirs[0])
    return agreement(minmax(ours.layer_attribution[0, 0]), theirs[0])


# ---- one row ----


def verdict(agree: dict, expected: tuple[str, str] | None = None) -> str:
    """"yes", "NO", or "no (expected: ...)" for a known difference on the peer's side (explained in the notes)."""
    same = agree["corr"] >= SAME_CORR or agree["max_rel"] <= SAME_MAX_REL
    if same:
        return "yes"
    if expected is None:
        return "NO"
    EXPLAINED[expected[0]] = expected[1]
    return f"no (expected: {expected[0]})"


def describe(agree: dict) -> str:
    return f"corr {agree['corr']:.4f}, max rel diff {agree['max_rel']:.1e}"


def ours_call(output) -> dict | None:
    """What our call computed, as the limit needs it: method, validated parameters, layer, rows and size (None
    when ``output`` is not one Explanation, e.g. explain_many's dict)."""
    if not isinstance(output, Explanation):
        return None
    return {"method": output.method, "params": output.params, "layer": output.layer,
            "rows": int(output.attribution.shape[0]), "hw": tuple(output.attribution.shape[-2:]),
            "logits": output.logits.detach()}


def call_limit(s: Subject, call: dict | None) -> tuple[float | None, object]:
    """(seconds, passes): the limit of our call on ``s`` (bench/limit.py's ``Limit.seconds`` of its passes from
    the registry's cost, at the layer's channel count), or (None, None) where there is no limit for this model or
    the call is not one method's on ``s``'s model and input (its logits tell: a family that brings its own model
    passes the section's subject)."""
    if getattr(s, "limit", None) is None or call is None:
        return None, None
    logits, expected = call["logits"].double().cpu(), s.logits.double().cpu()
    if logits.shape != expected.shape or (logits - expected).abs().max() > 1e-3 * expected.abs().max():
        return None, None
    channels = None
    if call["layer"] is not None:
        found = [info for info in cached_catalogue(s.model, tuple(s.x.shape)) if info.name == call["layer"]]
        channels = found[0].channels if found else None
    cost = get_method(call["method"]).cost
    if cost.depends_on_channels and channels is None:
        return None, None
    passes = cost.passes(call["params"], call["hw"], channels)
    return s.limit.seconds(passes, call["rows"]), passes


def make_row(s: Subject, kind: str, case: str, times: dict, peer: str, peer_settings: str, same: str,
             agree_text: str) -> dict:
    ours, theirs = times["ours"], times[peer]
    ratio = ours["median_s"] / theirs["median_s"]
    runs = f"{ours['runs']}" + (" (warm-up timed)" if ours["warmup_timed"] else "")
    limit_s, passes = call_limit(s, ours.get("call"))
    multi = passes is not None and passes.total > 2
    limit_ratio = None if limit_s is None else ours["median_s"] / limit_s
    return {"model": s.name, "kind": kind, "case": case, "ours_s": ours["median_s"], "peer_s": theirs["median_s"],
            "ratio": ratio, "goal": GOAL, "met": "yes" if ratio <= GOAL else "no", "runs": runs, "same": same,
            "agreement": agree_text, "peer": peer_settings, "passes": passes, "limit_s": limit_s,
            "limit_ratio": limit_ratio, "limit_goal": LIMIT_GOAL if multi else None,
            "limit_met": "—" if limit_ratio is None or not multi else ("yes" if limit_ratio <= LIMIT_GOAL else "no"),
            "ours_peak": ours.get("peak_bytes")}


def missing_row(s: Subject, kind: str, case: str, why: str) -> dict:
    return {"model": s.name, "kind": kind, "case": case, "ours_s": None, "peer_s": None, "ratio": None,
            "goal": GOAL, "met": "—", "runs": "—", "same": "—", "agreement": "—", "peer": why, "passes": None,
            "limit_s": None, "limit_ratio": None, "limit_goal": None, "limit_met": "—", "ours_peak": None}


def smoothgrad_same(ours, other_draw, theirs) -> tuple[str, str]:
    """(verdict, text) for SmoothGrad maps, which draw different noise in each library: "yes" when the peer's map
    correlates with ours at least as well (within 0.1) as another of our own draws (``other_draw``) does, and
    its norm is within 0.8-1.25x of ours (a seeded model's map is all noise and correlates with nothing, not
    even itself, so there the norm is what is checked)."""
    agree = agreement(ours, theirs)
    self_corr = agreement(ours, other_draw)["corr"]
    scale = float(torch.as_tensor(ours).norm() / torch.as_tensor(theirs).norm().clamp_min(1e-30))
    same = "yes" if agree["corr"] >= self_corr - 0.1 and 0.8 <= scale <= 1.25 else "NO"
    return same, f"{describe(agree)}; ours seed 0 vs seed 1: corr {self_corr:.4f}; norm ours/peer {scale:.3f}"
