"""Session-state keys, the shared selection, and the URL: the one place the dashboard's state is named.

The URL holds stable values only (model id, sample file name, method id, layer name, class indices), never
display labels: a link keeps working when a label changes (e.g. once a zoo model's weights are cached). It is
read once per session, when the session starts, and written at the end of every run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

# Widgets keep their values across page switches (``persist_state=KEEP``): Explore's choices are still there after
# a look at Compare.
KEEP = "session"

# ---- keys of the shared sidebar (drawn once, in app.py, for every page) ------------------------------------
IMAGE_SOURCE = "image_source"
UPLOADS = "uploads"
UPLOAD_PICK = "upload_pick"
# The uploader's own state is dropped while another source is shown: the session keeps its uploads itself.
KEPT_UPLOADS = "_kept_uploads"  # this session's uploads (original bytes only), in upload order
UPLOAD_CHOSEN = "_upload_chosen"  # the name of the upload chosen among several
UPLOADER_IDS = "_uploader_ids"  # the file ids the uploader showed when last drawn
CLEAR_UPLOADS = "clear_uploads"
CAMERA = "camera"
SAMPLE = "sample"
MODEL = "model"
PREPROCESSING = "preprocessing"
LINKED_UPLOAD = "_linked_upload"  # the file name a link was made on (an upload): asked for until one is uploaded
# detection and segmentation models (shown only for them)
DENSE_SCORE = "dense.score_threshold"  # the lowest detection score listed
DENSE_WITH_IOU = "dense.with_iou"  # add the IoU to the box score (pytorch-grad-cam's target)
DENSE_IOU = "dense.iou_threshold"  # a box counts as found again above this IoU
DENSE_REDUCTION = "dense.reduction"  # a region's score: the sum or the mean of its class's logits
DENSE_REGION = "_dense_region"  # the region drawn on the segmentation: ((model, image, preprocessing), box)
DENSE_PLACE = "_dense_place"  # the (model, image, preprocessing) the segmentation on screen was drawn for
DENSE_PICK_DRAWN = "_dense_pick_drawn"  # a region was just drawn: make it the target on this run
DENSE_REGION_CLASS = "dense.region_class"  # prefix: the class a drawn region is scored on (one picker per box)
DENSE_CLEAR_REGION = "dense.clear_region"
DENSE_CHART = "dense_chart"  # Explore's boxes or segmentation figure
DENSE_SHARES = "dense_shares"  # the segmentation's class shares (bars: click one to explain it)

# ---- Explore ------------------------------------------------------------------------------------------------
TARGET_MODE = "target_mode"
TARGET_CLASS = "target_class"
CONTRAST_A = "contrast_a"
CONTRAST_B = "contrast_b"
TARGET_IMAGE = "target_image"  # the image the class choices were preselected for
METHOD = "method"
LAYER = "layer"
LAYER_SCOPE = "layer_scope"
LAYER_SCOPE_LABELS = "_layer_scope_labels"  # the radio's option labels when last drawn (they name the counts)
PREDICTIONS_CHART = "predictions_chart"
CANCELLED_RUN = "cancelled_run"  # the explanation the user cancelled: not computed again until Run
STARTED_RUN = "started_run"  # the explanation the user asked to run after a cancel
CANCEL_BUTTON = "cancel_run"
RUN_AGAIN = "run_again"
HEATMAP_CHART = "heatmap_chart"
VIEW = "view"  # prefix of Explore's view controls
PARAM = "param"  # prefix of method parameter widgets

# ---- Compare -----------------------------------------------------------------------------------------------
COMPARE_METHODS = "compare.methods"
COMPARE_EXTRA_TARGETS = "compare.extra_targets"
COMPARE_EXTRA_SCOPE = "_compare_extra_scope"  # the target scope (Selection.target_scope) the added columns belong to
COMPARE_ADD_TARGET = "compare.add_target"
COMPARE_SCALE = "compare.scale"
COMPARE_DIFFERENCE = "compare.difference"
COMPARE_PANEL_KIND = "compare.panel_kind"
COMPARE_VIEW = "compare.view"
COMPARE_RUN = "compare.run"  # the grid the user asked to run (over the budget, or after a cancel)
COMPARE_CANCELLED = "compare.cancelled"  # the grid the user cancelled
COMPARE_CANCEL = "compare.cancel"
EXPORT_ZIP = "compare.export_zip"
COMPARE_COLUMNS = "compare.columns"  # what the grid's columns are: classes or models
COMPARE_MODELS = "compare.models"  # the models beside the sidebar's, in models mode
COMPARE_MODEL_TARGET = "compare.model_target"  # the target of every model (prefix of one per model, lists differ)
COMPARE_MODEL_DIFFERENCE = "compare.model_difference"
COMPARE_MODEL_AGREEMENT = "compare.model_agreement"
SWEEP_METHOD = "sweep.method"
SWEEP_SCOPE = "sweep.scope"
SWEEP_RUN = "sweep.run"

# ---- Sanity checks, Faithfulness, Inside the gradient, Explore's Trust expander -------------------------------
COMPARE_RUN_BUTTON = "compare.run_button"
FAITH_BOX = "faith.box"
FAITH_BOX_X = "faith.box_x"
FAITH_BOX_Y = "faith.box_y"
FAITH_BOX_CLEAR = "faith.box_clear"  # the button that drops a hand-drawn box (the sliders come back)
FAITH_BOX_FOR = "faith.box_for"  # the image (model, hash, preprocessing) the box sliders were set on
FAITH_DEL = "faith.del"
FAITH_DELETION = "faith.deletion"
FAITH_FRACTION = "faith.fraction"
FAITH_INS = "faith.ins"
FAITH_INSERTION = "faith.insertion"
FAITH_MASK_METHOD = "faith.mask_method"
FAITH_MASK_SUBSTRATE = "faith.mask_substrate"
FAITH_METHODS = "faith.methods"
FAITH_ROAD = "faith.road"
FAITH_ROAD_LERF = "faith.road_lerf"
FAITH_ROAD_MORF = "faith.road_morf"
FAITH_REGION = "faith.region"
FAITH_RUN = "faith.run"
FAITH_SIGN = "faith.sign"
FAITH_STEPS = "faith.steps"
GRADIENT_ACTIVATION = "gradient.activation"
GRADIENT_GRADIENT = "gradient.gradient"
GRADIENT_INPUT = "gradient.input"
GRADIENT_INPUT_GRADIENT = "gradient.input_gradient"
GRADIENT_LAYER = "gradient.layer"
GRADIENT_NUMPY_CHANNEL = "gradient.numpy_channel"
GRADIENT_NUMPY_STEP = "gradient.numpy_step"
GRADIENT_RANGES = "gradient.ranges"
GRADIENT_SCOPE = "gradient.scope"
GRADIENT_TARGET = "gradient.target"
SANITY_CURVES = "sanity.curves"
SANITY_METHODS = "sanity.methods"
SANITY_METRIC = "sanity.metric"
SANITY_RUN = "sanity.run"
SANITY_STEPS = "sanity.steps"
TRUST_RUN = "trust.run"

# ---- figures and downloads ---------------------------------------------------------------------------------
AGREEMENT_SPEARMAN = "agreement_spearman"
AGREEMENT_IOU = "agreement_iou"
DOWNLOAD_PNG = "dl_png"
DOWNLOAD_NPY = "dl_npy"
DOWNLOAD_JSON = "dl_json"
COMPARE_GRID = "grid"

# this session's results of on-demand checks (a progress bar cannot live inside st.cache_*, which replays it)
SANITY_REPORTS = "_sanity_reports"
SANITY_CANCEL = "sanity.cancel"  # the Cancel button drawn while the checks run
SANITY_RUN_BUTTON = "sanity.run_again"  # the Run button offered after a cancel
SANITY_CANCELLED = "_sanity_cancelled"  # the checks (their report key) cancelled last
SANITY_STARTED = "_sanity_started"  # the checks the user pressed Run for
SANITY_MEASURED = "_sanity_measured"  # method name -> its measured verdict on the latest image (Methods cards)
FAITH_CURVES = "_faithfulness_curves"
FAITH_DRAWN = "faith.drawn_box"  # the box drawn by hand on the pointing game's picture, with its image
TRUST_RESULTS = "_trust"

# ---- Your model (the Models page) --------------------------------------------------------------------------------
USER_MODELS = "_user_models"  # this session's own models: never shared, gone with the session
PENDING_MODEL = "_pending_model"  # a model to select before the sidebar's picker is drawn (set, then rerun)
MODELS_FILE = "models.file"
MODELS_ARCH = "models.architecture"
MODELS_LABELS = "models.labels"
MODELS_SIZE = "models.input_size"
MODELS_MEAN = "models.mean"
MODELS_STD = "models.std"
MODELS_CUSTOM = "models.custom_preprocessing"  # the toggle that shows the size, mean and std fields
MODELS_LOAD = "models.load"
MODELS_REMOVE = "models.remove"
MODELS_KEPT_LABELS = "_models_kept_labels"  # the class-names file (name, bytes): the uploader forgets it off-page
MODELS_FORGET_LABELS = "models.forget_labels"
MODELS_MISMATCH = "_models_mismatch"  # the last load's architecture mismatch and its guesses, while it applies
MODELS_USE_GUESS = "models.use_guess"  # prefix: one button per guessed architecture
MODELS_LOAD_NOW = "_models_load_now"  # a guess was picked: load with it on this run

# ---- Batch (a run folder of explainers.batch: its table, galleries and the way to Explore) ---------------------
BATCH_FOLDER = "batch.folder"  # the run folder typed in
BATCH_PENDING_FOLDER = "_batch_pending_folder"  # a folder to open before the text input is drawn (set, then rerun)
BATCH_LAUNCHED = "_batch_launched"  # the folders of the runs this session launched (only it may open them)
BATCH_UPLOADS = "batch.uploads"
BATCH_LABELS = "batch.labels"
BATCH_METHODS = "batch.methods"
BATCH_TARGETS = "batch.targets"
BATCH_LAUNCH = "batch.launch"
BATCH_FILTER = "batch.filter"  # prefix of the table's filters (cleared when another run opens)
BATCH_CLASSES = "batch.filter.classes"
BATCH_CORRECT = "batch.filter.correct"
BATCH_METHOD_FILTER = "batch.filter.methods"
BATCH_TARGET_FILTER = "batch.filter.targets"
BATCH_STATISTIC = "batch.filter.statistic"
BATCH_RANGE = "batch.filter.range"  # prefix: one range slider per statistic
BATCH_TABLE = "batch.table"  # prefix: the table's key ends with a digest of the rows shown
BATCH_MEAN_BY = "batch.mean.by"
BATCH_MEAN_METHOD = "batch.mean.method"
BATCH_MEAN_TARGET = "batch.mean.target"
BATCH_OPEN_EXPLORE = "batch.open_explore"
BATCH_OPENED = "_batch_opened"  # the folder whose filters the widgets hold
BATCH_COMPARE_FOLDER = "batch.compare.folder"  # a second run folder (another model, the same images)
BATCH_COMPARE_METHOD = "batch.compare.method"  # prefix: one picker per pair of runs
BATCH_COMPARE_TARGET = "batch.compare.target"  # prefix: one picker per pair of runs
# a run over texts: its views live under the filters' prefix (another run opened clears them, Reset resets them)
BATCH_WORDS = "batch.filter.words"  # prefix of the word table's controls
BATCH_WORDS_METHOD = "batch.filter.words.method"
BATCH_WORDS_TARGET = "batch.filter.words.target"
BATCH_WORDS_BY = "batch.filter.words.by"  # the class of the rows: predicted or label
BATCH_WORDS_CLASS = "batch.filter.words.class"  # prefix: one picker per "by" (their class lists differ)
BATCH_WORDS_SORT = "batch.filter.words.sort"
BATCH_WORDS_MIN_ROWS = "batch.filter.words.min_rows"
BATCH_WORDS_PICK = "batch.filter.words.pick"  # prefix: the word whose rows are drawn, one picker per word table
BATCH_TEXT_VIEW = "batch.filter.text_view"  # prefix of the drawn rows' view controls (the Text page's widgets)
# ... and its launcher (the "Run on a text file" tab)
BATCH_TEXT_SOURCE = "batch.text.source"  # the uploaded .txt/.csv: an upload, which a reset keeps
BATCH_TEXT_COLUMN = "batch.text.column"  # prefix: one picker per CSV header
BATCH_TEXT_METHODS = "batch.text.methods"
BATCH_TEXT_TARGETS = "batch.text.targets"
BATCH_TEXT_LAUNCH = "batch.text.launch"
# opening a run's image on Explore: the sidebar picks these up before it draws its widgets (set, then switch)
PENDING_IMAGE = "_pending_image"  # a local image file to show as the sidebar's "Batch run" source
PENDING_PREPROCESSING = "_pending_preprocessing"
RUN_IMAGE = "_run_image"  # the local file the "Batch run" source shows

# ---- Text (its own model, text, target and methods; on its page the sidebar holds the image pages' choices) -----
TEXT_PAGE = "text"  # the Text page's script name (``current_page()``): app.py draws the text sidebar there
TEXT_MODEL = "text_model"  # the sidebar's text-model picker (drawn on the Text page only, kept off it)
TEXT_MODELS = "_text_models"  # this session's own text models (uploaded zips): never shared
TEXT_PENDING_MODEL = "_text_pending_model"  # a text model to select before the picker is drawn (set, then rerun)
TEXT_UPLOAD = "text_model_upload"  # prefix of the zipped Hugging Face classifier's uploader (see text_upload_key)
TEXT_UPLOADS_DONE = "_text_uploads_done"  # how many zips this session loaded: a load gives the uploader a new key
TEXT_LOADED_NOTE = "_text_loaded_note"  # said once after a load (the same zip again: picked, not loaded twice)
TEXT_LOAD = "text_model_load"
TEXT_BOX = "text_box"  # the text: like the image, never one of the page's controls (a reset keeps it)
TEXT_EXAMPLE = "text.example"  # the built-in examples' picker (a pick fills the text box)
TEXT_SHOW = "text.show"  # Explain, Compare or Trust: only the one shown computes
TEXT_TARGET_MODE = "text.target_mode"
TEXT_TARGET_CLASS = "text.target_class"
TEXT_CONTRAST_A = "text.contrast_a"
TEXT_CONTRAST_B = "text.contrast_b"
TEXT_TARGET_SCOPE = "_text_target_scope"  # the (model, text) the class choices were preselected for
TEXT_OBJECTIVE = "text.objective"
TEXT_METHODS = "text.methods"
TEXT_PARAM = "text.param"  # prefix of the text methods' parameter widgets
TEXT_VIEW = "text.view"  # prefix of the view controls (sign, colormap, grouping, clip, special tokens)
TEXT_PREDICTIONS = "text_predictions"  # the predictions chart (a click on a bar makes it the target)
TEXT_CANCEL = "text_cancel"
TEXT_RUN = "text_run"
TEXT_CANCELLED = "_text_cancelled"
TEXT_STARTED = "_text_started"
TEXT_DOWNLOAD = "text_dl"  # prefix of the per-map download buttons
TEXT_COMPARE_TARGETS = "text.compare.targets"  # the classes added as columns beside predicted and runner-up
TEXT_COMPARE_SCALE = "text.compare.scale"
TEXT_AGREEMENT = "text_agreement"  # prefix of the agreement figures
TEXT_PANEL = "text_panel"  # prefix of Explain's bordered panels (text_panel_key)
TEXT_CELL = "text_cell"  # prefix of Compare's bordered grid cells (text_cell_key)
TEXT_TRUST_CHECK = "text.trust.check"  # sanity (cascade and random logit) or faithfulness
TEXT_TRUST_REMOVAL = "text.trust.removal"
TEXT_TRUST_STEP = "text.trust.step"  # the cascade step whose maps are drawn
TEXT_TRUST_RUN = "text_trust_run"
TEXT_TRUST_CANCEL = "text_trust_cancel"
TEXT_TRUST_CANCELLED = "_text_trust_cancelled"
TEXT_TRUST_STARTED = "_text_trust_started"
TEXT_TRUST_RESULTS = "_text_trust"  # this session's sanity and faithfulness results (state.remembered)
TEXT_TRUST_CHART = "text_trust_chart"  # prefix of the Trust view's figures (cascade, deletion, insertion)
IMAGE_CHOICES_HELD = "_image_choices_held"  # the last run held the image sidebar's choices (it was not drawn)
SAMPLE_HELD = "_sample_held"  # the last run held the sample picker's choice (another image source was shown)

# ---- the shared selection -------------------------------------------------------------------------------------
SELECTION = "_selection"  # what the shared sidebar chose this run (a Selection or a Problem)

# ---- "Reset this page's controls" (a sidebar button): each page's control keys, named whole or as a prefix
# ("compare" holds every "compare.…" key). Never the image, the uploads, the model, a run folder or a result.
RESET_PAGE = "reset_page"
PAGE_CONTROLS = {
    "explore": (TARGET_MODE, TARGET_CLASS, CONTRAST_A, CONTRAST_B, METHOD, LAYER, LAYER_SCOPE, VIEW, PARAM),
    "compare": ("compare", "sweep"),
    "sanity": ("sanity",),
    "faithfulness": ("faith",),
    "gradient": ("gradient",),
    "batch": ("batch.filter", "batch.mean", BATCH_METHODS, BATCH_TARGETS, BATCH_COMPARE_METHOD, BATCH_COMPARE_TARGET,
              BATCH_TEXT_COLUMN, BATCH_TEXT_METHODS, BATCH_TEXT_TARGETS),
    "models": (MODELS_ARCH, MODELS_CUSTOM, MODELS_SIZE, MODELS_MEAN, MODELS_STD),
    "text": ("text",),  # every "text.…" control; the text, the text model and the uploads stay
}

# ---- internal -------------------------------------------------------------------------------------------------
_URL_READ = "_url_read"
_URL = "_url"


def view_key(prefix: str, name: str) -> str:
    """The key of one view control, e.g. ``view.sign`` or ``compare.view.colormap``."""
    return f"{prefix}.{name}"


def text_upload_key() -> str:
    """The key of the text-model uploader now: a new one after every load, so the loaded zip leaves the uploader
    (a second click on Load finds nothing to load again)."""
    return f"{TEXT_UPLOAD}.{st.session_state.get(TEXT_UPLOADS_DONE, 0)}"


def text_panel_key(method: str) -> str:
    """The container of one method's map under Explain on the Text page."""
    return f"{TEXT_PANEL}_{method}"


