"""DeltaDeno's prompt pair: per-category names, and token-level prompt refinement.

The two branches differ only by the anomaly words: "a photo of a {object}" against "a photo of a
{object} with {anomaly}". Per category this module knows the object's name and its real defect
types (the dataset's folder / label names) with a phrase that reads well after "with". A table
entry is used only when it names the dataset's own defect types; otherwise (another dataset read
in the same layout, e.g. Magnetic-tile as ``mvtec_ad/tile``) the prompts come from the dataset's
defect folders, and a user prompt file (``prompt_file``) overrides both.

Token refinement (the paper: "aligns shared content and strengthens anomaly tokens") weights the
anomaly words and gives every token the two prompts share the normal prompt's embedding. With
the default suffix templates ("a photo of a {object}" / "... with {anomaly}") the alignment
changes nothing: CLIP's text encoder is causal, so the shared prefix already has identical
embeddings in both prompts and no shared word follows the anomaly. It acts only for templates
that put shared words after the anomaly phrase (e.g. "a photo of a {anomaly} {object}"); with the
defaults the branches differ by the anomaly tokens (weighted), "with", and the end/padding
tokens, which summarise the whole prompt. The tests pin both cases.

This module is imported by ``anobench list``: torch is imported inside the functions that use it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class CategoryPrompts:
    """The object's name in a prompt and its defect types, each with the phrase used after "with"."""

    object_name: str
    defects: dict[str, str] = field(default_factory=dict)  # defect type (dataset name) -> phrase


def _c(object_name: str, **defects: str) -> CategoryPrompts:
    return CategoryPrompts(object_name, defects)


# Defect type keys are the dataset's own names: MVTec AD / MPDD test folders; VisA's
# image_anno.csv labels with spaces as underscores (as anobench's VisA reader names them).
# VisA's catch-all label "other" describes nothing and is left out.
MVTEC_AD = {
    "bottle": _c("bottle", broken_large="a large broken chip", broken_small="a small broken chip",
                 contamination="contamination"),
    "cable": _c("cable", bent_wire="a bent wire", cable_swap="swapped cables", combined="several defects",
                cut_inner_insulation="a cut inner insulation", cut_outer_insulation="a cut outer insulation",
                missing_cable="a missing cable", missing_wire="a missing wire",
                poke_insulation="a poked insulation"),
    "capsule": _c("capsule", crack="a crack", faulty_imprint="a faulty imprint", poke="a poke hole",
                  scratch="a scratch", squeeze="a squeezed dent"),
    "carpet": _c("carpet", color="a colour stain", cut="a cut", hole="a hole",
                 metal_contamination="metal contamination", thread="a loose thread"),
    "grid": _c("metal grid", bent="a bent wire", broken="a broken wire", glue="glue",
               metal_contamination="metal contamination", thread="a thread"),
    "hazelnut": _c("hazelnut", crack="a crack", cut="a cut", hole="a hole", print="a printed mark"),
    "leather": _c("leather", color="a colour stain", cut="a cut", fold="a fold", glue="a glue spot",
                  poke="a poke hole"),
    "metal_nut": _c("metal nut", bent="a bent edge", color="a colour stain", flip="a flipped side",
                    scratch="a scratch"),
    "pill": _c("pill", color="a colour spot", combined="several defects", contamination="contamination",
               crack="a crack", faulty_imprint="a faulty imprint", pill_type="a wrong pill type",
               scratch="a scratch"),
    "screw": _c("screw", manipulated_front="a manipulated tip", scratch_head="a scratched head",
                scratch_neck="a scratched neck", thread_side="a damaged thread side",
                thread_top="a damaged thread top"),
    "tile": _c("ceramic tile", crack="a crack", glue_strip="a glue strip", gray_stroke="a gray stroke",
               oil="an oil stain", rough="a rough surface"),
    "toothbrush": _c("toothbrush", defective="defective bristles"),
    "transistor": _c("transistor", bent_lead="a bent lead", cut_lead="a cut lead",
                     damaged_case="a damaged case", misplaced="a misplaced position"),
    "wood": _c("wood", color="a colour stain", combined="several defects", hole="a hole",
               liquid="a liquid stain", scratch="a scratch"),
    "zipper": _c("zipper", broken_teeth="broken teeth", combined="several defects",
                 fabric_border="a damaged fabric border", fabric_interior="a damaged fabric interior",
                 rough="rough teeth", split_teeth="split teeth", squeezed_teeth="squeezed teeth"),
}

