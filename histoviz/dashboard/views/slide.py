"""Slide page: metadata, tissue grid and prediction maps of one slide (the value under the cursor),
and the napari command that opens the same view."""

from __future__ import annotations

import json
import os

import streamlit as st

from histoviz.dashboard import common as c
from histoviz.task_kinds import TaskKind
from histoviz.viz.colors import CONTINUOUS_COLORMAPS
from histoviz.viz.dashboard import map_spec, meta_table, napari_command
from histoviz.viz.maps import kind_labels
from histoviz.viz.results import cohort_slides

SHORT = {"gene": "Gene", "modality": "Target", "cell_type": "Cell type", "grade_proba": "Grade",
         "coattention": "Gene group", "obs": "Value"}


OTHER = "(slides in no cohort table)"


def _clear_typed() -> None:
    """Picking a cohort or a slide replaces a typed (or linked) path."""
    st.session_state["slide_path"] = ""
    st.session_state["pred_path"] = ""


with st.sidebar, st.expander("Tiling", expanded=False):
    tile_size = st.number_input("Tile size (px)", 16, 4096, 224, step=16, key="tile_size")
    tile_mpp = st.number_input("Tile resolution (um/px)", 0.05, 16.0, 0.5, step=0.25, key="tile_mpp")
    min_tissue = st.slider("Minimum tissue fraction", 0.0, 1.0, 0.5, 0.05, key="min_tissue")

st.title("Slide")
cohorts, _ = c.cohorts()
in_tables: dict[str, tuple[str, str, str]] = {}  # real slide path -> (cohort key, slide id, patient id)
choices: dict[str, dict[str, str]] = {}  # cohort key -> slide id -> path
names: dict[str, str] = {}
for ct in cohorts:
    key = c.rel(ct.path)
    names[key] = ct.label
    rows = cohort_slides(ct, c.root())
    choices[key] = {}
    for sid, pid, path, ok in zip(rows["slide_id"], rows["patient_id"], rows["path"], rows["under_root"]):
        if ok:
            choices[key][str(sid)] = str(path)
            in_tables[os.path.realpath(path)] = (key, str(sid), str(pid))
loose = {c.rel(p): p for p in c.find_slides()  # slides in no table; a map's overlay image is not a slide
         if os.path.realpath(p) not in in_tables and not os.path.exists(os.path.splitext(p)[0] + ".h5ad")}
if loose:
    choices[OTHER] = {k: v for k, v in loose.items()}
    names[OTHER] = f"{OTHER} ({len(loose)})"
predicted = {k: [sid for sid, path in v.items() if c.predictions_for(path)] for k, v in choices.items()}



def _typed(key: str) -> str:
    """A typed or linked path: the widget's value once it exists, else the URL parameter."""
    v = st.session_state[key] if key in st.session_state else st.query_params.get(key, "")
    return str(v or "").strip()


typed = _typed("slide_path")
# the default cohort: the sidebar's when it has slides with predictions, else the first that has
group = c.current_group()
preferred = [k for k in choices if group is not None and any(x.id == group.key[0] and c.rel(x.path) == k
                                                           for x in cohorts)]
order = preferred + [k for k in choices if predicted.get(k) and k not in preferred] + list(choices)
default_cohort = next((k for k in order if predicted.get(k)), order[0] if order else None)
if typed:  # a linked slide selects its cohort
    hit = c.inside(typed)
    real = os.path.realpath(hit) if hit is not None else ""
    if real in in_tables:
        default_cohort = in_tables[real][0]
        st.session_state["slide_cohort"] = default_cohort
        st.session_state[f"slide_pick:{default_cohort}"] = in_tables[real][1]
if not choices and not typed:
    st.info("No slide under the results root. Type the path of a slide (SVS, NDPI, MRXS, TIFF, OME-TIFF, PNG, ...). "
            + c.HOW_TO_MAKE_DATA)
slide_text = typed
cohort_key = None
if choices:
    keys = list(choices)
    if st.session_state.get("slide_cohort") not in keys:
        st.session_state["slide_cohort"] = default_cohort
    top = st.columns([2, 2])
    cohort_key = top[0].selectbox("Cohort", keys, key="slide_cohort", format_func=lambda k: names.get(k, k),
                                  on_change=_clear_typed,
                                  help="Slides are named by cohort and slide id: two cohorts may both have an S001.")
    sids = list(choices[cohort_key])
    with_pred = set(predicted.get(cohort_key, []))
    pk = f"slide_pick:{cohort_key}"
    if st.session_state.get(pk) not in sids:
        st.session_state[pk] = next((x for x in sids if x in with_pred), sids[0]) if sids else None
    pick = top[1].selectbox(f"Slide ({len(sids)}; {len(with_pred)} with predictions)", sids, key=pk,
                            format_func=lambda x: f"{x} · predicted" if x in with_pred else x, on_change=_clear_typed)
    if not slide_text and pick:
        slide_text = c.rel(choices[cohort_key][pick])
with st.expander("Open another slide or prediction file under the root", expanded=bool(typed)):
    st.text_input("Slide path (under the results root)", key="slide_path", bind="query-params")
    st.text_input("Prediction file (.h5ad) under the root", key="pred_path", bind="query-params")
if not slide_text:
    st.stop()
slide = c.under(slide_text)
if slide is None:
    st.stop()
if not slide.is_file():
    st.error(f"{slide_text}: slide file not found")
    st.stop()
ov = c.attempt(c.slide_overview, slide, int(tile_size), float(tile_mpp), float(min_tissue))
if ov is None:
    st.stop()
where = in_tables.get(os.path.realpath(slide))