def text_cell_key(method: str, column: str) -> str:
    """The container of one cell of the Text page's Compare grid: a method's row, a target's column (the target
    as ``column_id`` spells it: "2", or "2-vs-0" for a contrast)."""
    return f"{TEXT_CELL}_{method}_{column}"


# ---- the URL ------------------------------------------------------------------------------------------------


def _int(text: str) -> int | None:
    return int(text) if text.strip().lstrip("-").isdigit() else None


@dataclass(frozen=True)
class UrlField:
    """A query parameter and the session key it restores: ``parse`` turns the text into the key's value (None:
    ignore the parameter), ``show`` turns the value back into text."""

    param: str
    key: str
    parse: Callable[[str], Any] = str
    show: Callable[[Any], str] = str


# Explore's contrast is one parameter, "contrast=281,282", restoring both sides.
URL_FIELDS = (
    UrlField("sample", SAMPLE),
    UrlField("model", MODEL),
    UrlField("preprocessing", PREPROCESSING),
    UrlField("method", METHOD),
    UrlField("layer", LAYER),
    UrlField("target", TARGET_MODE),
    UrlField("class", TARGET_CLASS, _int),
)
CONTRAST_PARAM = "contrast"
# A link made on an upload (or a camera photo) names the file, never its bytes: "image=upload:cat.jpg". The
# session it opens asks for that file on the Upload source instead of silently showing a sample.
IMAGE_PARAM = "image"
UPLOAD_PREFIX = "upload:"
MAX_LINKED_NAME = 200  # characters of a linked file name kept (a link is text anyone can write)
CAMERA_IMAGE = "camera"