_PCB = dict(bent="a bent component", melt="a melted component", scratch="a scratch",
            missing="a missing component")
VISA = {
    "candle": _c("candle", chunk_of_wax_missing="a chunk of wax missing",
                 foreign_particals_on_candle="foreign particles", different_colour_spot="a different colour spot",
                 damaged_corner_of_packaging="a damaged corner of packaging",
                 weird_candle_wick="a weird candle wick", extra_wax_in_candle="extra wax",
                 wax_melded_out_of_the_candle="wax melted out of the candle"),
    "capsules": _c("capsules", bubble="a bubble", discolor="discoloration", scratch="a scratch",
                   leak="a leak", misshape="a misshapen capsule"),
    "cashew": _c("cashew", burnt="a burnt spot", corner_or_edge_breakage="a broken corner",
                 different_colour_spot="a different colour spot", middle_breakage="a middle breakage",
                 small_holes="small holes", same_colour_spot="a same colour spot",
                 small_scratches="small scratches", stuck_together="pieces stuck together"),
    "chewinggum": _c("chewing gum", chunk_of_gum_missing="a chunk of gum missing", scratches="scratches",
                     small_cracks="small cracks", corner_missing="a missing corner",
                     similar_colour_spot="a similar colour spot"),
    "fryum": _c("fryum", burnt="a burnt spot", similar_colour_spot="a similar colour spot",
                corner_or_edge_breakage="a broken corner", middle_breakage="a middle breakage",
                small_scratches="small scratches", different_colour_spot="a different colour spot",
                fryum_stuck_together="pieces stuck together"),
    "macaroni1": _c("macaroni", chip_around_edge_and_corner="a chip around the edge",
                    small_scratches="small scratches", small_cracks="small cracks",
                    different_colour_spot="a different colour spot", middle_breakage="a middle breakage",
                    similar_colour_spot="a similar colour spot"),
    "macaroni2": _c("macaroni", breakage_down_the_middle="a breakage down the middle",
                    small_scratches="small scratches",
                    color_spot_similar_to_the_object="a colour spot similar to the object",
                    different_color_spot="a different colour spot",
                    small_chip_around_edge="a small chip around the edge", small_cracks="small cracks"),
    "pcb1": _c("printed circuit board", **_PCB),
    "pcb2": _c("printed circuit board", **_PCB),
    "pcb3": _c("printed circuit board", **_PCB),
    "pcb4": _c("printed circuit board", burnt="a burnt spot", scratch="a scratch", dirt="dirt",
               damage="a damaged component", extra="an extra component", missing="a missing component",
               wrong_place="a misplaced component"),
    "pipe_fryum": _c("pipe fryum", burnt="a burnt spot", corner_and_edge_breakage="a broken corner",
                     different_colour_spot="a different colour spot", middle_breakage="a middle breakage",
                     small_scratches="small scratches", small_cracks="small cracks",
                     similar_colour_spot="a similar colour spot", stuck_together="pieces stuck together"),
}

MPDD = {
    "bracket_black": _c("black metal bracket", hole="a hole", scratches="scratches"),
    "bracket_brown": _c("brown metal bracket", bend_and_parts_mismatch="a bend and mismatched parts",
                        parts_mismatch="mismatched parts"),
    "bracket_white": _c("white metal bracket", defective_painting="defective painting", scratches="scratches"),
    "connector": _c("metal connector", parts_mismatch="mismatched parts"),
    "metal_plate": _c("metal plate", major_rust="major rust", scratches="scratches", total_rust="total rust"),
    "tubes": _c("metal tubes", anomalous="a deformation"),
}

