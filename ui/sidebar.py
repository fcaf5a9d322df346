"""The shared sidebar, drawn once per run by app.py for every page: image (samples, uploads, camera), model and
preprocessing.

Because app.py draws these widgets, they are the same widgets on every page: an upload or a sample chosen on
Explore is still there on Compare. Problems (no image yet, a model that cannot load) are not shown here but
handed to the page, which shows them in the main area.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch
from PIL import Image

from explainers import SaliencyError
from explainers.dense.outputs import DETECTION
from explainers.digits import gallery
from explainers.errors import TargetError
from explainers.images import MAX_IMAGE_BYTES, MAX_IMAGE_MB, check_image_size, image_hash, load_image
from explainers.models import CENTER_CROP, DEFAULT_MODEL, DIGITS_MODELS, RESIZE, ModelBundle
from explainers.models.dense import DenseBundle, Prediction

from . import state, user_models
from .caches import ByteLRU, return_freed_memory
from .dense import DenseSettings, dense_choice, dense_controls, key_digest, nothing_fix
from .errors import show_error
from .method_docs import md_escape
from .models import describe_model, get_bundle, model_choices

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "samples"
IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]
SOURCES = ("Samples", "Upload", "Camera")
RUN_SOURCE = "Batch run"  # offered once a page (Batch) has opened one of a run's images on Explore
PREPROCESSING_LABELS = {RESIZE: "Whole image (resized)", CENTER_CROP: "Centre crop (canonical)"}
# The dashboard keeps no image larger than this on its longest side: a 7000×7000 upload decoded is 147 MB, its
# display copy 7.7 MB. The model sees 224 px and a panel is a few hundred, so nothing on screen loses detail.
DISPLAY_MAX_SIDE = 1600
# Decoded images (display-sized) shared by every session, keyed by the file's bytes: about 8 large ones.
DECODED_MAX_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Decoded:
    """An image as the dashboard keeps it: ``image`` at most DISPLAY_MAX_SIDE px on its longest side (what the
    model and every panel use), ``image_hash`` and ``size`` of the full-resolution decoded pixels, read once before
    the downscale. The hash is ``explainers.images.image_hash`` of the full image, so it is the id a batch run and a
    manifest give the same file, and the same file always maps to the same cache key."""

    image: Image.Image
    image_hash: str
    size: tuple[int, int]


def decoded(image: Image.Image) -> Decoded:
    """Hash ``image`` at full resolution, then shrink it (in place: no second full-size copy) to the display bound."""
    digest, size = image_hash(image), image.size
    if max(size) > DISPLAY_MAX_SIDE:
        info = dict(image.info)
        image.thumbnail((DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE), Image.Resampling.LANCZOS, reducing_gap=3.0)
        image.info = info  # the load notice ("animated GIF: using the first of 12 frames") is still true
        return_freed_memory()  # the full-size pixels are gone: give their memory back, not to this thread's arena
    return Decoded(image, digest, size)


@st.cache_resource(show_spinner=False)
def decoded_images() -> ByteLRU:
    """Decoded, display-sized images of every session, bounded by bytes (st.cache_data bounds entries only)."""
    return ByteLRU(DECODED_MAX_BYTES)


@dataclass
class Selection:
    image: Image.Image  # at most DISPLAY_MAX_SIDE px on its longest side (Decoded)
    image_name: str
    image_hash: str  # of the full-resolution pixels (Decoded)
    model: str
    preprocessing: str
    bundle: ModelBundle
    inputs: torch.Tensor  # [1, C, H, W] on the model's device
    original_size: tuple[int, int] | None = None  # the file's own size, where the image was shrunk for display
    # a detector or segmenter: ``bundle`` is then its ScoredBundle (class t = target t), ``dense`` the model itself,
    # ``prediction`` what it predicts on the image, ``dense_key`` the target set and score settings,
    # ``dense_settings`` the sidebar's dense controls (``dense`` lists boxes at their threshold)
    dense: DenseBundle | None = None
    prediction: Prediction | None = None
    dense_key: tuple = ()
    dense_settings: DenseSettings | None = None

    @property
    def cache_id(self) -> str:
        """The model as every cache of this selection's results knows it: the model's id, and for a dense model
        its target set too, so two target sets never share a map, a score or a check."""
        return f"{self.model}#targets:{key_digest(self.dense_key)}" if self.dense_key else self.model

    @property
    def target_scope(self) -> str:
        """What a target picked on this selection belongs to: a classifier's class index means the same class on
        any model of the same classes, so the image alone; a dense target (box #3) is one model's on one picture
        (the image as preprocessed). Within that, a change of threshold or a drawn region only adds targets after
        the others or drops the last ones, so an index kept still names the same box or region."""
        if self.dense is None:
            return self.image_hash
        return f"{self.model}|{self.image_hash}|{self.preprocessing}"

    @property
    def image_size(self) -> tuple[int, int]:
        """The size of the image as the user has it (the manifest's), not of the copy kept for display."""
        return self.original_size or self.image.size

    @property
    def model_view(self) -> Image.Image:
        return model_view(self.model, self.image_hash, self.preprocessing, self.bundle, self.image)


@dataclass
class Problem:
    """Why there is no selection: ``kind`` "empty" (nothing chosen yet: say what to do) or "error"; ``fix`` what
    to do, where the error's kind alone would say something else."""

    kind: str
    message: str
    error: BaseException | None = None
    fix: str | None = None


def sample_names() -> list[str]:
    return sorted(p.name for p in SAMPLES_DIR.iterdir() if p.suffix.lower().lstrip(".") in IMAGE_TYPES)


def _decode(data: bytes, name: str) -> Decoded:
    """Decoded once per distinct file content, whichever session sends it."""
    key = ("bytes", hashlib.sha256(data).hexdigest())
    return decoded_images().get_or_compute(key, lambda: decoded(load_image(data, name=name)))


def _decode_file(path: Path | str) -> Decoded:
    """A local file (a sample, a batch run's image), decoded again only when it changes on disk."""
    path = Path(path)
    try:
        stat = path.stat()
        key = ("file", str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    except OSError:  # load_image says what is wrong with the path
        return decoded(load_image(path))
    return decoded_images().get_or_compute(key, lambda: decoded(load_image(path)))


@dataclass(frozen=True)
class KeptUpload:
    """One upload as the session keeps it: the file's original bytes (never a decoded image), so that it outlives
    the uploader, whose state Streamlit drops while another source is shown. ``data`` is empty for a file over
    MAX_IMAGE_BYTES: it is refused on its size and never read."""

    file_id: str
    name: str
    size: int
    data: bytes


def _kept(file) -> KeptUpload:
    data = file.getvalue() if file.size <= MAX_IMAGE_BYTES else b""
    return KeptUpload(file.file_id, file.name, file.size, data)


def kept_uploads() -> list[KeptUpload]:
    return st.session_state.get(state.KEPT_UPLOADS, [])


def _uploads_changed() -> None:
    """The user added or removed files in the uploader: the files it showed before give way to those it shows
    now; uploads kept from before it was last drawn (another source was shown in between) stay."""
    shown_before = set(st.session_state.get(state.UPLOADER_IDS, ()))
    files = st.session_state.get(state.UPLOADS) or []
    kept = [entry for entry in kept_uploads() if entry.file_id not in shown_before]
    st.session_state[state.KEPT_UPLOADS] = kept + [_kept(file) for file in files]


def _clear_uploads() -> None:
    """Forget this session's uploads (their bytes go with them)."""
    for key in (state.KEPT_UPLOADS, state.UPLOAD_CHOSEN, state.UPLOAD_PICK):
        st.session_state.pop(key, None)


def _decode_upload(upload: KeptUpload) -> Decoded:
    """An uploaded image, its size checked before anything is decoded: the browser enforces the same limit
    (max_upload_size), this catches whatever reaches the server past it."""
    check_image_size(upload.size, upload.name)
    return _decode(upload.data, upload.name)


@st.cache_data(show_spinner=False)
def _thumbnail(name: str) -> bytes:
    """PNG bytes, cached: st.image would otherwise re-encode the preview on every rerun."""
    image = _decode_file(SAMPLES_DIR / name).image.copy()
    image.thumbnail((240, 240))
    return png(image)


@st.cache_data(show_spinner=False, max_entries=64)
def model_view(model: str, image_hash: str, preprocessing: str, _bundle, _image) -> Image.Image:
    """The exact picture the model sees, cached per (model, image, preprocessing)."""
    return _bundle.model_view(_image, preprocessing)


@st.cache_data(show_spinner=False, max_entries=64)
def _model_view_png(model: str, image_hash: str, preprocessing: str, _bundle, _image) -> bytes:
    return png(model_view(model, image_hash, preprocessing, _bundle, _image))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _pick_image() -> tuple[Decoded, str] | Problem:
    run_image = st.session_state.get(state.RUN_IMAGE)
    sources = SOURCES + ((RUN_SOURCE,) if run_image else ())
    # a default beside a value set through session state (the pending image below) is refused: set it here
    st.session_state.setdefault(state.IMAGE_SOURCE, SOURCES[0])
    source = st.segmented_control("Image", sources, key=state.IMAGE_SOURCE, required=True)
    if source != "Upload":  # the uploader is not drawn: it comes back empty
        st.session_state[state.UPLOADER_IDS] = []
    if source != SOURCES[0]:  # the sample picker is not drawn: its choice waits for the way back
        hold((state.SAMPLE,))
        st.session_state[state.SAMPLE_HELD] = True
    elif st.session_state.pop(state.SAMPLE_HELD, False):
        hold((state.SAMPLE,))  # set again before it is drawn, so the browser shows it (it drew none meanwhile)
    if source == RUN_SOURCE:
        # a local file of a batch run: never published in the URL (a link must not name server paths)
        try:
            image = _decode_file(run_image)
        except SaliencyError as exc:
            return Problem("error", str(exc), exc)
        st.caption(f"From a batch run: `{run_image}`")
        state.publish(image=state.upload_link(Path(run_image).name))  # its name only: whoever opens the link uploads it
        return image, Path(run_image).name
    if source == "Upload":
        files = st.file_uploader("Drop images here", type=IMAGE_TYPES, accept_multiple_files=True, key=state.UPLOADS,
                                 max_upload_size=MAX_IMAGE_MB, on_change=_uploads_changed,
                                 help=f"Several files become a list to pick from. Up to {MAX_IMAGE_MB} MB each.")
        st.session_state[state.UPLOADER_IDS] = [file.file_id for file in files or []]
        uploads = kept_uploads()
        linked = st.session_state.get(state.LINKED_UPLOAD)
        if not uploads and linked and linked != state.CAMERA_IMAGE:
            state.publish(image=state.upload_link(linked))  # the link stays a link to that file
            return Problem("empty", f"This link was made on an uploaded image, **{md_escape(linked)}**: upload it in "
                           "the sidebar to see the same view (a link holds the file's name, never the image).")
        if not uploads:
            return Problem("empty", "Upload an image in the sidebar (drag and drop works), or switch to Samples.")
        st.session_state.pop(state.LINKED_UPLOAD, None)
        names = [upload.name for upload in uploads]
        upload = uploads[0]
        if len(uploads) > 1:
            if st.session_state.get(state.UPLOAD_PICK) not in names:  # the radio's state was dropped with it
                remembered_pick = st.session_state.get(state.UPLOAD_CHOSEN)
                st.session_state[state.UPLOAD_PICK] = remembered_pick if remembered_pick in names else names[0]
            chosen = st.radio("Uploaded images", names, key=state.UPLOAD_PICK)
            upload = uploads[names.index(chosen)] if chosen in names else uploads[0]
        elif not files:  # kept from before: the uploader cannot show it again
            st.caption(f"Uploaded: **{upload.name}**")
        st.session_state[state.UPLOAD_CHOSEN] = upload.name
        state.publish(image=state.upload_link(upload.name))
        st.button("Clear uploads", key=state.CLEAR_UPLOADS, on_click=_clear_uploads, icon=":material/delete:",
                  help="Forget the images uploaded in this session. Files added above join them.")
        try:
            return _decode_upload(upload), upload.name
        except SaliencyError as exc:
            return Problem("error", str(exc), exc)
    if source == "Camera":
        shot = st.camera_input("Take a photo", key=state.CAMERA)
        if shot is None and st.session_state.get(state.LINKED_UPLOAD) == state.CAMERA_IMAGE:
            state.publish(image=state.CAMERA_IMAGE)
            return Problem("empty", "This link was made on a camera photo: take one in the sidebar to see the same "
                           "view (a link never holds the photo).")
        if shot is None:
            return Problem("empty", "Allow the camera and take a photo in the sidebar, or switch to Samples.")
        st.session_state.pop(state.LINKED_UPLOAD, None)
        state.publish(image=state.CAMERA_IMAGE)
        try:
            return _decode(shot.getvalue(), "camera photo"), "camera.jpg"
        except SaliencyError as exc:
            return Problem("error", str(exc), exc)
    st.session_state.pop(state.LINKED_UPLOAD, None)  # the user chose a sample over the linked upload
    if st.session_state.get(state.MODEL) in DIGITS_MODELS:  # the digits models read digits: their own gallery
        digits = {item.name: item for item in digit_gallery()}
        names = list(digits)
        if st.session_state.get(state.SAMPLE) not in names:
            st.session_state[state.SAMPLE] = names[0]
        name = st.selectbox("Sample", names, key=state.SAMPLE,
                            help="Procedural digits for the digits models (explainers.digits), with their ink box.")
        item = digits[name]
        st.image(png(item.image.resize((128, 128), Image.Resampling.NEAREST)), width=128,
                 caption=f"digit {item.label} · ink box {item.box}")
        state.publish(sample=name)
        return decoded(item.image), name
    names = sample_names()
    if st.session_state.get(state.SAMPLE) not in names:
        st.session_state[state.SAMPLE] = names[0]
    name = st.selectbox("Sample", names, key=state.SAMPLE)
    st.image(_thumbnail(name), caption=f"{name} (CC0, see assets/samples)", width="stretch")
    state.publish(sample=name)
    return _decode_file(SAMPLES_DIR / name), name


@st.cache_resource(show_spinner=False)
def digit_gallery() -> list:
    """The digits model's samples: generated once per process, the same for every session (a fixed seed)."""
    return gallery()


def sidebar() -> Selection | Problem:
    """Draw the shared sidebar; return the current selection, or the Problem the page should show."""
    _resend_held_choices()
    pending = user_models.take_pending()
    if pending is not None:
        st.session_state[state.MODEL] = pending
    opened = st.session_state.pop(state.PENDING_IMAGE, None)
    if opened is not None:  # a page asked to show this local file (the Batch page's "Open on Explore")
        st.session_state[state.RUN_IMAGE] = opened
        st.session_state[state.IMAGE_SOURCE] = RUN_SOURCE
    if state.PENDING_PREPROCESSING in st.session_state:
        st.session_state[state.PREPROCESSING] = st.session_state.pop(state.PENDING_PREPROCESSING)
    with st.sidebar:
        picked = _pick_image()
        own = {entry.id: entry.label for entry in user_models.user_models()}
        choices = list(own) + model_choices()
        if st.session_state.get(state.MODEL) not in choices:
            st.session_state[state.MODEL] = DEFAULT_MODEL
        model = st.selectbox(
            "Model", choices, key=state.MODEL,
            format_func=lambda model_id: own.get(model_id) or describe_model(model_id),  # pure: AppTest calls it
            help="efficientnet_lite0 works offline. Zoo models download their ImageNet weights once; the detectors "
            "(fasterrcnn_…, retinanet_…, ssd…) and segmenters (deeplabv3_…, fcn_…, lraspp_…) their COCO weights. "
            "Offline, put the weights file where the error message says. Load your own classifier, detector or "
            "segmenter on the Your model page: it stays in this session only.",
        )
        dense_slot = st.container()
        if st.session_state.get(state.PREPROCESSING) not in PREPROCESSING_LABELS:
            st.session_state[state.PREPROCESSING] = RESIZE
        preprocessing = st.radio(
            "Preprocessing", list(PREPROCESSING_LABELS), format_func=PREPROCESSING_LABELS.get,
            key=state.PREPROCESSING,
            help="Whole image: the heatmap covers everything you uploaded. Centre crop: the model's canonical "
            "evaluation transform.",
        )
        # a session's own model cannot be opened from a link: it exists only in that session
        state.publish(model=None if user_models.is_user_model(model) else model,
                      preprocessing=None if preprocessing == RESIZE else preprocessing)
        view_slot = st.empty()
        reset_button(state.current_page())
    if isinstance(picked, Problem):
        return picked
    found, name = picked
    image, digest = found.image, found.image_hash
    try:
        bundle = get_bundle(model)
    except Exception as exc:  # noqa: BLE001 - shown by the page, in the main area
        return Problem("error", str(exc), exc)
    with view_slot.container():
        if image.info.get("notice"):
            st.info(image.info["notice"], icon=":material/info:")
        st.image(_model_view_png(model, digest, preprocessing, bundle, image),
                 caption=f"What the model sees ({bundle.input_size}×{bundle.input_size})", width=180)
    inputs = bundle.preprocess(image, preprocessing)
    if not isinstance(bundle, DenseBundle):
        return Selection(image, name, digest, model, preprocessing, bundle, inputs, found.size)
    with dense_slot:
        settings = dense_controls(bundle)
    listed = bundle.with_threshold(settings.threshold)  # this session's threshold; the shared bundle unchanged
    try:
        with dense_slot:
            choice = dense_choice(model, digest, preprocessing, listed, inputs, settings)
    except Exception as exc:  # noqa: BLE001 - shown by the page, in the main area; the controls above stay
        return Problem("error", str(exc), exc, fix=dense_fix(listed, exc))
    return Selection(image, name, digest, model, preprocessing, choice.scored, inputs, found.size, dense=listed,
                     prediction=choice.prediction, dense_key=choice.key, dense_settings=settings)


def reset_button(page: str) -> None:
    """The sidebar's "Reset this page's controls", on a page that has controls (``state.PAGE_CONTROLS``)."""
    if page in state.PAGE_CONTROLS:
        st.button("Reset this page's controls", key=state.RESET_PAGE, on_click=state.reset_page, args=(page,),
                  icon=":material/restart_alt:",
                  help="Back to the defaults of this page's settings. The image, your uploads and the model stay.")


# The image sidebar's widgets whose values a page without that sidebar (Text) keeps: not drawn in a run, a widget's
# value is dropped at its end, unless the key holds it as plain session state. The uploader and the camera cannot be
# set (the session keeps the uploads itself, KEPT_UPLOADS); buttons hold no value.
HELD_KEYS = (state.IMAGE_SOURCE, state.SAMPLE, state.MODEL, state.PREPROCESSING, state.UPLOAD_PICK,
             state.DENSE_SCORE, state.DENSE_WITH_IOU, state.DENSE_IOU, state.DENSE_REDUCTION)


def hold(keys) -> None:
    """Keep the values of widgets not drawn in this run: each set again as plain session state, which the widget
    takes up when it is drawn next (Streamlit drops a widget's value at the end of a run that did not draw it)."""
    session = st.session_state
    for key in keys:
        if key in session:
            session[key] = session[key]


def _image_choice_keys() -> list[str]:
    return [k for k in list(st.session_state.keys()) if isinstance(k, str)
            and (k in HELD_KEYS or k.startswith(f"{state.DENSE_REGION_CLASS}."))]


def hold_image_choices() -> None:
    """On a page that does not draw the image sidebar (Text): keep its choices for the image pages. The uploader
    is not drawn, so it shows no file when it comes back: the uploads it showed are the session's kept ones (as
    after another source)."""
    hold(_image_choice_keys())
    st.session_state[state.UPLOADER_IDS] = []
    st.session_state[state.IMAGE_CHOICES_HELD] = True


def _resend_held_choices() -> None:
    """The first run that draws the image sidebar again: its held values are set once more before the widgets
    are drawn, so that the browser, which drew none of them meanwhile, shows them (the image source's buttons
    would otherwise show no choice, although the source is kept)."""
    if st.session_state.pop(state.IMAGE_CHOICES_HELD, False):
        hold(_image_choice_keys())


def dense_fix(bundle: DenseBundle, exc: BaseException) -> str | None:
    """What to do when a dense model's targets cannot be made: nothing found, a lower threshold (where it can list
    more) or another image; a drawn region that covers nothing, Clear; anything else, the error kind's own fix."""
    if not isinstance(exc, TargetError):
        return None
    if bundle.nothing_found() in str(exc):
        return nothing_fix(bundle)
    if st.session_state.get(state.DENSE_REGION) is not None and bundle.kind != DETECTION:
        return "Clear the drawn region in the sidebar."
    return "Change the detection settings in the sidebar, or pick another image."


def require_selection() -> Selection:
    """This run's selection from the shared sidebar. A Problem is shown in the main area, where the user looks,
    and the page stops there: an empty state says what to do, an error says what went wrong and how to fix it."""
    selection = state.current_selection()
    if isinstance(selection, Selection):
        return selection
    if isinstance(selection, Problem) and selection.kind == "error":
        show_error(selection.error if selection.error is not None else SaliencyError(selection.message),
                   fix=selection.fix)
    else:
        message = selection.message if isinstance(selection, Problem) else "Choose an image in the sidebar."
        st.info(message, icon=":material/arrow_back:")
    st.stop()
