"""What every row of bench/peers.py shares: the subjects (model, input, layer, settings), how a row is made, and
when two maps count as the same. Each family of comparisons (bench/peers.py's own, bench/peers_*.py) imports it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from common import ROOT, sample_pixels, seeded_resnet50
from torch import nn

from explainers import load_model, open_image

SAMPLE = ROOT / "assets" / "samples" / "cat.png"
GOAL = 1.0
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

    @property
    def layer_module(self) -> nn.Module:
        return self.model.get_submodule(self.layer)

    @property
    def target(self) -> int:
        with torch.no_grad():
            return int(self.model(self.x).argmax())

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
    if name == "resnet50":
        model, normalize = seeded_resnet50(device)
        x = normalize(sample_pixels(SAMPLE, args.resnet_size, device)).contiguous()
        return Subject("resnet50", f"resnet50, seeded weights (ImageNet weights not cached offline), "
                       f"{args.resnet_size} px", model, model, x, "layer4", "fc", Settings())
    bundle = load_model(name, device=device)
    x = bundle.preprocess(open_image(SAMPLE)).contiguous().to(device)
    layer = bundle.default_layer or "_head_act"
    return Subject(name, f"{name} (its shipped weights), {x.shape[-1]} px", bundle.model, bundle, x, layer,
                   last_linear(bundle.model), Settings())


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


def make_row(s: Subject, kind: str, case: str, times: dict, peer: str, peer_settings: str, same: str,
             agree_text: str) -> dict:
    ours, theirs = times["ours"], times[peer]
    ratio = ours["median_s"] / theirs["median_s"]
    runs = f"{ours['runs']}" + (" (warm-up timed)" if ours["warmup_timed"] else "")
    return {"model": s.name, "kind": kind, "case": case, "ours_s": ours["median_s"], "peer_s": theirs["median_s"],
            "ratio": ratio, "goal": GOAL, "met": "yes" if ratio <= GOAL else "no", "runs": runs, "same": same,
            "agreement": agree_text, "peer": peer_settings}


def missing_row(s: Subject, kind: str, case: str, why: str) -> dict:
    return {"model": s.name, "kind": kind, "case": case, "ours_s": None, "peer_s": None, "ratio": None,
            "goal": GOAL, "met": "—", "runs": "—", "same": "—", "agreement": "—", "peer": why}
