"""Training LeNet-5 (real or shuffled labels) or the digits ViT on the procedural digits, from a fixed seed.

The shuffled-label run is the data-randomisation test of Adebayo et al. 2018, arXiv:1810.03292: the network has to
memorise noise (Zhang et al. 2017, arXiv:1611.03530), so its held-out accuracy stays near chance. The ViT
(``arch="vit"``, :mod:`explainers.digits.vit`) trains on real labels only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import PIL
import safetensors
import torch
from PIL import features
from safetensors.torch import save_file
from torch import nn

from . import vit
from .data import FONTS, MEAN, STD, make_digits, to_tensor
from .model import ASSETS, VARIANTS, LeNet5

TEST_SEED_OFFSET = 10_000  # the held-out set uses seed + this: different samples from the same distribution
N_TEST = 10_000
# Memorising noise needs many passes over a smaller set; learning digits needs few passes over a larger one.
DEFAULTS = {
    False: {"epochs": 10, "n_train": 24_000, "lr": 2e-3},
    True: {"epochs": 60, "n_train": 6_000, "lr": 2e-3},
}
ARCHS = ("lenet", "vit")
# A transformer has no built-in locality and learns it from the data: it needs more samples than LeNet-5 (24 000
# samples for 6 epochs overfit, 0.93 held out), and the procedural set gives as many as asked.
VIT_DEFAULTS = {"epochs": 6, "n_train": 64_000, "lr": 2e-3, "weight_decay": 0.05}


def accuracy(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000, *, rgb: bool = False
) -> float:
    """Top-1 accuracy of ``model`` (switched to eval mode) on normalised inputs, on the model's device.

    ``rgb=True`` feeds gray [n, 1, H, W] inputs as three equal channels, batch by batch (no 3x copy of the set).
    """
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(labels), batch_size):
            batch = inputs[start : start + batch_size]
            logits = model((batch.expand(-1, 3, -1, -1) if rgb else batch).to(device))
            correct += int((logits.argmax(1).cpu() == labels[start : start + batch_size].cpu()).sum())
    return correct / max(1, len(labels))


@contextlib.contextmanager
def _torch_settings(threads: int) -> Iterator[None]:
    """Thread count and denormal flushing for the block; the caller's settings come back afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    # Near-zero losses fill the gradients and Adam's moments with denormal floats, which slow CPUs tenfold.
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(previous)


