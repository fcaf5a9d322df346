"""Classifiers from elsewhere as ModelBundles: Hugging Face ``transformers`` image classifiers and ONNX graphs.

- :func:`load_hf_classifier`: a folder written by ``save_pretrained`` (``config.json`` + ``model.safetensors``,
  optionally ``preprocessor_config.json``), or a .zip of one. Loaded offline, from safetensors only (a pickled
  ``pytorch_model.bin`` can run code when loaded), with the architectures built into ``transformers``: a config
  asking for remote code (``auto_map``) is refused, ``trust_remote_code`` is never set.
- :func:`load_onnx_classifier`: a ``.onnx`` graph, checked with ``onnx.checker`` and converted to a
  ``torch.fx.GraphModule`` by onnx2torch, so gradients and hooks (every CAM) work on it.

Both return the model in eval mode on ``device`` with its preprocessing, class names, layer catalogue and default
layer, finished as :func:`explainers.models.load_model` finishes its bundles. Every problem a file can have
raises :class:`~explainers.errors.ModelLoadError` with a message that says what was expected and what was found;
the device, input size, mean, std and labels go through the same checks as :func:`load_user_model`'s
(:mod:`explainers.models.inputs`).

The folder and zip steps (:func:`hf_folder`, :func:`read_json`, :func:`hf_config`, :func:`hf_weights`) are shared
with the text classifiers' loader (:mod:`explainers.models.text`); a text classifier given here is pointed there.

``transformers``, ``onnx`` and ``onnx2torch`` are imported inside the functions that need them: heavy imports
(seconds) that nothing but these loaders uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from PIL import Image
from torch import nn

from ..errors import LayerError, ModelLoadError
from ..layers import default_layer, layer_catalogue
from .base import ModelBundle, affine_normalizer, check_dry_run
from .inputs import (
    DEFAULT_INPUT_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_MODEL_BYTES,
    MAX_MODEL_MB,
    channel_values,
    check_model_size,
    check_options,
    class_names,
)

MAX_ZIP_BYTES = 2 * 1024**3  # total uncompressed size of a zipped Hugging Face folder
MAX_ZIP_MEMBERS = 1000  # a saved folder holds a handful of files; sharded checkpoints a few dozen
# Each member is capped by its kind before anything is extracted: a weights file at the model limit, anything else
# (config.json, the processor config, a README) at a few MB, since those are read whole into memory.
WEIGHTS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".msgpack", ".onnx")
MAX_TEXT_MEMBER_MB = 8  # a config with 21,843 ImageNet-21k labels is under 1 MB
# A text model's tokenizer files are larger: a multilingual tokenizer.json (250k pieces) is about 17 MB.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", ".model")
MAX_TOKENIZER_MB = 64
# A member that unpacks to more than this many times its compressed size, once over MAX_RATIO_FLOOR, is a bomb:
# float weights barely compress (about 1.1:1), JSON about 10:1; a run of zeros deflates about 1000:1.
MAX_COMPRESSION_RATIO = 100
MAX_RATIO_FLOOR = 2**20
HASH_CHARS = 8
_CHUNK = 1 << 20
_PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
_OTHER_FRAMEWORKS = ("tf_model.h5", "flax_model.msgpack")
# ConvNeXt-style processors: below this short side they resize to size / crop_pct and centre-crop, above it
# they warp to the size without cropping (transformers' ConvNextImageProcessor).
_CROP_PCT_LIMIT = 384


@dataclass
class _Preprocessing:
    input_size: int
    resize_size: int | None
    interpolation: Image.Resampling
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str  # where it came from, for the description


# ----------------------------------------------------------------------------------------------------------------
# Shared by both loaders


def _digest(paths: Sequence[Path], root: Path | None = None) -> str:
    """The first hex digits of the sha256 of the files (and their names relative to ``root``)."""
    sha = hashlib.sha256()
    for path in paths:
        if root is not None:
            sha.update(path.relative_to(root).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                sha.update(chunk)
    return sha.hexdigest()[:HASH_CHARS]


def _dry_run(model: nn.Module, size: int, device: torch.device, what: str, hint: str = "") -> int:
    """Run two blank images through the model; the number of classes of its [2, K] logits.

    Two, not one: every method runs batches, and a graph exported for one image only must be refused here.
    """
    try:
        with torch.inference_mode():
            logits = model(torch.zeros(2, 3, size, size, device=device))
    except Exception as exc:
        raise ModelLoadError(
            f"expected the {what} to take images [N, 3, {size}, {size}] and return logits [N, classes], but a "
            f"batch of two raised {type(exc).__name__}: {first_line(exc)}{hint}"
        ) from exc
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != 2:
        found = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelLoadError(
            f"expected the {what} to return logits [N, classes] (an image classifier); for a batch of two it "
            f"returned {found}"
        )
    if logits.shape[1] < 1:
        raise ModelLoadError(f"expected logits [N, classes] from the {what}, but it returned no classes")
    check_dry_run(logits, what)
    return int(logits.shape[1])


def _finish(bundle: ModelBundle, device: torch.device) -> ModelBundle:
    """As ``load_model`` finishes a bundle: on the device, eval mode, layer catalogue and default layer.

    A model without any spatial layer still loads (gradient methods work on it); CAM methods then say so.
    """
    bundle.model.to(device)
    bundle.model.eval()
    try:
        bundle.layers = layer_catalogue(bundle.model, (1, 3, bundle.input_size, bundle.input_size))
    except LayerError as exc:
        raise ModelLoadError(str(exc)) from exc
    bundle.default_layer = default_layer(bundle.model, bundle.layers) if bundle.layers else None
    if not bundle.layers:
        bundle.description += "; no layer outputs a spatial map, so CAM methods cannot run on it"
    return bundle


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    line = text.splitlines()[0]
    return line if len(line) <= 300 else line[:297] + "..."


def one_of(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ----------------------------------------------------------------------------------------------------------------
# Hugging Face


class HFClassifier(nn.Module):
    """A ``transformers`` image classifier as a plain one: ``forward(pixel_values [N, 3, H, W]) -> logits [N, K]``.

    The output object (``ImageClassifierOutput``, a dict, not a tuple) is unwrapped here, so every method sees the
    same interface as a torchvision model. ``interpolate_pos_encoding`` is passed when the input size differs from
    the size the position embeddings were trained at (ViT-style models support it).
    """

    def __init__(self, hf_model: nn.Module, interpolate_pos_encoding: bool = False):
        super().__init__()
        self.hf = hf_model
        self.interpolate_pos_encoding = interpolate_pos_encoding

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        kwargs = {"interpolate_pos_encoding": True} if self.interpolate_pos_encoding else {}
        output = self.hf(pixel_values=pixel_values, **kwargs)
        logits = getattr(output, "logits", None)
        if logits is None and isinstance(output, (tuple, list)) and output:
            logits = output[0]
        return logits


def load_hf_classifier(
    path: str | Path,
    *,
    labels: Any = None,
    input_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device | None = None,
) -> ModelBundle:
    """A Hugging Face image classifier saved with ``save_pretrained``, from its folder or a .zip of it.

    Class names from ``config.id2label`` unless ``labels`` (one per class; a list or a file, see
    :func:`~explainers.models.inputs.parse_labels`) is given; input size, resizing,
    interpolation, mean and std from ``preprocessor_config.json`` (else the config's ``image_size`` and ImageNet's
    statistics), each overridable. Refused with ModelLoadError: pickled weights (``pytorch_model.bin``) without
    safetensors, configs that need remote code, models that are not image classifiers, weights that leave any of
    the model's parameters uninitialised, outputs that are NaN or infinite, models over MAX_MODEL_MB (the zip, or
    the folder's JSON and safetensors files), and zips that are unsafe (absolute or ``..`` paths, links, over 2 GB
    or 1000 members, a weights member over MAX_MODEL_MB, any other member over MAX_TEXT_MEMBER_MB, a member
    compressed over MAX_COMPRESSION_RATIO:1) or hold no ``config.json``.
    """
    options = check_options(labels=labels, input_size=input_size, mean=mean, std=std, device=device)
    target = options.device
    source = Path(path)
    try:
        from transformers import AutoModelForImageClassification
    except ImportError as exc:  # pragma: no cover - transformers is a requirement
        raise ModelLoadError("loading a Hugging Face model needs the transformers package: pip install transformers") \
            from exc
    with hf_folder(source) as (folder, digest, zipped):
        raw = read_json(folder / "config.json", "config.json")
        config = _image_config(folder, raw)
        model = hf_weights(folder, config, zipped, AutoModelForImageClassification)
        prep = _hf_preprocessing(folder, config, options.input_size, options.mean, options.std)

    interpolate = _needs_interpolation(model, config, prep.input_size)
    wrapped = HFClassifier(model, interpolate).to(target).eval()
    count = _dry_run(wrapped, prep.input_size, target, f"Hugging Face model {source.name}")
    id2label = config_labels(config, count)
    categories = class_names(options.labels, count, id2label)
    normalize, denormalize = affine_normalizer(prep.mean, prep.std)
    architecture = type(model).__name__
    labels_from = "your labels" if options.labels is not None else "config.id2label"
    bundle = ModelBundle(
        name=f"hf:{file_stem(source)}:{digest}",
        model=wrapped,
        categories=categories,
        input_size=prep.input_size,
        normalize=normalize,
        denormalize=denormalize,
        resize_size=prep.resize_size,
        interpolation=prep.interpolation,
        description=(
            f"{architecture} from {source.name} (Hugging Face transformers, safetensors weights); {count} classes "
            f"from {labels_from}; {prep.input_size}x{prep.input_size} input, preprocessing from {prep.source}"
        ),
    )
    return _finish(bundle, target)


def file_stem(path: Path) -> str:
    stem = path.stem if path.is_file() else path.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:40] or "model"


@contextlib.contextmanager
def hf_folder(path: Path) -> Iterator[tuple[Path, str, bool]]:
    """(folder with config.json, content hash, whether it came from a zip); a zip is extracted safely into a
    temporary folder that is removed afterwards."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _counts_for_hash(p.name))
        check_model_size(sum(p.stat().st_size for p in files), f"the folder {path.name}")
        yield path, _digest(files, path), False
        return
    if not path.is_file():
        raise ModelLoadError(f"expected a folder saved with save_pretrained or a .zip of one, got {path}, which "
                             "does not exist")
    if not zipfile.is_zipfile(path):
        hint = (" (a lone .safetensors file carries no architecture: zip the whole folder with its config.json)"
                if path.suffix.lower() == ".safetensors" else "")
        raise ModelLoadError(f"expected a folder saved with save_pretrained or a .zip of one, got {path.name}, "
                             f"which is not a zip archive{hint}")
    check_model_size(path.stat().st_size, path.name)
    digest = _digest([path])
    scratch = tempfile.mkdtemp(prefix="saliency-hf-")
    try:
        root = Path(scratch)
        _extract_zip(path, root)
        yield _config_folder(root, path.name), digest, True
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _counts_for_hash(name: str) -> bool:
    return name.endswith((".json", ".safetensors"))


