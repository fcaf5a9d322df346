"""Small models and checks shared by the explainer tests."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import explainers
from explainers import Cancelled
from explainers.batch import COLUMNS, Settings, load_map, read_table
from explainers.models import ModelBundle, affine_normalizer

from ..conftest import sample_path

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def sample_pixels(name: str = "cat.png", size: int = 224) -> torch.Tensor:
    """A sample image resized whole (bicubic) to size x size, as a [1, 3, H, W] tensor in [0, 1]."""
    image = Image.open(sample_path(name)).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1).unsqueeze(0).contiguous()


def imagenet_input(name: str = "cat.png", size: int = 224) -> torch.Tensor:
    """The sample normalised with ImageNet's mean and std, contiguous (torchvision models' input)."""
    return ((sample_pixels(name, size) - IMAGENET_MEAN) / IMAGENET_STD).contiguous()


def spread_batch_norm(model: nn.Module, bias: bool = False) -> nn.Module:
    """``model`` with every BatchNorm2d's statistics and scale drawn from the global seed (and its shift, with
    ``bias``): freshly built ones make each block nearly the identity, so merging or skipping them would go unseen."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                if bias:
                    module.bias.uniform_(-0.1, 0.1)
    return model


def assert_cancel_stops_cleanly(model: nn.Module, inputs: torch.Tensor, method: str, **params) -> None:
    """A progress callback returning False on its third call raises Cancelled there and leaves the model as it
    was: no hooks, same parameters, same mode."""
    before = snapshot(model)
    calls = []

    def stop_at_third(done, total):
        calls.append(done)
        return len(calls) < 3

    try:
        explainers.explain(model, inputs, method, target=0, progress=stop_at_third, **params)
    except Cancelled:
        pass
    else:
        raise AssertionError(f"{method} ran to the end despite the cancel")
    assert len(calls) == 3
    assert_untouched(model, before)


def hook_counts(model: nn.Module) -> int:
    """Every forward/backward hook on every submodule; 0 means nothing was left behind."""
    total = 0
    for module in model.modules():
        for name in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_forward_hooks_with_kwargs",
            "_forward_pre_hooks_with_kwargs",
        ):
            total += len(getattr(module, name, {}) or {})
    return total


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_untouched(model: nn.Module, before: dict[str, torch.Tensor], training: bool = False) -> None:
    assert hook_counts(model) == 0, "hooks left on the model"
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), f"parameter/buffer {key} changed"
    assert all(m.training == training for m in model.modules()), "train/eval mode changed"


def relative_max_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    ours, theirs = ours.detach().double().cpu(), theirs.detach().double().cpu()
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-30))


class Tally:
    """Calls and the largest batch seen, one record shared with every copy of the model that holds it (the
    forward-only methods run on a folded copy, explainers.folding)."""

    def __init__(self):
        self.largest = 0
        self.calls = 0

    def __deepcopy__(self, memo):
        return self