CATEGORIES: dict[str, dict[str, CategoryPrompts]] = {"mvtec_ad": MVTEC_AD, "visa": VISA, "mpdd": MPDD}

# An unknown category gets its own name as the object and these defects.
GENERIC_DEFECTS = {"crack": "a crack", "scratch": "a scratch", "hole": "a hole", "stain": "a stain",
                   "dent": "a dent", "contamination": "contamination"}


def _readable(name: str) -> str:
    return name.replace("_", " ").replace("-", " ").strip().lower()


def _table_entry(dataset: str, category: str, defect_types: Sequence[str]) -> CategoryPrompts | None:
    """The table entry for (dataset, category), then for the category in any table, whose defect
    names cover the dataset's own (all of them, when the dataset's are known)."""
    tables = [CATEGORIES.get(dataset, {})] + [t for name, t in CATEGORIES.items() if name != dataset]
    for table in tables:
        entry = table.get(category)
        if entry is not None and (not defect_types or set(defect_types) <= set(entry.defects)):
            return entry if not defect_types else CategoryPrompts(
                entry.object_name, {name: entry.defects[name] for name in defect_types})
    return None


def category_prompts(dataset: str, category: str, defect_types: Sequence[str] = (),
                     prompt_file: str | None = None) -> CategoryPrompts:
    """Object name and defect phrases for ``category``, keyed by the dataset's own defect types.

    ``defect_types``: the dataset's defect folder names (empty: unknown). Order: the user's
    ``prompt_file``; a table entry naming those defect types; else the category's name as the
    object and the defect folders as phrases (a generic phrase where the name is a generic defect);
    with no defect types known either, the generic defects.
    """
    if prompt_file:
        return load_prompt_file(prompt_file, category)
    entry = _table_entry(dataset, category, defect_types)
    if entry is not None:
        return entry
    defects = {name: GENERIC_DEFECTS.get(name.lower(), _readable(name)) for name in defect_types}
    return CategoryPrompts(_readable(category), defects or dict(GENERIC_DEFECTS))