def _extract_zip(archive: Path, dest: Path) -> None:
    """Extract after checking every member: no absolute or ``..`` paths (zip-slip), no links, no encryption,
    each within its kind's size and the compression ratio (:func:`check_zip_member`), at most MAX_ZIP_MEMBERS
    members and MAX_ZIP_BYTES uncompressed, counted again while writing (a member's declared size can lie)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                raise ModelLoadError(f"expected at most {MAX_ZIP_MEMBERS} files in {archive.name}, got {len(members)}")
            plan, declared = [], 0
            for info in members:
                name = info.filename.replace("\\", "/")
                parts = PurePosixPath(name).parts
                if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
                    raise ModelLoadError(
                        f"refusing {archive.name}: member {info.filename!r} would be written outside the folder "
                        "(absolute path or '..'); expected paths inside the archive"
                    )
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise ModelLoadError(f"refusing {archive.name}: member {info.filename!r} is a symbolic link; "
                                         "expected plain files")
                if info.flag_bits & 0x1:
                    raise ModelLoadError(f"expected an unencrypted zip, but {info.filename!r} in {archive.name} is "
                                         "encrypted")
                if info.is_dir() or not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._"):
                    continue
                check_zip_member(info, archive.name, member_limit(name))
                declared += info.file_size
                if declared > MAX_ZIP_BYTES:
                    raise ModelLoadError(f"expected at most {MAX_ZIP_BYTES / 2**30:.0f} GB uncompressed in "
                                         f"{archive.name}, but its files add up to more")
                plan.append((info, parts))
            written = 0
            for info, parts in plan:
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    own = 0
                    while chunk := src.read(_CHUNK):
                        own += len(chunk)
                        written += len(chunk)
                        if own > info.file_size or written > MAX_ZIP_BYTES:
                            raise ModelLoadError(f"refusing {archive.name}: {info.filename!r} unpacks to more than "
                                                 "its declared size")
                        out.write(chunk)
    except ModelLoadError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, RuntimeError, ValueError,
            NotImplementedError) as exc:
        raise ModelLoadError(f"expected a readable zip archive, but extracting {archive.name} failed (damaged?): "
                             f"{first_line(exc)}") from exc


def member_limit(name: str) -> tuple[int, str]:
    """(bytes, what) a zip member may unpack to, by its kind: weights at the model limit, a text model's tokenizer
    files at MAX_TOKENIZER_MB, anything else (JSON, text) at MAX_TEXT_MEMBER_MB."""
    if name.lower().endswith(WEIGHTS_SUFFIXES):
        return MAX_MODEL_BYTES, f"{MAX_MODEL_MB} MB limit for a weights file"
    if name.lower().rsplit("/", 1)[-1].endswith(TOKENIZER_FILES):
        return MAX_TOKENIZER_MB * 2**20, f"{MAX_TOKENIZER_MB} MB limit for a tokenizer file"
    return MAX_TEXT_MEMBER_MB * 2**20, f"{MAX_TEXT_MEMBER_MB} MB limit for a JSON or text file"


def check_zip_member(info: zipfile.ZipInfo, archive: str, limit: tuple[int, str]) -> None:
    """Refuse a member, from its declared sizes and before it is extracted, that unpacks to more than ``limit``
    (bytes, what) or more than MAX_COMPRESSION_RATIO times its compressed size (once over MAX_RATIO_FLOOR).

    Extraction counts the bytes again, so a member whose declared size lies is stopped there."""
    size, packed = info.file_size, info.compress_size
    most, what = limit
    if size > most:
        raise ModelLoadError(f"refusing {archive}: member {info.filename!r} unpacks to {_mb(size)}, over the {what}")
    if size > MAX_RATIO_FLOOR and size > MAX_COMPRESSION_RATIO * max(packed, 1):
        raise ModelLoadError(
            f"refusing {archive}: member {info.filename!r} unpacks to {_mb(size)} from {_mb(packed)} "
            f"({size / max(packed, 1):,.0f}:1), over the {MAX_COMPRESSION_RATIO}:1 compression limit for members "
            f"over {_mb(MAX_RATIO_FLOOR)} (a zip bomb?)"
        )


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size:,} bytes"


def _config_folder(root: Path, archive: str) -> Path:
    """The folder inside an extracted zip that holds config.json: the shallowest one, which must be unique."""
    configs = sorted((p for p in root.rglob("config.json") if "__MACOSX" not in p.parts),
                     key=lambda p: len(p.parts))
    if not configs:
        found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        listing = one_of(found) if found else "no files"
        raise ModelLoadError(
            f"expected {archive} to hold a folder saved with save_pretrained (config.json and model.safetensors), "
            f"but it has no config.json; found {listing}"
        )
    shallowest = [p for p in configs if len(p.parts) == len(configs[0].parts)]
    if len(shallowest) > 1:
        where = one_of([p.parent.relative_to(root).as_posix() or "." for p in shallowest])
        raise ModelLoadError(f"expected one model in {archive}, but config.json appears in several folders: {where}")
    return configs[0].parent


def read_json(path: Path, label: str) -> dict:
    if not path.is_file():
        raise ModelLoadError(
            f"expected {label} in the model folder (written by save_pretrained), but there is none; found "
            f"{one_of(sorted(p.name for p in path.parent.iterdir())) or 'no files'}"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"expected {label} to be UTF-8 JSON text, but it is not text ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise ModelLoadError(
            f"expected {label} to be valid JSON, but line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"expected {label} to hold a JSON object, got a JSON {type(data).__name__}")
    return data


def hf_config(folder: Path, raw: dict):
    """The config of ``raw`` (config.json read from ``folder``), built only from classes that ship with
    transformers: no remote code (``auto_map``), no quantization, a known ``model_type``."""
    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if "auto_map" in raw:
        raise ModelLoadError(
            f"config.json asks for custom code (auto_map: {one_of(list(raw['auto_map']))}); Saliency Studio "
            "never runs code shipped with a model (trust_remote_code), only the architectures built into "
            f"transformers {transformers.__version__}"
        )
    if raw.get("quantization_config"):
        raise ModelLoadError("expected float weights, but config.json describes a quantized model "
                             f"({raw['quantization_config'].get('quant_method', 'quantization_config')}); "
                             "save the unquantized model")
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelLoadError("expected config.json to name its architecture in 'model_type' (save_pretrained "
                             f"writes it), got {model_type!r}")
    if model_type not in CONFIG_MAPPING:
        raise ModelLoadError(f"expected a model_type known to transformers {transformers.__version__}, got "
                             f"{model_type!r}")
    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        raise ModelLoadError(f"expected a valid {model_type} config.json, but transformers refused it: "
                             f"{first_line(exc)}") from exc


def described_architecture(raw: dict) -> str:
    """What config.json says the model is: its ``architectures``, else its ``model_type``."""
    return ", ".join(str(a) for a in raw.get("architectures") or []) or str(raw.get("model_type"))


def is_text_classifier(config, raw: dict) -> bool:
    """Whether a config describes a text sequence classifier: AutoModelForSequenceClassification builds its type,
    and its ``architectures`` (when listed) name a ``...ForSequenceClassification``."""
    from transformers import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    if type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        return False
    named = raw.get("architectures") or []
    return not named or any("ForSequenceClassification" in str(name) for name in named)


def _image_config(folder: Path, raw: dict):
    """The config (:func:`hf_config`); must describe an image classifier. A text classifier is pointed to the
    Text page."""
    from transformers import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING

    config = hf_config(folder, raw)
    if type(config) not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING:
        described = described_architecture(raw)
        if is_text_classifier(config, raw):
            raise ModelLoadError(
                f"expected an image classifier, got a text classifier ({described}, model_type "
                f"{raw.get('model_type')!r}); explain it on the Text page, or load it with "
                "explainers.models.text.load_text_model"
            )
        raise ModelLoadError(
            f"expected an image classifier (a model AutoModelForImageClassification can build), got {described} "
            f"(model_type {raw.get('model_type')!r}), which is not one"
        )
    return config


def hf_weights(folder: Path, config, zipped: bool, auto_class, **kwargs) -> nn.Module:
    """The model ``auto_class`` (an ``AutoModelFor...``) builds from ``config`` with the folder's safetensors, in
    float32 and eval mode; no weight of it may be left at its random initialisation. ``kwargs`` go to
    ``from_pretrained`` (e.g. ``attn_implementation``)."""
    has_safetensors = (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
    if not has_safetensors:
        pickles = sorted({p.name for pattern in _PICKLES for p in folder.glob(pattern)})
        others = [name for name in _OTHER_FRAMEWORKS if (folder / name).is_file()]
        if pickles:
            found = f"only pickled weights ({one_of(pickles)}), which can run code when loaded"
        elif others:
            found = f"weights of another framework ({', '.join(others)})"
        else:
            found = "no weights file"
        raise ModelLoadError(
            f"expected the weights as model.safetensors, but the folder has {found}; save the model with "
            "model.save_pretrained(folder), which writes safetensors (safe_serialization=True is the default)"
        )
    try:
        model, info = auto_class.from_pretrained(
            folder,
            config=config,
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            output_loading_info=True,
            dtype=torch.float32,
            disable_mmap=zipped,  # the extracted files are deleted right after loading
            **kwargs,
        )
    except Exception as exc:
        raise ModelLoadError(
            f"expected model.safetensors to hold the weights of the {type(config).__name__.removesuffix('Config')} "
            f"described by config.json, but loading failed: {first_line(exc)}"
        ) from exc
    missing = sorted(info.get("missing_keys") or [])
    mismatched = [str(m[0] if isinstance(m, (tuple, list)) else m) for m in info.get("mismatched_keys") or []]
    if missing or mismatched:
        what = missing or mismatched
        kind = "missing from" if missing else "of the wrong shape in"
        hint = " Was the model saved without its classification head?" if missing else ""
        raise ModelLoadError(
            f"expected model.safetensors to hold every weight of {type(model).__name__}, but {len(what)} are {kind} "
            f"it ({one_of(what, 3)}); they would be random.{hint}"
        )
    return model.float().eval()


def _needs_interpolation(model: nn.Module, config, size: int) -> bool:
    """Whether the model must interpolate its position embeddings to run at ``size`` (and can)."""

    trained = getattr(config, "image_size", None)
    trained = trained[0] if isinstance(trained, (list, tuple)) and trained else trained
    if not isinstance(trained, int) or trained == size:
        return False
    return "interpolate_pos_encoding" in inspect.signature(model.forward).parameters


def config_labels(config, count: int) -> list[str]:
    mapping = getattr(config, "id2label", None) or {}
    try:
        names = {int(key): str(value) for key, value in mapping.items()}
    except (TypeError, ValueError):
        names = {}
    if sorted(names) != list(range(count)):
        return [f"class {i}" for i in range(count)]
    return [names[i] for i in range(count)]


def _size_of(value, label: str) -> tuple[int, int | None]:
    """(input size, short side to resize to first or None) from a processor's ``size`` or ``crop_size``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, None
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            height, width = value["height"], value["width"]
            if height != width:
                raise ModelLoadError(
                    f"expected a square input in preprocessor_config.json's {label}, got {height}x{width}; pass "
                    "input_size to choose one"
                )
            return int(height), None
        if "shortest_edge" in value:
            return int(value["shortest_edge"]), int(value["shortest_edge"])
    raise ModelLoadError(f"expected preprocessor_config.json's {label} to be a number or a dict with height and "
                         f"width or shortest_edge, got {value!r}")


