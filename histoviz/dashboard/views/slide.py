"""Slide page: metadata, tissue grid and prediction maps of one slide (the value under the cursor),
and the napari command that opens the same view."""

from __future__ import annotations

import json

import streamlit as st

from histoviz.dashboard import common as c
from histoviz.viz.colors import CONTINUOUS_COLORMAPS
from histoviz.viz.dashboard import map_spec, meta_table, napari_command
from histoviz.viz.maps import kind_labels
from histoviz.viz.results import is_synthetic_slide, trained_on_synthetic

NONE = "(none)"
SHORT = {"gene": "Gene", "modality": "Target", "cell_type": "Cell type", "grade_proba": "Grade",
         "coattention": "Gene group", "obs": "Value"}


def _pick_slide() -> None:
    """The slide picker fills the slide path box."""
    pick = st.session_state.get("slide_pick")
    if pick and pick != NONE:
        st.session_state["slide_path"] = pick


with st.sidebar, st.expander("Tiling", expanded=False):
    tile_size = st.number_input("Tile size (px)", 16, 4096, 224, step=16, key="tile_size")
    tile_mpp = st.number_input("Tile resolution (um/px)", 0.05, 16.0, 0.5, step=0.25, key="tile_mpp")
    min_tissue = st.slider("Minimum tissue fraction", 0.0, 1.0, 0.5, 0.05, key="min_tissue")

st.title("Slide")
found = [c.rel(p) for p in c.find_slides()]
if "slide_path" not in st.session_state:
    st.session_state["slide_path"] = (c.DEFAULT_SLIDE if (c.root() / c.DEFAULT_SLIDE).is_file()
                                      else found[0] if found else "")
top = st.columns([3, 2])
with top[1]:
    if found:
        st.selectbox("Slides under the results root", [NONE, *found], key="slide_pick", on_change=_pick_slide,
                     help=f"{len(found)} slide file(s); picking one fills the path.")
with top[0]:
    slide_text = st.text_input("Slide path (under the results root)", key="slide_path", bind="query-params").strip()

if not slide_text:
    st.info("No slide under the results root. Type the path of a slide (SVS, NDPI, MRXS, TIFF, OME-TIFF, PNG, ...). "
            + c.HOW_TO_MAKE_DATA)
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

# ---- which prediction file --------------------------------------------------------------------
pred_found = [c.rel(p) for p in c.find_predictions(ov.slide_id)]
row = st.columns([3, 2])
with row[0]:
    pred_choice = st.selectbox("Prediction file", [*pred_found, NONE] if pred_found else [NONE],
                               key=f"pred_choice:{slide_text}",
                               help=f"Files under the results root naming {ov.slide_id}.")
with row[1]:
    pred_typed = st.text_input("… or a prediction file (.h5ad) under the root", key="pred_path",
                               bind="query-params").strip()
pred_text = pred_typed or (pred_choice if pred_choice != NONE else "")

col_meta, col_map = st.columns([1, 2.2], gap="medium")
with col_meta:
    st.markdown(f"**{ov.slide_id}**")
    meta = meta_table(ov.meta)
    st.dataframe(meta, hide_index=True, key="meta_table", height=35 * (len(meta) + 1) + 3,
                 column_config={"field": st.column_config.TextColumn(width="small")})
    st.image(ov.preview, caption=ov.caption, width="stretch", output_format="PNG")
    if ov.grid_error:
        st.warning(ov.grid_error)

with col_map:
    if not pred_text:
        st.info(f"No prediction file for **{ov.slide_id}** under the results root. Make one with "
                f"`histoviz predict --model RUN_DIR --slide {slide_text} --out maps/`, or " + c.HOW_TO_MAKE_DATA)
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
    elif trained_on_synthetic(info) and not is_synthetic_slide(slide):
        st.warning(f"{model or 'This model'} was trained on a synthetic cohort (histoviz synth) and this slide is not "
                   "synthetic: its predictions here say nothing about real tissue.")

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