# ---- which prediction file: those that recorded this slide file ---------------------------------------
own = c.predictions_for(slide)
options = {c.rel(p): exact for p, exact in own}
pred_typed = _typed("pred_path")
pred_text = ""
if pred_typed:
    pred_text = pred_typed
elif options:
    ordered = sorted(options, key=lambda k: (not options[k], k))
    pred_text = st.selectbox(f"Predictions of this slide ({len(ordered)})", ordered, key=f"pred_choice:{slide_text}",
                             format_func=lambda k: k if options[k] else f"{k} (records no slide file: matched by id)",
                             help="Prediction files under the results root made from this slide file (other "
                                  "cohorts' slides with the same id are not listed).")

col_meta, col_map = st.columns([1, 2.2], gap="medium")
with col_meta:
    st.markdown(f"**{ov.slide_id}**" + (f" · cohort {names[where[0]]} · patient {where[2]}" if where else ""))
    meta = meta_table(ov.meta)
    st.dataframe(meta, hide_index=True, key="meta_table", height=35 * (len(meta) + 1) + 3,
                 column_config={"field": st.column_config.TextColumn(width="small")})
    st.image(ov.preview, caption=ov.caption, width="stretch", output_format="PNG")
    if ov.grid_error:
        st.warning(ov.grid_error)

with col_map:
    if not pred_text:
        st.info(f"No prediction file of this slide under the results root. Make one with "
                f"`histoviz predict --model RUN_DIR --slide {slide_text} --out maps/`"
                + (f"; slides of this cohort with predictions: {', '.join(sorted(with_pred)[:10])}."
                   if choices and with_pred else ", or " + c.HOW_TO_MAKE_DATA))
        st.stop()
    pred = c.under(pred_text)
    if pred is None:
        st.stop()
    dims = tuple(int(v) for v in ov.meta["dimensions"])
    try:
        if not pred.is_file():
            raise FileNotFoundError(f"{pred_text}: prediction file not found")
        c.check_match(pred, ov.slide_id, dims)
        avail, info, n_patches = c.prediction_info(pred)
    except Exception as e:  # bad file, another slide's predictions: say so, keep the page
        st.error(str(e) if isinstance(e, FileNotFoundError) else c.message(e))
        st.stop()
    if not avail:
        st.warning(f"{pred_text}: the file holds no map to show.")
        st.stop()

    model = str(info.get("model", ""))
    if model.lower().startswith("simulated"):
        st.warning(f"Simulated maps ({model}), not the output of a trained model.")
    elif (mismatch := c.synthetic_warning(pred, slide)) is not None:
        st.warning(mismatch[0].upper() + mismatch[1:])

    run_note = c.seen_by_run(info, slide)
    if run_note:
        st.caption(run_note)
    for row in c.slide_level(pred):
        with st.container(border=True):
            if row["kind"] == TaskKind.CLASSIFICATION:
                k = st.columns([1, 2])
                k[0].metric(f"{row['block']}: predicted", str(row.get("predicted", "")))
                if "set" in row:
                    k[1].metric(f"conformal set (1 − α = {1 - row.get('alpha', float('nan')):.2f})",
                                "{" + ", ".join(row["set"]) + "}" if row["set"] else "∅ (empty)",
                                help="Grades the split-conformal procedure cannot rule out for this slide.")
            elif row["kind"] == TaskKind.SURVIVAL:
                k = st.columns([1, 2])
                k[0].metric(f"{row['block']}: risk", f"{row['risk']:.3f}", help="−Σ S over the time bins")
                if "lo" in row and "hi" in row:
                    k[1].metric(f"conformal interval (1 − α = {1 - row.get('alpha', float('nan')):.2f})",
                                f"[{row['lo']:.3f}, {row['hi']:.3f}]")
            st.caption(row["line"])

    labels = kind_labels()
    kinds = list(avail)
    default_kind = "gene" if "gene" in kinds else kinds[0]
    pick = st.columns(2)
    kind = pick[0].selectbox("Map", kinds, index=kinds.index(default_kind), key="map_kind",
                             format_func=lambda k: labels.get(k, k))
    keys = avail[kind]
    key = None
    if keys != [""]:
        preferred = next((g for g in ("MKI67", "ESR1", "CD3E") if g in keys), keys[0])
        key = pick[1].selectbox(f"{SHORT.get(kind, kind)} ({len(keys)})", keys, help="Type to search.",
                                index=keys.index(preferred), key=f"map_key_{kind}")
    with st.expander("Display"):
        cmap_choice = st.selectbox("Colormap", ["default", *CONTINUOUS_COLORMAPS], key="map_cmap")
        cmap = None if cmap_choice == "default" else cmap_choice
        opacity = st.slider("Opacity", 0.0, 1.0, 0.6, 0.05, key="map_opacity")
    spec = c.attempt(map_spec, kind, key)
    if spec is None:
        st.stop()
    res = c.attempt(c.hover_map, slide, pred, spec, float(opacity), cmap)
    if res is None:
        st.stop()
    fig, minfo = res
    st.plotly_chart(fig, key="map_chart", config={"scrollZoom": True})
    unit = f" · unit: {minfo['unit']}" if minfo.get("unit") else ""
    st.caption(f"{minfo['label']} · {n_patches} patches{unit} · {c.rel(pred)}. Hover a patch for its value.")
    if model:
        st.caption(f"model: {model}")
    shell, python = napari_command(slide, pred, spec)
    st.markdown("**Open the same view in napari**")
    st.code(shell, language="bash")
    st.caption(f"opens the slide with its maps; pick “{minfo['label']}” in the Prediction maps panel, or run:")
    st.code(python, language="bash")
    with st.expander("Provenance"):
        st.code(json.dumps(info, indent=1, default=str), language="json")