def _hf_preprocessing(folder: Path, config, input_size, mean, std) -> _Preprocessing:
    """Preprocessing as the model's image processor would do it, in the bundle's terms.

    The bundle normalises pixels x in [0, 1]; a processor computes (x * 255 * rescale_factor - mean) / std, which
    is (x - mean / s) / (std / s) with s = 255 * rescale_factor.
    """
    path = folder / "preprocessor_config.json"
    raw = read_json(path, "preprocessor_config.json") if path.is_file() else None
    trained = getattr(config, "image_size", None)
    trained = trained[0] if isinstance(trained, (list, tuple)) and trained else trained
    size = trained if isinstance(trained, int) else DEFAULT_INPUT_SIZE
    resize = None
    interpolation = Image.Resampling.BILINEAR
    stats_mean, stats_std, scale = IMAGENET_MEAN, IMAGENET_STD, 1.0
    if raw is not None:
        try:
            if raw.get("do_resize", True) and raw.get("size") is not None:
                size, resize = _size_of(raw["size"], "size")
                crop_pct = raw.get("crop_pct")
                if raw.get("do_center_crop") and raw.get("crop_size") is not None:
                    size, _ = _size_of(raw["crop_size"], "crop_size")
                    resize = resize or size
                elif crop_pct and resize is not None and resize < _CROP_PCT_LIMIT:
                    resize = int(resize / float(crop_pct))
                resize = resize or size
            if raw.get("resample") is not None:
                interpolation = Image.Resampling(int(raw["resample"]))
            if raw.get("do_rescale", True):
                scale = 255.0 * float(raw.get("rescale_factor", 1 / 255))
            else:
                scale = 255.0
            if raw.get("do_normalize", True):  # on the processor's own scale: no [0, 1] bounds here
                stats_mean = channel_values(raw.get("image_mean", IMAGENET_MEAN), "image_mean")
                stats_std = channel_values(raw.get("image_std", IMAGENET_STD), "image_std")
                if min(stats_std) <= 0:
                    raise ModelLoadError(f"expected every image_std to be positive, got {raw.get('image_std')!r}")
            else:
                stats_mean, stats_std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        except ModelLoadError as exc:
            raise ModelLoadError(f"preprocessor_config.json: {exc}") from exc
        except (TypeError, ValueError, ZeroDivisionError) as exc:
            raise ModelLoadError(f"expected the usual fields in preprocessor_config.json (size, crop_size, "
                                 f"resample, image_mean, image_std), but {first_line(exc)}") from exc
        source = "preprocessor_config.json"
    else:
        source = "defaults (no preprocessor_config.json: the config's image_size, ImageNet mean and std)"
    stats_mean = tuple(m / scale for m in stats_mean)
    stats_std = tuple(s / scale for s in stats_std)
    if input_size is not None:  # keep the processor's resize-to-crop ratio at the new size
        resize = round(input_size * resize / size) if resize else None
        size = input_size
    if mean is not None or std is not None:
        source += " with your mean/std"
    return _Preprocessing(size, resize, interpolation, mean or stats_mean, std or stats_std, source)