def upload_link(name: str) -> str:
    """The URL value naming an uploaded file (its name only)."""
    return f"{UPLOAD_PREFIX}{name}"


def restore_from_url() -> None:
    """Once per session, before any widget is drawn: seed session state from the query string."""
    if st.session_state.get(_URL_READ):
        return
    st.session_state[_URL_READ] = True
    params = st.query_params
    for field in URL_FIELDS:
        text = params.get(field.param)
        if text:
            value = field.parse(text)
            if value is not None:
                st.session_state[field.key] = value
    image = params.get(IMAGE_PARAM, "")
    if image.startswith(UPLOAD_PREFIX) and image[len(UPLOAD_PREFIX):].strip():
        st.session_state[IMAGE_SOURCE] = "Upload"
        st.session_state[LINKED_UPLOAD] = image[len(UPLOAD_PREFIX):].strip()[:MAX_LINKED_NAME]
    elif image == CAMERA_IMAGE:
        st.session_state[IMAGE_SOURCE] = "Camera"
        st.session_state[LINKED_UPLOAD] = CAMERA_IMAGE
    contrast = params.get(CONTRAST_PARAM, "")
    sides = [_int(part) for part in contrast.split(",")] if contrast else []
    if len(sides) == 2 and None not in sides:
        st.session_state[CONTRAST_A], st.session_state[CONTRAST_B] = sides
        st.session_state.setdefault(TARGET_MODE, "Contrast")