def load_prompt_file(path: str, category: str) -> CategoryPrompts:
    """A user's prompts: YAML/JSON ``{object: NAME, defects: {type: phrase, ...}}``, or the same
    mapping per category (``{CATEGORY: {object: ..., defects: ...}, ...}``)."""
    from pathlib import Path

    import yaml

    from anobench.errors import AnobenchError

    try:
        data = yaml.safe_load(Path(path).expanduser().read_text())
    except FileNotFoundError:
        raise AnobenchError(f"prompt_file {path}: not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise AnobenchError(f"prompt_file {path}: not YAML/JSON ({exc.__class__.__name__})") from None
    if isinstance(data, dict) and category in data and isinstance(data[category], dict):
        data = data[category]
    if not isinstance(data, dict) or not isinstance(data.get("defects"), dict) or not data["defects"]:
        raise AnobenchError(f"prompt_file {path}: needs 'defects: {{type: phrase, ...}}' (and optionally 'object')")
    defects = {str(k): str(v).strip() for k, v in data["defects"].items()}
    if not all(defects.values()):
        raise AnobenchError(f"prompt_file {path}: every defect needs a non-empty phrase")
    return CategoryPrompts(str(data.get("object") or _readable(category)), defects)


def resolve_anomaly(prompts: CategoryPrompts, anomaly: str) -> tuple[str, str]:
    """(defect type, phrase) for a configured anomaly: a known defect type maps to its phrase,
    anything else is used as the phrase itself (its defect type is the text with underscores)."""
    if anomaly in prompts.defects:
        return anomaly, prompts.defects[anomaly]
    return anomaly.strip().replace(" ", "_"), anomaly.strip()


# ----------------------------------------------------------------------------- token refinement


def token_ids(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` with BOS/EOS, truncated to the encoder's length (not padded)."""
    return tokenizer(text, truncation=True, max_length=tokenizer.model_max_length).input_ids


def anomaly_token_positions(tokenizer, prompt_ids: Sequence[int], phrase: str) -> list[int]:
    """Positions of the anomaly phrase's tokens inside the tokenised anomaly prompt (last match)."""
    phrase_ids = tokenizer(phrase, add_special_tokens=False).input_ids
    n = len(phrase_ids)
    if n == 0:
        raise ValueError(f"anomaly phrase {phrase!r} has no tokens")
    for start in range(len(prompt_ids) - n, -1, -1):
        if list(prompt_ids[start:start + n]) == phrase_ids:
            return list(range(start, start + n))
    raise ValueError(f"anomaly phrase {phrase!r} not found in its prompt (truncated at "
                     f"{tokenizer.model_max_length} tokens?)")


def shared_token_pairs(normal_ids: Sequence[int], anomaly_ids: Sequence[int],
                       anomaly_positions: Sequence[int]) -> list[tuple[int, int]]:
    """(normal position, anomaly position) of every token the two prompts share.

    The prompts are aligned as token sequences (``difflib``), so shared words are found wherever
    the template puts the anomaly (after the object, or before it). Anomaly tokens never pair, and
    neither do the end tokens (the last id of each sequence): they summarise different prompts.
    """
    excluded = set(anomaly_positions)
    matcher = difflib.SequenceMatcher(a=list(normal_ids[:-1]), b=list(anomaly_ids[:-1]), autojunk=False)
    pairs = []
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            if block.b + k not in excluded:
                pairs.append((block.a + k, block.b + k))
    return pairs


@dataclass
class RefinedPrompts:
    """Text conditioning of a batch: one normal embedding, one anomaly embedding per sample."""

    uncond: "torch.Tensor"  # (1, L, D) empty prompt, for classifier-free guidance
    normal: "torch.Tensor"  # (1, L, D)
    anomaly: "torch.Tensor"  # (B, L, D), refined
    anomaly_tokens: "torch.Tensor"  # (B, L) 1.0 at the anomaly tokens' positions


def encode_texts(tokenizer, text_encoder, texts: Sequence[str]) -> "torch.Tensor":
    """Per-token embeddings (last hidden state) of padded prompts, as the SD pipelines compute them."""
    import torch

    ids = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids.to(text_encoder.device))[0]


def refine_prompts(tokenizer, text_encoder, normal_prompt: str, anomaly_prompts: Sequence[str],
                   anomaly_phrases: Sequence[str], token_weight: float, cache: dict | None = None) -> RefinedPrompts:
    """Encode the prompt pair(s) with token-level refinement.

    Every token of an anomaly prompt that is aligned with a token of the normal prompt gets the
    normal prompt's embedding of that token. CLIP's causal encoder already gives the common
    prefix equal embeddings, so this only changes shared words after the anomaly (none with the
    default suffix templates: see the module docstring). The anomaly
    phrase's token embeddings are multiplied by ``token_weight``: larger values push the anomaly
    branch further from the normal one, which strengthens both the delta and the edit.
    Padding and the end token stay as encoded: they summarise the whole anomaly prompt.
    """
    import torch

    cache = {} if cache is None else cache
    wanted = [t for t in dict.fromkeys(["", normal_prompt, *anomaly_prompts]) if t not in cache]
    if wanted:
        for text, emb in zip(wanted, encode_texts(tokenizer, text_encoder, wanted)):
            cache[text] = emb
    normal_ids = token_ids(tokenizer, normal_prompt)
    normal = cache[normal_prompt]
    rows, masks = [], []
    for prompt, phrase in zip(anomaly_prompts, anomaly_phrases):
        ids = token_ids(tokenizer, prompt)
        positions = anomaly_token_positions(tokenizer, ids, phrase)
        emb = cache[prompt].clone()
        for i, j in shared_token_pairs(normal_ids, ids, positions):
            emb[j] = normal[i]
        emb[positions] = emb[positions] * token_weight
        mask = torch.zeros(emb.shape[0], dtype=emb.dtype, device=emb.device)
        mask[positions] = 1.0
        rows.append(emb)
        masks.append(mask)
    return RefinedPrompts(cache[""][None], normal[None], torch.stack(rows), torch.stack(masks))