# ----------------------------------------------------------------------------------------------------------------
# ONNX


def load_onnx_classifier(
    path: str | Path,
    *,
    labels: Any = None,
    input_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device | None = None,
) -> ModelBundle:
    """An ONNX image classifier, checked with ``onnx.checker`` and converted to PyTorch by onnx2torch.

    Input size from the graph's input when static (else ``input_size``, else 224); mean and std ImageNet's unless
    given; class names ``labels`` or "class 0".."class K-1". Refused with ModelLoadError: files that are not ONNX
    or fail the checker, external data that is missing or outside the model's folder, graphs with more or fewer
    than one image input [N, 3, H, W], operators onnx2torch cannot convert (named), and graphs that do not
    return logits [N, K] for a batch of two.
    """
    options = check_options(labels=labels, input_size=input_size, mean=mean, std=std, device=device)
    target = options.device
    source = Path(path)
    try:
        import onnx
        import onnx2torch  # noqa: F401
    except ImportError as exc:  # pragma: no cover - both are requirements
        raise ModelLoadError("loading an ONNX model needs the onnx and onnx2torch packages: "
                             "pip install onnx onnx2torch") from exc
    if not source.is_file():
        raise ModelLoadError(f"expected an .onnx file, got {source}, which does not exist")
    check_model_size(source.stat().st_size, source.name)
    proto, external = _read_onnx(source)
    check_model_size(sum(p.stat().st_size for p in (source, *external)), f"{source.name} with its external data")
    digest = _digest([source, *external])
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelLoadError(f"expected a valid ONNX model, but onnx.checker rejects {source.name}: "
                             f"{first_line(exc)}") from exc
    size = _onnx_input_size(proto, options.input_size)
    _inline_identity_initializers(proto)
    _prescan_operators(proto)
    graph_module = _convert(proto, source.name)
    outputs = _keep_first_output(graph_module)
    if not any(True for _ in graph_module.parameters()):
        # Weights held as buffers only: ModelBundle.device reads the first parameter.
        graph_module.register_parameter("device_anchor", nn.Parameter(torch.zeros(0), requires_grad=False))
    graph_module.to(target).eval()
    count = _dry_run(graph_module, size, target, f"ONNX model {source.name}",
                     "; if it was exported for one image only, export it with a dynamic batch dimension "
                     "(torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))")
    categories = class_names(options.labels, count)
    normalize, denormalize = affine_normalizer(options.mean or IMAGENET_MEAN, options.std or IMAGENET_STD)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    notes = [f"{source.name} (ONNX opset {opset}, converted to PyTorch by onnx2torch)", f"{count} classes"]
    notes.append(f"{size}x{size} input, " + ("your mean/std" if options.mean or options.std else
                                             "ImageNet mean and std"))
    if outputs > 1:
        notes.append(f"the first of its {outputs} outputs read as logits")
    if _ends_in_softmax(proto):
        notes.append("its output is a softmax: scores are probabilities, not logits")
    bundle = ModelBundle(
        name=f"onnx:{file_stem(source)}:{digest}",
        model=graph_module,
        categories=categories,
        input_size=size,
        normalize=normalize,
        denormalize=denormalize,
        description="; ".join(notes),
    )
    return _finish(bundle, target)


