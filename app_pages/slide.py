"""Slide page: metadata, tissue grid preview and prediction maps of one slide."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from app_pages import common as c
from histoviz.viz.colors import CONTINUOUS_COLORMAPS, colorbar_image
from histoviz.viz.dashboard import legend_html, map_spec, meta_table
from histoviz.viz.maps import KIND_LABELS

NONE = "(none)"
SHORT = {"gene": "Gene", "modality": "Target", "cell_type": "Cell type", "grade_proba": "Grade",
         "coattention": "Gene group", "obs": "Value"}


def _pick_slide() -> None:
    """The data-root picker fills the slide path box."""
    pick = st.session_state.get("slide_pick")
    if pick and pick != NONE:
        st.session_state["slide_path"] = pick


with st.sidebar:
    st.subheader("Slide sources")
    data_root = st.text_input(
        "Data root (slides)", value=c.existing_or_empty(c.DEFAULT_SLIDE_ROOT), key="data_root",
        persist_state="session", help="Folder searched (recursively) for slide files.",
    )
    pred_root = st.text_input(
        "Predictions folder", value=c.DEFAULT_OUT, key="pred_root", persist_state="session",
        help="Searched for `<folder>/maps/<slide_id>*.h5ad` and `<folder>/*<slide_id>*.h5ad`.",
    )
    with st.expander("Tiling", expanded=False):
        tile_size = st.number_input("Tile size (px)", 16, 4096, 224, step=16, key="tile_size",
                                    persist_state="session")
        tile_mpp = st.number_input("Tile resolution (um/px)", 0.05, 16.0, 0.5, step=0.25,
                                   key="tile_mpp", persist_state="session")
        min_tissue = st.slider("Minimum tissue fraction", 0.0, 1.0, 0.5, 0.05, key="min_tissue",
                               persist_state="session")

if "slide_path" not in st.session_state:
    st.session_state["slide_path"] = c.DEFAULT_SLIDE
found = c.find_slides(data_root) if data_root else []
top = st.columns([3, 2])
with top[1]:
    if found:
        st.selectbox("Slides under the data root", [NONE, *found], key="slide_pick",
                     on_change=_pick_slide, persist_state="session",
                     help=f"{len(found)} slide file(s) under `{data_root}`; picking one fills the path.")
    elif data_root:
        st.caption(f"No slide files under `{data_root}`.")
with top[0]:
    slide = st.text_input("Slide path", key="slide_path", persist_state="session",
                          bind="query-params").strip()

if not slide:
    st.info("Type the path of a slide (SVS, NDPI, MRXS, TIFF, OME-TIFF, PNG, ...).")
    st.stop()

ov = c.attempt(c.slide_overview, slide, int(tile_size), float(tile_mpp), float(min_tissue))
if ov is None:
    st.stop()

# ---- which prediction file --------------------------------------------------------------------
roots = tuple(dict.fromkeys(r for r in (pred_root, str(Path(slide).parent)) if r))
pred_found = c.find_predictions(ov.slide_id, roots)
row = st.columns([3, 2])
with row[0]:
    pred_choice = st.selectbox(
        "Prediction file", [*pred_found, NONE] if pred_found else [NONE], key=f"pred_choice:{slide}",
        help=f"Files naming {ov.slide_id} under " + ", ".join(f"`{r}`" for r in roots)
        + " (set the predictions folder in the sidebar).",
    )
with row[1]:
    pred_typed = st.text_input("… or a prediction file path (.h5ad)", key="pred_path",
                               bind="query-params").strip()
pred = pred_typed or (pred_choice if pred_choice != NONE else "")

col_meta, col_grid, col_map = st.columns([1, 1, 1.3], gap="medium")
with col_meta:
    st.markdown(f"**{ov.slide_id}**")
    meta = meta_table(ov.meta)
    st.dataframe(meta, hide_index=True, key="meta_table", height=35 * (len(meta) + 1) + 3,
                 column_config={"field": st.column_config.TextColumn(width="small")})
with col_grid:
    st.markdown("**Tissue grid**")
    st.image(ov.preview, caption=ov.caption, width="stretch", output_format="PNG")
    if ov.grid_error:
        st.warning(ov.grid_error)

# ---- the map ------------------------------------------------------------------------------------
with col_map:
    if not pred:
        st.info(
            f"No prediction file for **{ov.slide_id}**. Make one with `histoviz predict --model "
            f"RUN_DIR --slide {slide} --out {c.DEFAULT_OUT}/maps/{ov.slide_id}.h5ad`, or "
            + c.HOW_TO_MAKE_DATA
        )
        st.stop()
    dims = tuple(int(v) for v in ov.meta["dimensions"])
    try:
        c.check_match(pred, ov.slide_id, dims)
        avail, info, n_patches = c.prediction_info(pred)
    except Exception as e:  # bad file, another slide's predictions: say so, keep the page
        st.error(c.message(e))
        st.stop()
    if not avail:
        st.warning(f"{pred}: the file holds no map to show.")
        st.stop()

    kinds = list(avail)
    default_kind = "gene" if "gene" in kinds else kinds[0]
    pick = st.columns(2)
    kind = pick[0].selectbox("Map", kinds, index=kinds.index(default_kind), key="map_kind",
                             format_func=lambda k: KIND_LABELS.get(k, k))
    keys = avail[kind]
    key = None
    if keys != [""]:
        preferred = next((g for g in ("MKI67", "ESR1", "CD3E") if g in keys), keys[0])
        key = pick[1].selectbox(f"{SHORT.get(kind, kind)} ({len(keys)})", keys, help="Type to search.",
                                index=keys.index(preferred), key=f"map_key_{kind}")
    categorical = kind in ("dominant_type", "grade_class")
    image_slot = st.container()
    with st.expander("Display"):
        cmap = None
        if not categorical:
            cmap_choice = st.selectbox("Colormap", ["default", *CONTINUOUS_COLORMAPS], key="map_cmap")
            cmap = None if cmap_choice == "default" else cmap_choice
        opacity = st.slider("Opacity", 0.0, 1.0, 0.6, 0.05, key="map_opacity")

    with image_slot:
        spec = map_spec(kind, key)
        res = c.attempt(c.overlay, slide, pred, spec, float(opacity), cmap)
        if res is None:
            st.stop()
        rgb, minfo = res
        st.image(rgb, width="stretch", output_format="PNG",
                 caption=f"{minfo['label']} · {n_patches} patches · {c.rel(pred)}")
        if "colormap" in minfo:
            lo, hi = minfo["contrast_limits"]
            st.image(colorbar_image(minfo["colormap"], width=256, height=12), width="stretch",
                     output_format="PNG")
            left, right = st.columns(2)
            left.caption(f"{lo:.3g}")
            right.markdown(f"<div style='text-align:right;font-size:0.8em;opacity:0.7'>{hi:.3g}</div>",
                           unsafe_allow_html=True)
        elif minfo.get("categories"):
            st.markdown(legend_html(minfo["categories"]), unsafe_allow_html=True)
        model = str(info.get("model", ""))
        if model.lower().startswith("simulated"):
            st.warning(f"Simulated maps ({model}), not the output of a trained model.")
        elif model:
            st.caption(f"model: {model}")
    with st.expander("Provenance"):
        st.code(json.dumps(info, indent=1, default=str), language="json")