class MaxBatch(nn.Module):
    """Wraps a model and records the largest batch it, or a copy of it, is given."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.tally = Tally()

    @property
    def largest(self):
        return self.tally.largest

    @property
    def calls(self):
        return self.tally.calls

    def forward(self, x):
        self.tally.largest = max(self.tally.largest, len(x))
        self.tally.calls += 1
        return self.model(x)


class SmallConvNet(nn.Module):
    """A small seeded CNN with in-place ReLUs, BatchNorm and ReLU6: enough structure for property tests."""

    def __init__(self, classes: int = 7):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU6(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def small_convnet(seed: int = 0) -> SmallConvNet:
    torch.manual_seed(seed)
    model = SmallConvNet()
    with torch.no_grad():  # non-trivial BN statistics, so eval mode differs from train mode
        model.features[1].running_mean.uniform_(-0.2, 0.2)
        model.features[1].running_var.uniform_(0.5, 2.0)
        model.fc.weight.mul_(20)  # scores that move by whole units, so float32 noise cannot fake completeness
    return model.eval()


# ---------------------------------------------------------------------------------------------------------
# Batch runs (explainers.batch): a tiny model, generated images, and two runs compared
# ---------------------------------------------------------------------------------------------------------

SQUARE_COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 70, 230)}
CLASSES = [*SQUARE_COLOURS, "c3", "c4", "c5", "c6"]
SQUARE_SIZE = 48
RUN_SETTINGS = dict(model="tiny", methods=["gradcam", "integrated_gradients", "smoothgrad"], targets=["top1", "label"],
                    params={"integrated_gradients": {"n_steps": 4, "baseline": "black"},
                            "smoothgrad": {"n_samples": 3}},
                    seed=11)


def tiny_bundle(model: nn.Module | None = None, categories=CLASSES, size: int = SQUARE_SIZE) -> ModelBundle:
    """A small seeded CNN as a bundle with ImageNet's normalisation (a closure: Ray ships it with cloudpickle)."""
    normalize, denormalize = affine_normalizer((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return ModelBundle(name="tiny", model=(model or small_convnet(3)).eval(), categories=list(categories),
                       input_size=size, normalize=normalize, denormalize=denormalize)


def run_settings(**overrides) -> Settings:
    """``RUN_SETTINGS`` with ``overrides``, as a fresh Settings (a run validates, and so rewrites, its params)."""
    values = {**RUN_SETTINGS, **overrides}
    return Settings(**{k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
                       for k, v in values.items()})


def squares(folder: Path, count: int, seed: int = 0) -> list[dict]:
    """``count`` images: a coloured square on a textured background, and their list rows with the box."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        texture = rng.integers(0, 256, (SQUARE_SIZE, SQUARE_SIZE, 1)) * np.array([[[0.6, 0.5, 0.4]]])
        image = np.clip(texture + rng.normal(0, 20, (SQUARE_SIZE, SQUARE_SIZE, 3)), 0, 255).astype(np.uint8)
        name = list(SQUARE_COLOURS)[i % len(SQUARE_COLOURS)]
        side = int(rng.integers(10, 20))
        x0, y0 = (int(v) for v in rng.integers(0, SQUARE_SIZE - side, 2))
        image[y0 : y0 + side, x0 : x0 + side] = SQUARE_COLOURS[name]
        path = folder / f"img{i:03d}.png"
        Image.fromarray(image).save(path)
        rows.append({"path": path.name, "label": name, "x0": x0, "y0": y0, "x1": x0 + side, "y1": y0 + side})
    return rows


def write_list(path: Path, rows: list[dict]) -> Path:
    """A .csv list (path, label, box) of ``rows``."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "x0", "y0", "x1", "y1"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def assert_same_runs(first: Path, second: Path, *, same_batches: bool = False) -> None:
    """Two run folders hold the same rows, each once (every column but elapsed_s and map_file; floats within 1e-5
    relative), and the same float16 maps: equal or one float16 step apart when both runs cut the same batches
    (threads sum in another order), else within 2e-3 relative (another batch size rounds batched convolutions
    otherwise)."""
    ours, theirs = read_table(first), read_table(second)
    assert len(ours) == len(theirs) and ours["row_id"].is_unique and theirs["row_id"].is_unique
    for column in (c for c in COLUMNS if c not in ("elapsed_s", "map_file")):
        for a, b in zip(ours[column], theirs[column], strict=True):
            if isinstance(a, float) and isinstance(b, float):
                assert a == pytest.approx(b, rel=1e-5, abs=1e-7, nan_ok=True), column
            elif isinstance(a, np.ndarray):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=column)
            else:
                assert a == b or (a is None and b is None), column
    for (_, x), (_, y) in zip(ours.dropna(subset=["map_key"]).iterrows(), theirs.dropna(subset=["map_key"]).iterrows(),
                              strict=True):
        a, b = load_map(first, x.map_file, x.map_key), load_map(second, y.map_file, y.map_key)
        if same_batches:
            step = np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(np.float16)).astype(np.float32)
            assert np.all(np.abs(a - b) <= step), x.map_key
        else:
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-6, err_msg=x.map_key)