def _read_onnx(path: Path):
    """The ModelProto with its external data loaded; refuses external files that are missing or lie outside the
    model's folder. Returns (proto, external files)."""
    import onnx
    from onnx import external_data_helper

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"expected an ONNX model (a protobuf ModelProto), but {path.name} could not be "
                             f"parsed: {first_line(exc)}") from exc
    if not proto.graph.node:
        raise ModelLoadError(f"expected an ONNX model with a graph of operators, but {path.name} has none")
    base = path.parent.resolve()
    external: list[Path] = []
    for tensor in _all_tensors(proto.graph):
        if not external_data_helper.uses_external_data(tensor):
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        where = (base / location).resolve()
        if not location or Path(location).is_absolute() or ".." in PurePosixPath(location).parts \
                or base not in where.parents:
            raise ModelLoadError(f"refusing {path.name}: tensor {tensor.name!r} points to external data "
                                 f"{location!r} outside the model's folder")
        if not where.is_file():
            raise ModelLoadError(
                f"expected the external data file {location!r} of tensor {tensor.name!r} next to {path.name}, but "
                "it is missing; save the model as one file (onnx.save(model, path, save_as_external_data=False))"
            )
        if where not in external:
            external.append(where)
    if external:
        try:
            external_data_helper.load_external_data_for_model(proto, str(base))
        except Exception as exc:
            raise ModelLoadError(f"expected readable external data for {path.name}, but {first_line(exc)}") \
                from exc
    return proto, external