def publish(**values: Any) -> None:
    """Values this run wants in the URL (None drops one); written by :func:`write_url` at the end of the run."""
    url = st.session_state.setdefault(_URL, {})
    for name, value in values.items():
        url[name] = value


def start_run() -> None:
    """At the top of every run: forget the previous run's URL values (a page publishes only its own)."""
    st.session_state[_URL] = {}


def write_url() -> None:
    """Replace the query string with this run's published values, in a stable order."""
    url = {name: str(value) for name, value in st.session_state.get(_URL, {}).items() if value not in (None, "")}
    if dict(st.query_params) != url:
        st.query_params.from_dict(url)


def contrast_text(a: int, b: int) -> str:
    return f"{int(a)},{int(b)}"


# ---- the current page's controls ------------------------------------------------------------------------------


def current_page() -> str:
    """The running page's script name ("explore", "compare", …): what its controls are filed under in
    PAGE_CONTROLS. Empty outside a page (st.navigation has not chosen one)."""
    context = get_script_run_ctx()
    if context is None:
        return ""
    pages = context.pages_manager
    info = pages.get_pages().get(pages.current_page_script_hash) or {}
    return Path(str(info.get("script_path") or "")).stem


def page_control_keys(page: str, keys) -> list[str]:
    """Those of ``keys`` (session-state keys) that are ``page``'s controls (PAGE_CONTROLS)."""
    names = PAGE_CONTROLS.get(page, ())
    return [key for key in keys if isinstance(key, str) and not key.startswith("_")
            and any(key == name or key.startswith(f"{name}.") for name in names)]


def reset_page(page: str) -> None:
    """Back to the defaults of ``page``'s controls: their keys leave session state, so every widget is drawn with
    its default (or the page's own choice, e.g. the top class) on the next run. The image, the uploads and the
    model are no page's controls: they stay."""
    for key in page_control_keys(page, list(st.session_state.keys())):
        del st.session_state[key]


# ---- the shared selection --------------------------------------------------------------------------------------


def set_selection(selection: Any) -> None:
    """What the sidebar chose this run: a Selection, or a Problem to show in the main area."""
    st.session_state[SELECTION] = selection


def current_selection() -> Any:
    return st.session_state.get(SELECTION)


def remembered(store: str, key: Any, compute: Callable[[], Any], keep: int = 4) -> Any:
    """A result kept in this session under ``store``: ``compute()`` once per key, the oldest dropped past ``keep``.

    For on-demand checks whose progress bar cannot live inside st.cache_* (which replays elements)."""
    results = st.session_state.setdefault(store, {})
    if key not in results:
        results[key] = compute()
        while len(results) > keep:
            results.pop(next(iter(results)))
    return results[key]