# ---------------------------------------------------------------------------------------------------------
# Model files for the loaders (explainers.models.user, explainers.models.foreign)
# ---------------------------------------------------------------------------------------------------------

VIT_LABELS = {0: "apple", 1: "banana", 2: "cherry", 3: "damson"}
VIT_MEAN, VIT_STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


class HuggingFaceLogits(nn.Module):
    """A Hugging Face classifier returning its logits tensor, as the user-model loader wraps it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.hf = model

    def forward(self, x):
        return self.hf(x).logits


def tiny_torchvision_vit(layers: int = 2, classes: int = 5, head_std: float | None = 0.5) -> nn.Module:
    """A 32-px torchvision ViT (a 4x4 grid of 8-px patches and a class token, width 16, 2 heads); ``head_std``
    draws its head at random (torchvision starts it at zero, so no gradient would reach the tokens), None keeps
    the zeros."""
    from torchvision.models import VisionTransformer

    model = VisionTransformer(image_size=32, patch_size=8, num_layers=layers, num_heads=2, hidden_dim=16,
                              mlp_dim=32, num_classes=classes)
    if head_std is not None:
        nn.init.normal_(model.heads.head.weight, std=head_std)
    return model


def tiny_hugging_face_vit(layers: int = 2, implementation: str | None = None, logits: bool = True) -> nn.Module:
    """A 32-px ``ViTForImageClassification`` from a config (width 16, 2 heads, 5 classes), seeded by the caller;
    ``logits`` wraps it to return its logits tensor."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=32, patch_size=8, num_hidden_layers=layers, num_attention_heads=2, hidden_size=16,
                       intermediate_size=32, num_labels=5, attn_implementation=implementation)
    model = ViTForImageClassification(config)
    return HuggingFaceLogits(model) if logits else model


def save_tiny_vit(folder: Path) -> tuple[Path, nn.Module]:
    """(folder, model): a seeded tiny ViT (4x4 patches of 8 px at 32 px, the classes of VIT_LABELS) with its image
    processor, saved with save_pretrained."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=len(VIT_LABELS), id2label=VIT_LABELS,
                       label2id={v: k for k, v in VIT_LABELS.items()})
    model = ViTForImageClassification(config).eval()
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=VIT_MEAN, image_std=VIT_STD,
                      resample=Image.Resampling.BICUBIC).save_pretrained(folder)
    return folder, model


def export_onnx(model: nn.Module, path: Path, size: int) -> Path:
    """``model`` exported to ``path`` by torch's legacy (TorchScript) exporter for images [1, 3, size, size]."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(model.eval(), (torch.zeros(1, 3, size, size),), str(path), dynamo=False,
                          input_names=["image"], output_names=["logits"])
    return path


def quick_report(script: str, out: Path, prefix: str) -> str:
    """The markdown report that ``bench/<script> --quick --out <out>`` writes (exactly one ``<prefix>-cpu-*.md``),
    after checking that the run succeeded: the one way the benchmark tests run a benchmark."""
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run([sys.executable, f"bench/{script}", "--quick", "--out", str(out)], cwd=root,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    written = list(out.glob(f"{prefix}-cpu-*.md"))
    assert len(written) == 1, written
    return written[0].read_text()


def markdown_tables(markdown: str) -> dict[str, list[dict[str, str]]]:
    """Every markdown table of a benchmark report under its '## ' heading, as rows of {column: cell}; a cell may
    hold an escaped pipe (\\|), and every row must have the header's number of cells."""
    tables: dict[str, list[dict[str, str]]] = {}
    heading, lines = None, []
    for line in [*markdown.splitlines(), "## end"]:
        if line.startswith("## "):
            if heading is not None and lines:
                header = [cell.strip() for cell in lines[0].strip("|").split("|")]
                rows = []
                for row in lines[2:]:
                    cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip()[1:-1])]
                    assert len(cells) == len(header), row
                    rows.append(dict(zip(header, cells, strict=True)))
                tables[heading] = rows
            heading, lines = line[3:].strip(), []
        elif line.startswith("|"):
            lines.append(line)
    return tables
