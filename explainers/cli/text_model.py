"""The ``text-model`` command: ``train`` the shipped text classifier from its procedural corpus; ``list`` the
shipped text models."""

from __future__ import annotations

import argparse
from typing import Any

from ..models.text import TRAIN_COMMAND, list_text_models, shipped_folder
from ..text.train import DEFAULT_BATCH, DEFAULT_LR, DEFAULT_STEPS, N_TEST, train
from .options import Parser, out_folder, positive_int


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def cmd_train(args: argparse.Namespace) -> int:
    out = out_folder(args.out) if args.out is not None else None
    command = (f"{TRAIN_COMMAND} --seed {args.seed} --steps {args.steps} --batch-size {args.batch_size} "
               f"--lr {args.lr}" + (f" --n-test {args.n_test}" if args.n_test != N_TEST else ""))
    train(out, seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr, threads=args.threads,
          n_test=args.n_test, command=command, log=(lambda _: None) if args.quiet else print)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    models = list_text_models()
    width = max(len(name) for name in models)
    for name, description in models.items():
        print(f"{name:<{width}}  {description}")
    return 0


def add_commands(commands: Any) -> None:
    """Add ``text-model train`` and ``text-model list`` to the CLI (see ``explainers.cli.main``)."""
    group = commands.add_parser(
        "text-model", help="the shipped text classifier: train it from its procedural corpus, list the models",
        description="The offline text model: a tiny BERT trained by this project on procedural film reviews whose "
        "class is decided by planted evidence words (explainers/text/corpus.py).")
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=Parser)

    tr = actions.add_parser(
        "train", help="train the tiny BERT and write its Hugging Face folder",
        description="Draw the procedural reviews, build the WordPiece vocabulary, train the tiny BERT and write "
        f"its folder (config.json, model.safetensors, tokenizer, examples.json, training.json, README.md) to --out "
        f"(default {shipped_folder()}). The same seed gives the same weights.")
    tr.add_argument("--out", default=None, metavar="DIR", help="output folder (default: the shipped model's folder)")
    tr.add_argument("--seed", default=0, type=int, help="seed of the sentences and the network (default: 0)")
    tr.add_argument("--steps", default=DEFAULT_STEPS, type=positive_int, metavar="N",
                    help="training steps, one batch of fresh sentences each (default: %(default)s)")
    tr.add_argument("--batch-size", default=DEFAULT_BATCH, type=positive_int, metavar="N",
                    help="sentences per step (default: %(default)s)")
    tr.add_argument("--lr", default=DEFAULT_LR, type=_positive_float, help="peak AdamW learning rate "
                    "(default: %(default)s)")
    tr.add_argument("--threads", default=1, type=positive_int, metavar="N",
                    help="torch threads (default: 1; the weights are the same for one thread count)")
    tr.add_argument("--n-test", default=N_TEST, type=positive_int, metavar="N",
                    help="held-out sentences per measurement (default: %(default)s)")
    tr.add_argument("--quiet", action="store_true", help="no progress output")
    tr.set_defaults(handler=cmd_train)

    ls = actions.add_parser("list", help="the shipped text models, one a line")
    ls.set_defaults(handler=cmd_list)