def versions() -> dict[str, str]:
    """The library versions that decide the data's pixels and the training's arithmetic."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "freetype": str(features.version("freetype2")),
        "safetensors": safetensors.__version__,
    }


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not on every platform
        return None


def file_sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def train(
    seed: int = 0,
    epochs: int | None = None,
    n_train: int | None = None,
    out: Path | str = ASSETS,
    shuffled_labels: bool = False,
    n_test: int = N_TEST,
    batch_size: int = 128,
    lr: float | None = None,
    threads: int = 1,
    workers: int = 2,
    command: str = "",
    log: Callable[[str], None] = print,
    arch: str = "lenet",
    weight_decay: float | None = None,
) -> dict:
    """Train LeNet-5 or (``arch="vit"``) the digits ViT, write ``<out>/<name>.safetensors`` and ``.json``, where the
    name is ``lenet_digits``, ``lenet_digits_shuffled`` or ``vit_digits``; return the JSON's dict.

    The data are drawn by ``workers`` processes, then the network trains with ``threads`` torch threads: one by
    default, because on a shared two-core machine a second thread mostly waits for the busy core (three times
    slower, measured). The caller's thread count and global random state are left as they were. ``weight_decay``
    above 0 trains with AdamW (decoupled decay, Loshchilov & Hutter 2017, arXiv:1711.05101) instead of Adam.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    if arch == "vit" and shuffled_labels:
        raise ValueError("the digits ViT trains on real labels only; drop --shuffled-labels or use --arch lenet")
    defaults = VIT_DEFAULTS if arch == "vit" else DEFAULTS[bool(shuffled_labels)]
    epochs = defaults["epochs"] if epochs is None else epochs
    n_train = defaults["n_train"] if n_train is None else n_train
    lr = defaults["lr"] if lr is None else lr
    weight_decay = defaults.get("weight_decay", 0.0) if weight_decay is None else weight_decay
    load_at_start = _load_average()
    started = time.perf_counter()

    test_seed = seed + TEST_SEED_OFFSET
    x_train, y_train, true_labels, x_test, y_test = _training_data(n_train, n_test, seed, test_seed, shuffled_labels,
                                                                   workers)
    data_seconds = time.perf_counter() - started
    log(f"data: {n_train} train (seed {seed}), {n_test} held-out (seed {test_seed}) in {data_seconds:.1f} s")

    with _torch_settings(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = vit.build_vit(channels=1) if arch == "vit" else LeNet5()
        history = _fit(
            model, x_train, y_train, x_test, y_test, epochs, batch_size, lr, seed, started, log, weight_decay
        )
        if arch == "vit":  # ship (and measure) the plain 3-channel VisionTransformer, not the gray training copy
            shipped = vit.build_vit()
            shipped.load_state_dict(vit.rgb_state(model.state_dict()))
            model = shipped
        rgb = arch == "vit"
        train_accuracy = accuracy(model, x_train, y_train, rgb=rgb)
        held_out = accuracy(model, x_test, y_test, rgb=rgb)
        true_label_accuracy = accuracy(model, x_train, torch.from_numpy(true_labels)) if shuffled_labels else None
    seconds = time.perf_counter() - started
    log(f"final: train acc {train_accuracy:.4f} (eval mode), held-out acc {held_out:.4f}, {seconds:.1f} s in all")

    kind = "shuffled" if shuffled_labels else "real"
    name = vit.NAME if arch == "vit" else VARIANTS[kind]
    weights, state = _save_weights(model, Path(out), name, kind, seed)
    vit_part = {"arch": arch, "architecture": f"torchvision VisionTransformer {vit.CONFIG}"} if arch == "vit" else {}
    optimizer = f"AdamW (weight decay {weight_decay})" if weight_decay > 0 else "Adam"
    record = {
        "command": command
        or "python -m explainers.digits train"
        + (f" --arch {arch}" if arch != "lenet" else "")
        + f" --seed {seed} --epochs {epochs} --n-train {n_train} --lr {lr}"
        + (f" --weight-decay {weight_decay}" if weight_decay != defaults.get("weight_decay", 0.0) else "")
        + f" --threads {threads} --workers {workers}"
        + (" --shuffled-labels" if shuffled_labels else ""),
        **vit_part,
        "labels": kind,
        "seed": seed,
        "epochs": epochs,
        "n_train": n_train,
        "n_test": n_test,
        "test_seed": test_seed,
        "batch_size": batch_size,
        "optimizer": f"{optimizer}, one-cycle max lr {lr}",
        "train_accuracy": round(train_accuracy, 4),
        "held_out_accuracy": round(held_out, 4),
        **({"train_accuracy_on_true_labels": round(true_label_accuracy, 4)} if shuffled_labels else {}),
        "wall_seconds": round(seconds, 1),
        "data_seconds": round(data_seconds, 1),
        "threads": threads,
        "workers": workers,
        "cpu_count": os.cpu_count(),
        # Other processes on a shared machine slow everything; the 1-minute load average says how busy it was.
        "load_average_at_start": load_at_start,
        "load_average_at_end": _load_average(),
        "machine": platform.machine(),
        "normalisation": {"mean": MEAN, "std": STD},
        "fonts": list(FONTS),
        "versions": versions(),
        "weights_file": weights.name,
        "weights_sha256": file_sha256(weights),
        "parameters": sum(t.numel() for t in state.values()),
        "history": [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in history],
    }
    record_file = weights.with_suffix(".json")
    record_file.write_text(json.dumps(record, indent=2) + "\n")
    log(f"wrote {weights} and {record_file}")
    return record


def _training_data(n_train: int, n_test: int, seed: int, test_seed: int, shuffled_labels: bool, workers: int):
    """(x_train, y_train, the true training labels, x_test, y_test); with ``shuffled_labels`` the training labels
    are a permutation of the true ones (the class balance kept, only the pairing of image and label destroyed)."""
    train_set = make_digits(n_train, seed, workers=workers)
    test_set = make_digits(n_test, test_seed, workers=workers)
    true_labels = train_set.labels
    labels = np.random.default_rng([seed, 1]).permutation(true_labels) if shuffled_labels else true_labels
    return (to_tensor(train_set.images), torch.from_numpy(labels), true_labels, to_tensor(test_set.images),
            torch.from_numpy(test_set.labels))


def _save_weights(
    model: nn.Module, out: Path, name: str, kind: str, seed: int
) -> tuple[Path, dict[str, torch.Tensor]]:
    """``<out>/<name>.safetensors`` of the trained model; returns its path and the state it holds."""
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{name}.safetensors"
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    # one metadata key: safetensors writes a dict's keys in no fixed order, and the record hashes the file
    save_file(state, str(weights), metadata={"training": f"seed {seed}, {kind} labels"})
    return weights, state


def _fit(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    started: float,
    log: Callable[[str], None],
    weight_decay: float = 0.0,
) -> list[dict]:
    """Adam (AdamW when ``weight_decay`` > 0) with a one-cycle schedule; returns one row of loss and accuracies per
    epoch."""
    n_train = len(y_train)
    if weight_decay > 0:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((n_train + batch_size - 1) // batch_size)
    # One-cycle (Smith & Topin 2017, arXiv:1708.07120): a short warm-up, then annealing to a low rate.
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(1, steps), pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss()
    order_generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        total_loss, correct = 0.0, 0
        for batch in torch.randperm(n_train, generator=order_generator).split(batch_size):
            logits = model(x_train[batch])
            loss = loss_fn(logits, y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(batch)
            correct += int((logits.argmax(1) == y_train[batch]).sum())
        row = {"epoch": epoch, "loss": total_loss / n_train, "train_accuracy": correct / n_train}
        if epoch == epochs or epoch % max(1, epochs // 10) == 0:
            row["held_out_accuracy"] = accuracy(model, x_test, y_test)
        history.append(row)
        held = f", held-out acc {row['held_out_accuracy']:.4f}" if "held_out_accuracy" in row else ""
        log(
            f"epoch {epoch:3d}/{epochs}: loss {row['loss']:.4f}, train acc (running) {row['train_accuracy']:.4f}"
            f"{held}, {time.perf_counter() - started:.0f} s"
        )
    return history