def _all_tensors(graph) -> Iterator:
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _all_tensors(attribute.g)
            for sub in attribute.graphs:
                yield from _all_tensors(sub)


def _dims(value_info) -> list[int | None]:
    """Static sizes of a tensor's dimensions, None where symbolic or unknown."""
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in shape.dim]


def _onnx_input_size(proto, input_size: int | None) -> int:
    """The image input's side: exactly one input [N, 3, H, W] of float32, square when static."""
    from onnx import TensorProto

    graph = proto.graph
    weights = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]
    if len(inputs) != 1:
        names = one_of([value.name for value in inputs]) or "none"
        raise ModelLoadError(f"expected one image input, but the graph has {len(inputs)}: {names}")
    value = inputs[0]
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or tensor.elem_type != TensorProto.FLOAT:
        kind = TensorProto.DataType.Name(tensor.elem_type) if value.type.HasField("tensor_type") else "non-tensor"
        raise ModelLoadError(f"expected the input {value.name!r} to be a float32 tensor, got {kind}; export the "
                             "model in float32")
    dims = _dims(value)
    if tensor.HasField("shape") and len(dims) != 4:
        raise ModelLoadError(f"expected the input {value.name!r} to be images [N, 3, H, W], got {len(dims)} "
                             "dimensions")
    if len(dims) == 4:
        channels, height, width = dims[1:]
        if channels is not None and channels != 3:
            layout = " (channels-last [N, H, W, 3]? export with channels first)" if dims[3] == 3 else ""
            raise ModelLoadError(f"expected the input {value.name!r} to have 3 colour channels at dimension 1, got "
                                 f"shape {_shape_text(dims)}{layout}")
        if height is not None or width is not None:
            if height != width:
                raise ModelLoadError(f"expected a square input, but {value.name!r} is fixed at "
                                     f"{_shape_text(dims)}")
            if input_size is not None and input_size != height:
                raise ModelLoadError(f"the graph's input is fixed at {height}x{width}, got input_size={input_size}")
            return int(height)
    return input_size or DEFAULT_INPUT_SIZE


