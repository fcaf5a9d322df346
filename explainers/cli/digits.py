"""Command line: ``python -m explainers.digits train|gallery``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from ..digits.data import GALLERY_SEED, GalleryItem, gallery
from ..digits.model import ASSETS
from ..digits.train import ARCHS, train

PROG = "python -m explainers.digits"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Procedural digits, LeNet-5 and a small ViT.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train LeNet-5 (or the ViT) and write its weights and a JSON record")
    train.add_argument("--arch", choices=ARCHS, default="lenet",
                       help="lenet (default, lenet_digits) or vit (vit_digits, a small torchvision ViT)")
    train.add_argument("--seed", type=int, default=0, help="seed of the training data and the network (default 0)")
    train.add_argument("--epochs", type=int, default=None,
                       help="passes over the data (default 10; shuffled 60; vit 6)")
    train.add_argument("--n-train", type=int, default=None,
                       help="training samples (default 24000; shuffled 6000; vit 64000)")
    train.add_argument("--lr", type=float, default=None, help="peak Adam learning rate (default 0.002)")
    train.add_argument("--weight-decay", type=float, default=None,
                       help="AdamW weight decay, 0 for Adam (default 0; vit 0.05)")
    train.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1)")
    train.add_argument("--workers", type=int, default=2, help="processes drawing the data (default 2)")
    train.add_argument("--out", type=Path, default=ASSETS, help="output folder (default assets/digits)")
    train.add_argument(
        "--shuffled-labels",
        action="store_true",
        help="train on randomly permuted labels (Adebayo et al. 2018 data randomisation)",
    )

    pictures = commands.add_parser("gallery", help="write the gallery's PNGs, their boxes and a contact sheet")
    pictures.add_argument("--n", type=int, default=12, help="number of samples (default 12)")
    pictures.add_argument("--seed", type=int, default=GALLERY_SEED, help=f"dataset seed (default {GALLERY_SEED})")
    pictures.add_argument("--canvas", type=int, default=32, help="canvas size in pixels (default 32)")
    pictures.add_argument("--zoom", type=int, default=4, help="upscaling of the contact sheet (default 4)")
    pictures.add_argument("--out", type=Path, required=True, help="output folder")
    return parser


def contact_sheet(items: Sequence[GalleryItem], zoom: int = 4, columns: int = 6) -> Image.Image:
    """Gallery samples side by side, upscaled by ``zoom``, each with its ink box drawn in red."""
    width, height = items[0].image.size
    rows = (len(items) + columns - 1) // columns
    gap = 2
    sheet = Image.new("RGB", (columns * (width * zoom + gap), rows * (height * zoom + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, item in enumerate(items):
        left, top = (i % columns) * (width * zoom + gap), (i // columns) * (height * zoom + gap)
        sheet.paste(item.image.resize((width * zoom, height * zoom), Image.Resampling.NEAREST), (left, top))
        x0, y0, x1, y1 = (int(v) * zoom for v in item.box)
        draw.rectangle([left + x0, top + y0, left + x1 - 1, top + y1 - 1], outline=(255, 40, 40))
    return sheet


def write_gallery(n: int, seed: int, out: Path, canvas: int = 32, zoom: int = 4) -> list[Path]:
    """Write the PNGs of ``gallery(n, seed, canvas)`` under their names, ``boxes.json`` and ``sheet.png``."""
    out.mkdir(parents=True, exist_ok=True)
    items = gallery(n, seed, canvas)
    paths = []
    for item in items:
        path = out / item.name
        item.image.save(path)
        paths.append(path)
    boxes = out / "boxes.json"
    boxes.write_text(json.dumps({i.name: {"label": i.label, "box": list(i.box)} for i in items}, indent=1) + "\n")
    sheet = out / "sheet.png"
    if items:
        contact_sheet(items, zoom=zoom).save(sheet)
        paths.append(sheet)
    return [*paths, boxes]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command == "train":

        train(
            seed=args.seed,
            epochs=args.epochs,
            n_train=args.n_train,
            out=args.out,
            shuffled_labels=args.shuffled_labels,
            lr=args.lr,
            threads=args.threads,
            workers=args.workers,
            command=f"{PROG} {shlex.join(argv)}",
            arch=args.arch,
            weight_decay=args.weight_decay,
        )
    else:
        paths = write_gallery(args.n, args.seed, args.out, canvas=args.canvas, zoom=args.zoom)
        print(f"wrote {len(paths)} files to {args.out}")
    return 0
