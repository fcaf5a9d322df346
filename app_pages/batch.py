"""Batch: a run of explainers.batch over many images or texts — its table, and the views that reveal a spurious cue
(galleries of maps for images; for texts, the words that carry the attribution across the run)."""

from pathlib import Path

import pandas as pd
import streamlit as st

from explainers.batch.access import configured_roots
from explainers.batch.views import ABOVE_CHANCE
from explainers.models import RESIZE
from ui import state
from ui.batch import (
    GALLERY,
    MAX_IMAGES,
    PAIR_SIZE,
    SIDE_BY_SIDE,
    STATISTICS,
    TARGET_CHOICES,
    THUMBNAILS,
    Filters,
    allowed_roots,
    caption,
    chance_levels,
    chance_mark,
    column_config,
    compare_with,
    comparison_summary,
    current_model,
    filter_rows,
    forget_filters,
    heatmap_png,
    launch,
    launched_runs,
    mean_maps,
    method_name,
    mistakes,
    open_on_explore,
    open_run,
    outside_ranking,
    overlay_or_none,
    pair_caption,
    pairs_frame,
    plural,
    row_filters,
    selected_row,
    side,
    statistic_bounds,
    statistics_present,
    summary,
    table_frame,
    table_key,
)
from ui.batch_text import text_launcher, text_run_view
from ui.controls import method_label, offered_methods
from ui.errors import TEXT_FIXES, guard
from ui.method_docs import md_escape
from ui.sidebar import IMAGE_TYPES

st.title("Batch")
st.caption(
    "A whole validation set at once: every image × method × target of a batch run, with where each map's mass "
    "lies. Rank the maps that sit on the border or outside the object, look at the confident mistakes and at each "
    "class's mean map: a model that reads a watermark, a background or a frame shows it here first. A run over "
    "texts shows each row as coloured text and the words that carry the attribution across the run: a name or a "
    "topic the model leans on heads the word table."
)

if state.BATCH_PENDING_FOLDER in st.session_state:  # a run just made below: open it (before the input is drawn)
    st.session_state[state.BATCH_FOLDER] = st.session_state.pop(state.BATCH_PENDING_FOLDER)

folder_tab, upload_tab, text_tab = st.tabs(["Open a run folder", "Run on uploaded images", "Run on a text file"])
with folder_tab:
    folder = st.text_input(
        "Run folder", key=state.BATCH_FOLDER, placeholder="runs/val-gradcam", persist_state=state.KEEP,
        help="The --out folder of `python -m explainers batch SOURCE --out DIR`: it holds manifest.json, table/ and "
        "maps/. A folder of class sub-folders as SOURCE gives every image its label. Only folders inside the "
        "server's batch folders ([batch] roots in saliency.toml) open here, and the runs you launched on this page.",
    )
    with guard():
        st.caption("Batch folders on this server: " + ", ".join(f"`{md_escape(r)}`" for r in configured_roots())
                   + (" · your runs from uploads in this session: " + ", ".join(f"`{md_escape(r)}/run`"
                                                                               for r in launched_runs())
                      if launched_runs() else ""))
with upload_tab, guard():
    model, bundle = current_model()
    st.caption(f"Model: **{model}** (the sidebar's). At most {MAX_IMAGES} images; they are written to a temporary "
               "folder on the server, and the run is opened here when it is done.")
    files = st.file_uploader("Images", type=IMAGE_TYPES, accept_multiple_files=True, key=state.BATCH_UPLOADS)
    labels = st.file_uploader("Labels (optional)", type=["csv"], key=state.BATCH_LABELS,
                              help="A CSV with columns path (the file name), label (class index or name) and "
                              "optionally x0, y0, x1, y1 (the object's box in pixels): then correctness and the "
                              "box's mass are known.")
    left, right = st.columns(2)
    names = offered_methods(bundle)
    st.session_state.setdefault(state.BATCH_METHODS, [m for m in ("gradcam",) if m in names] or names[:1])
    run_methods = left.multiselect("Methods", names, key=state.BATCH_METHODS, format_func=method_label,
                                   help="Computed together, with their default parameters.")
    run_targets = right.multiselect("Targets", [*TARGET_CHOICES, "label"] if labels is not None else TARGET_CHOICES,
                                default=["top1"], key=state.BATCH_TARGETS)
    if st.button("Run", key=state.BATCH_LAUNCH, type="primary", disabled=not files):
        bar = st.progress(0.0, text="Explaining…")
        out = launch(files, labels, run_methods, run_targets, model, bundle,
                     st.session_state.get(state.PREPROCESSING, RESIZE),
                     progress=lambda done, total: bar.progress(done / total, text=f"{done} of {total} images"))
        st.session_state[state.BATCH_PENDING_FOLDER] = out
        st.rerun()