def _shape_text(dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _inline_identity_initializers(proto) -> None:
    """Identity nodes that copy an initializer become initializers themselves.

    torch.onnx.export shares equal weights (e.g. the zero biases of folded BatchNorms) through Identity nodes;
    onnx2torch needs a Conv's weights and bias as initializers, so it would fail on them.
    """
    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    outputs = {value.name for value in graph.output}
    for node in list(graph.node):
        if node.op_type == "Identity" and node.domain in ("", "ai.onnx") and len(node.input) == 1 \
                and node.input[0] in initializers and node.output[0] not in outputs:
            copy = graph.initializer.add()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            graph.node.remove(node)


def _prescan_operators(proto) -> None:
    """Every operator the graph uses must have an onnx2torch converter at the graph's opset; name those that
    do not, all at once."""
    from onnx2torch.node_converters import get_converter

    opsets = {entry.domain or "": entry.version for entry in proto.opset_import}
    if "ai.onnx" in opsets:
        opsets.setdefault("", opsets["ai.onnx"])
    missing = []
    for node in proto.graph.node:
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        version = opsets.get(domain)
        label = node.op_type if not domain else f"{domain}.{node.op_type}"
        if version is None:
            missing.append(f"{label} (its domain is not imported)")
            continue
        try:
            get_converter(operation_type=node.op_type, version=version, domain=domain)
        except NotImplementedError:
            missing.append(f"{label} (opset {version})")
    if missing:
        unique = list(dict.fromkeys(missing))
        raise ModelLoadError(
            f"the graph uses operator{'s' if len(unique) > 1 else ''} that onnx2torch cannot convert to PyTorch: "
            f"{one_of(unique)}; export the model without {'them' if len(unique) > 1 else 'it'} or at another opset"
        )


def _convert(proto, name: str):
    """onnx2torch's conversion; an error names the operator being converted when it fails."""
    import onnx2torch

    try:
        return onnx2torch.convert(proto)
    except Exception as exc:
        op = _failing_operator(exc)
        where = f" at operator {op}" if op else ""
        raise ModelLoadError(f"expected onnx2torch to convert {name} to PyTorch, but it failed{where}: "
                             f"{first_line(exc)}") from exc


def _failing_operator(exc: BaseException) -> str | None:
    """The operator onnx2torch was converting: from its message, or from the frame of its convert loop."""
    match = re.search(r"operation_type='([^']+)'", str(exc))
    if match:
        return match.group(1)
    tb, op = exc.__traceback__, None
    while tb is not None:
        node = tb.tb_frame.f_locals.get("onnx_node")
        if node is not None and hasattr(node, "operation_type"):
            op = f"{node.operation_type} ({getattr(node, 'name', '')})".replace(" ()", "")
        tb = tb.tb_next
    return op


def _keep_first_output(graph_module) -> int:
    """A graph with several outputs returns only its first (the logits); returns how many outputs it had."""
    output = next(node for node in graph_module.graph.nodes if node.op == "output")
    value = output.args[0]
    if isinstance(value, (tuple, list)):
        count = len(value)
        output.args = (value[0],)
        graph_module.graph.eliminate_dead_code()
        graph_module.recompile()
        return count
    return 1


def _ends_in_softmax(proto) -> bool:
    first = proto.graph.output[0].name if proto.graph.output else None
    return any(node.op_type in ("Softmax", "LogSoftmax") and first in node.output for node in proto.graph.node)