with text_tab, guard(TEXT_FIXES):
    text_launcher()

if not folder.strip():
    st.info("Type a run folder, or run a small batch on uploaded images or a text file.",
            icon=":material/folder_open:")
    st.stop()

with guard():
    run = open_run(folder, allowed_roots())
    if st.session_state.get(state.BATCH_OPENED) != run.out:
        forget_filters()
        st.session_state[state.BATCH_OPENED] = run.out
    about = summary(run)
    accuracy = "no labels" if about["accuracy"] is None else f"accuracy **{about['accuracy']:.1%}**"
    if run.is_text:
        text_run_view(run, about, accuracy)
        st.stop()
    # one line, not four metrics: at 900 px columns stack, and four big numbers would fill the screen
    st.markdown(f"{plural(about['images'], 'image')} · {plural(about['rows'], 'row')} (image × method × target) · "
                f"{plural(about['errors'], 'error')} ({plural(about['unreadable images'], 'unreadable image')}) · "
                f"{accuracy}")
    # the manifest is data from the run folder: escaped, never markdown of its own
    plain = {name: md_escape(value) for name, value in about.items()}
    st.caption(f"Model **{plain['model']}** · methods {plain['methods']} · targets {plain['targets']} · seed "
               f"{plain['seed']} · {plain['preprocessing']} · {plain['engine']} engine · {plain['created']}")
    if len(run.errors):
        with st.expander(f"Errors ({len(run.errors)})"):
            st.dataframe(run.errors[["path", "method", "target", "error"]], hide_index=True)
    if not len(run.rows):
        st.warning("This run has no explained rows yet.")
        st.stop()

    st.subheader("Rows")
    rows = run.rows
    filters, classes, correctness, methods, targets = row_filters(run, rows, sorted(rows["method"].unique()),
                                                                  sorted(rows["target"].unique()))
    left, right = filters.columns([1, 3])
    present = statistics_present(rows)
    statistic, chosen = None, (None, None)
    if present:  # all-zero maps have no statistics
        statistic = left.selectbox("Statistic", present, key=state.BATCH_STATISTIC, format_func=STATISTICS.get)
        low, high = statistic_bounds(rows, statistic)
        chosen = right.slider(f"{STATISTICS[statistic]} between", low, high, (low, high), step=0.01,
                              key=state.view_key(state.BATCH_RANGE, statistic))
    shown = filter_rows(rows, Filters(classes, correctness, methods, targets, statistic, *chosen))
    frame = table_frame(run, shown)
    event = st.dataframe(frame, column_config=column_config(frame), hide_index=True, on_select="rerun",
                         selection_mode="single-row", key=table_key(shown), row_height=70)
    st.caption(f"{len(shown)} of {len(rows)} rows" + (f"; thumbnails for the first {THUMBNAILS}"
                                                      if len(shown) > THUMBNAILS else "")
               + ". Sort by a column's header; select a row to see it larger and open it on Explore.")
    row = selected_row(event, shown)
    if row is not None:
        picture, details = st.columns([1, 2])
        image = overlay_or_none(run, row, 224)
        if image is not None:
            picture.image(image, caption=caption(row))
        label = row["label_name"] if pd.notna(row["label_name"]) else "—"
        details.markdown(
            f"**{md_escape(Path(str(row['path'])).name)}** · label {md_escape(label)} · predicted "
            f"{md_escape(row['prediction_name'])} ({float(row['probability']):.1%}) · "
            f"{md_escape(method_name(row['method']))} for {md_escape(row['target_name'])}"
        )
        details.caption(" · ".join(f"{STATISTICS[s]} {row[s]:.3f}" for s in statistics_present(run.rows)
                                   if s != "probability"))
        if details.button("Open on Explore", key=state.BATCH_OPEN_EXPLORE, type="primary",
                          help="The same image, model, method and target on Explore"):
            open_on_explore(run, row)

    outside_tab, mistakes_tab, mean_tab, other_tab = st.tabs(["Mass outside the object", "Confident mistakes",
                                                              "Mean map per class", "Another model's run"])
    with outside_tab:
        ranked, where, score = outside_ranking(run, shown)
        top = ranked.head(GALLERY)
        chance = chance_levels(run, top)
        level = ("the share of the image outside the row's box (each picture says it)" if run.has_boxes
                 else f"{chance.median():.0%} of its mass on the border, the border's share of the area"
                 if len(chance) else "the border's share of the area")
        st.caption(f"The {GALLERY} maps with the largest share of their mass {where}"
                   + (" (1 − box mass)" if run.has_boxes else " (the outer eighth of each side; give the run boxes, "
                      "x0, y0, x1, y1 in its list, to rank by the mass outside the object)")
                   + f". Chance level: a map spread evenly over the image scores {level}. ⚠ marks a map at least "
                   f"{ABOVE_CHANCE:.0%} of the way from chance to all of its mass {where}: a cue there is worth a "
                   "look. A map at or below chance shows no such cue, however high it ranks.")
        pictures = [(overlay_or_none(run, r), caption(r, f"{score.loc[i]:.0%} {where} · "
                                                      f"{chance_mark(score.loc[i], chance.loc[i])}"))
                    for i, r in top.iterrows()]
        pictures = [p for p in pictures if p[0] is not None]
        if pictures:
            st.image([p[0] for p in pictures], caption=[p[1] for p in pictures], width=150)
        elif top.empty:
            st.info("No rows to rank under these filters.")
        else:
            st.info("None of these rows can be shown: the table's problem column says why for each.")
    with mistakes_tab:
        if not run.has_labels:
            st.info("The run has no labels: run it on a folder of class sub-folders, or with a labels list.")
        for most, title in ((True, "Most confident mistakes"), (False, "Least confident mistakes")):
            wrong = mistakes(shown, most).head(GALLERY)
            st.markdown(f"**{title}**")
            pictures = [(overlay_or_none(run, r), caption(r, f"{r['prediction_name']} at {r['probability']:.0%}, "
                                                          f"label {r['label_name']}")) for _, r in wrong.iterrows()]
            pictures = [p for p in pictures if p[0] is not None]
            if pictures:
                st.image([p[0] for p in pictures], caption=[p[1] for p in pictures], width=150)
            elif run.has_labels:
                st.caption("No mistakes under these filters.")
    with mean_tab:
        left, middle, right = st.columns(3)
        by = left.radio("Class of", ["label_name", "prediction_name"], key=state.BATCH_MEAN_BY, horizontal=True,
                        index=0 if run.has_labels else 1, format_func=lambda c: c.split("_")[0])
        method = middle.selectbox("Method", sorted(shown["method"].unique()), key=state.BATCH_MEAN_METHOD,
                                  format_func=method_name)
        target = right.selectbox("Target", sorted(shown["target"].unique()), key=state.BATCH_MEAN_TARGET)
        unreadable: list[str] = []
        means = mean_maps(run, shown.loc[(shown["method"] == method) & (shown["target"] == target)], by, unreadable)
        st.caption("Each map as |map| scaled to sum 1 (where its mass lies), resized to a common size and "
                   "averaged over the class's rows: a cue shared by a class, e.g. a corner, stands out.")
        if means:
            st.image([heatmap_png(values) for _, _, values in means],
                     caption=[md_escape(f"{name} · {plural(count, 'image')}") for name, count, _ in means],
                     width=150)
        if unreadable:
            st.warning(f"{plural(len(unreadable), 'map file')} of this run could not be read and are left out:",
                       icon=":material/warning:")
            st.text("\n".join(unreadable[:20]))
        else:
            st.info("No rows with this method and target under these filters.")
    with other_tab:
        st.caption("The same images explained by another model (a fine-tuned, pruned or shuffled-label twin): open "
                   "its run folder to pair the two runs' maps by image, method and target, and see where they "
                   "disagree most (whole runs: the filters above do not apply). The same folders as above open here.")
        second = st.text_input("Other run folder", key=state.BATCH_COMPARE_FOLDER, persist_state=state.KEEP,
                               placeholder="runs/val-gradcam-finetuned",
                               help="The --out folder of a `python -m explainers batch` run of another model on "
                               "the same images. Rows are matched by image content, so the two runs may read the "
                               "images from different folders.")
        if not second.strip():
            st.info("Type the run folder of another model to compare.", icon=":material/compare:")
        else:
            with guard():  # a bad second folder is said here; the rest of the page stays
                other = open_run(second, allowed_roots())
                if other.out == run.out:
                    st.warning("That is this run: open the run of another model.", icon=":material/warning:")
                else:
                    comparison = compare_with(run, other)
                    st.markdown(f"This run: model **{md_escape(run.model)}** · other run: model "
                                f"**{md_escape(other.model)}**")
                    for line in comparison_summary(comparison, run, other):
                        st.caption(line)
                    if comparison.pairs.empty:
                        st.info("No image is explained with the same method and target in both runs.")
                    else:
                        left, right = st.columns(2)
                        method = left.selectbox("Method", sorted(comparison.pairs["method"].unique()),
                                                format_func=method_name,
                                                key=state.view_key(state.BATCH_COMPARE_METHOD, other.out))
                        of_method = comparison.pairs.loc[comparison.pairs["method"] == method]
                        target = right.selectbox("Target", sorted(of_method["target"].unique(), key=str),
                                                 key=state.view_key(state.BATCH_COMPARE_TARGET, other.out),
                                                 help="top1 is each model's own top class: the maps may be of "
                                                 "different classes, as the table says.")
                        pairs = of_method.loc[of_method["target"] == target]
                        st.markdown(f"**Where the maps disagree most** · median Spearman "
                                    f"{pairs['spearman'].median():.2f}, median top-10% IoU "
                                    f"{pairs['top_iou'].median():.2f} over {plural(len(pairs), 'image')}")
                        st.dataframe(pairs_frame(pairs), hide_index=True,
                                     column_config={"Spearman": st.column_config.NumberColumn(format="%.2f"),
                                                    "top-10% IoU": st.column_config.NumberColumn(format="%.2f")})
                        st.caption("Lowest agreement first: Spearman's rank correlation of the two |maps| (1: the same "
                                   "order of pixels, 0: unrelated), then the overlap of their 10% most salient cells. "
                                   "Maps of different sizes are resized to the larger one first. Below, the first "
                                   f"{SIDE_BY_SIDE} side by side: this run's map, then the other's.")
                        for number, (_, pair) in enumerate(pairs.head(SIDE_BY_SIDE).iterrows(), start=1):
                            if number % 3 == 1:  # three pairs a row, a row at a time: stacked, they stay in order
                                grid = st.columns(3)
                            cell = grid[(number - 1) % 3]
                            pictures = [(overlay_or_none(run, side(pair, "_a")), pair_caption(run, pair, "_a")),
                                        (overlay_or_none(other, side(pair, "_b")), pair_caption(other, pair, "_b"))]
                            cell.markdown(f"**{number}.** Spearman **{pair['spearman']:.2f}** · top-10% IoU "
                                          f"{pair['top_iou']:.2f}")
                            shown_pictures = [p for p in pictures if p[0] is not None]
                            if shown_pictures:
                                cell.image([p[0] for p in shown_pictures], caption=[p[1] for p in shown_pictures],
                                           width=PAIR_SIZE)
                            if len(shown_pictures) < 2:
                                cell.caption("A picture is missing: its image is gone or outside the allowed "
                                             "folders.")
