"""What to notice: the reading under each table and figure of the notebooks, as Markdown.

Every number in a reading is formatted from the function's arguments: what the notebook has
just computed and writes to ``metrics.json``, and the paper's numbers, which come in through
the table rows (``paper_mIoU``) or through keyword arguments whose defaults are ``paper.py``
and the paper's settings (``dataset.Settings``' defaults). None is typed in here, so a reading
always describes the run above it (``tests/test_readings.py`` checks this). One function per
table or figure; a notebook shows one with ``display(Markdown(readings.table5(table5)))``. Where a
figure is read from arrays, a measuring function beside its reading turns them into those arguments
(``word_shares``, ``look``, ``floors``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..classes import IGNORE_INDEX, ClassVocab
from ..dataset import Settings
from ..masks import resize
from ..metrics import scores
from ..tokens import class_positions, words
from . import paper

PAPER = Settings(vocab="voc")  # the paper's generation settings (Sec. 4): DDPM 100 steps, maps of step 50
LEAD = "**What to notice.** "


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _change(before: float, after: float) -> str:
    return "raises" if after > before else "lowers" if after < before else "leaves"


def _trend(curve: Mapping) -> str:
    """Whether a curve {size: value} ends above where it starts."""
    return "rises" if curve[max(curve)] > curve[min(curve)] else "does not rise"


def _join(*sentences: str) -> str:
    return LEAD + " ".join(s for s in sentences if s)


def _listed(items: Sequence[str]) -> str:
    return ", ".join(items[:-1]) + f" and {items[-1]}" if len(items) > 1 else "".join(items)


def _taken(steps_used: Sequence[Sequence[int]], num_steps: int) -> str:
    """The sampler steps (step index, timestep) that maps come from, in words."""
    (k0, t0), (k1, t1) = steps_used[0], steps_used[-1]
    return (f"step index {k0} of {num_steps} (timestep {t0})" if len(steps_used) == 1 else
            f"the mean of step indices {k0} to {k1} of {num_steps} (timesteps {t0} to {t1})")


def floors(labels: np.ndarray, names: Sequence[str]) -> list[dict]:
    """The trivial floors of a labelled set (ids index ``names``; 255 ignored): pixel accuracy and mIoU of
    answering its most frequent class everywhere, and of drawing each pixel's class from the class shares
    (the class prior, scored by its expected confusion matrix, so no seed is needed)."""
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels != IGNORE_INDEX].ravel(), minlength=len(names)).astype(np.float64)
    top = int(counts.argmax())
    constant = np.zeros((len(names), len(names)))
    constant[:, top] = counts
    rows = {f"all {names[top]}": scores(constant), "class prior": scores(np.outer(counts, counts / counts.sum()))}
    return [{"floor": k, "pixel_acc": v["pixel_acc"], "mIoU": v["miou"]} for k, v in rows.items()]


def floors_of(files: Sequence, names: Sequence[str]) -> list[dict]:
    """``floors`` of a labelled set read item by item ((image, label, ...), each at its own size)."""
    return floors(np.concatenate([item[1].ravel() for item in files]), names)


def _against_floors(floors: Sequence[Mapping], measured: Mapping[str, float], what: str = "mIoU") -> str:
    """A sentence placing a table's ``measured`` {row: value} against the trivial ``floors`` (``floors``)."""
    if not floors:
        return ""
    top = max(floors, key=lambda f: f[what])
    low = [k for k, v in measured.items() if v <= top[what]]
    listed = ", ".join(f"{f['floor']} {f[what]:.3f}" for f in floors)
    return (f"Trivial floors of these validation labels ({what.replace('_acc', ' accuracy')} from the labels "
            f"alone): {listed}; "
            + (f"{_listed(low)} {'scores' if len(low) == 1 else 'score'} no higher than {top['floor']}."
               if low else "every row here lies above them."))


# 00 · the toy world


def world(world: Mapping) -> str:
    """00, the world figure and its statistics: ``world`` = {pixel_share: {class: share},
    image_share: {shape: share}, objects_per_image: {"1": count, ...}}."""
    pixels, images = world["pixel_share"], world["image_share"]
    bg_name, bg = next(iter(pixels.items()))
    shapes = {k: v for k, v in pixels.items() if k != bg_name}
    counts = {int(k): int(v) for k, v in world["objects_per_image"].items()}
    total = sum(counts.values())
    held = " and ".join(f"{n} hold {k}" for k, n in sorted(counts.items()) if n)
    return _join(
        "Each column is one seed drawn in both domains: the same shapes, colours and label map, only the "
        "background and the caption's domain words differ, so whatever goes worse on the target rows is "
        "the domain gap of Table 4.",
        f"Background covers {_pct(bg)} of the pixels; each shape covers {min(shapes.values()):.1%} to "
        f"{max(shapes.values()):.1%} and appears in {_pct(min(images.values()))} to {_pct(max(images.values()))} "
        f"of the images (of {total} images, {held} object{'s' if len(counts) > 1 else ''}).",
        f"So a segmenter that answers background everywhere already scores mIoU {bg / len(pixels):.2f}: "
        "the floor to read every mIoU of these notebooks against.",
        "Where objects overlap, the later one covers the earlier; the label map holds only what is visible.",
    )


def training(training: Mapping) -> str:
    """00, the training figure: the ``training`` record (stages, each with its steps and the step of the
    previous stage's weights it started from; the exported step along them; exported and best held-out mIoU)."""
    stages = training["stages"]
    minutes: dict[str, float] = {}
    for s in stages:
        minutes[s.get("device", "cpu")] = minutes.get(s.get("device", "cpu"), 0.0) + (s.get("wall_minutes") or 0.0)
    spent = ", ".join(f"{m:.1f} minutes on {d}" for d, m in minutes.items())
    kept = [s["init_step"] for s in stages[1:]]  # each later stage starts from the step its predecessor exported
    kept.append(training["exported_step"] - sum(kept))
    ran = sum(s["steps"] for s in stages)
    return _join(
        f"The exported weights have {training['exported_step']} training steps behind them"
        + (f" ({' + '.join(map(str, kept))} along {len(stages)} stages, each starting from the weights the one "
           f"before exported)" if len(stages) > 1 else "")
        + f"; training ran {ran} steps in all ({spent}), the {ran - training['exported_step']} after an exported "
        "point not kept.",
        "Read the right panel, not the left: the loss measures denoising, while the held-out attention mIoU "
        "(class maps of Eq. 4, dense CRF, exact labels) measures what attn2mask uses.",
        f"They score {training['exported_val_miou']:.2f} on the held-out images; the best in the log is "
        f"{training['best_val_miou_in_log']:.2f} at step {training['best_step_in_log']}.",
        f"Adding each class's colour word to its map "
        f"{_change(training['exported_val_miou'], training['exported_val_miou_attributes'])} the exported score to "
        f"{training['exported_val_miou_attributes']:.2f}: an option beyond the paper that notebook 02 measures too.",
    )


# 01 · attention extraction


def word_shares(attn: np.ndarray, prompt: str, tokenizer, label: np.ndarray, vocab: ClassVocab) -> dict:
    """01, Fig. 4 measured on one image: each word's share of its attention mass (the mean map of its tokens,
    Eq. 3, at the size of ``label``) inside each region of ``label`` (the background and each class it shows,
    named by ``vocab``), each region's share of the image, and the class each word names (Eq. 4's positions)."""
    ws = [w for w in words(prompt, tokenizer) if w.start < w.stop <= len(attn)]
    maps = np.stack([np.asarray(attn[w.start:w.stop], dtype=np.float32).mean(0) for w in ws])
    maps = np.clip(resize(maps, label.shape), 0, None)
    mass = np.maximum(maps.sum((1, 2)), 1e-12)
    regions = {vocab.names[c]: label == c for c in np.unique(label)}
    named = {t: c for c, ts in class_positions(prompt, tokenizer, vocab).items() for t in ts}
    return {"prompt": prompt, "area": {k: float(m.mean()) for k, m in regions.items()},
            "words": [{"word": w.text, "names": next((named[t] for t in range(w.start, w.stop) if t in named), None),
                       "shares": {k: float((maps[i] * m).sum() / mass[i]) for k, m in regions.items()}}
                      for i, w in enumerate(ws)]}


def _lit(image: Mapping, background: str) -> dict[str, list[tuple[str, float]]]:
    """Region (the background and each named class the image shows) -> the words whose attention per pixel is
    highest there, with their shares there, largest first."""
    named = {w["names"] for w in image["words"]}
    regions = [k for k in image["area"] if k == background or k in named]
    out: dict[str, list[tuple[str, float]]] = {k: [] for k in regions}
    for w in image["words"]:
        top = max(regions, key=lambda k: w["shares"][k] / image["area"][k])
        out[top].append((w["word"], w["shares"][top]))
    return {k: sorted(v, key=lambda x: -x[1]) for k, v in out.items()}


def _objects_read(shares: Sequence[Mapping], background: str, most: int) -> list[str]:
    """Fig. 4's measured sentences: which words light which object in each image; which words put more of
    their attention on a class word's object than the class word; class words whose object the image lacks;
    the words that lie on the background."""
    rows, ahead, missing, behind = [], [], [], set()
    for image in shares:
        lit, area, prompt = _lit(image, background), image["area"], image["prompt"]
        on = [f"the {k} ({area[k]:.1%} of the image) holds {_listed([f'{x:.1%} of {w!r}' for w, x in ws[:most]])}"
              + (" and less of other words" if len(ws) > most else "")
              for k, ws in lit.items() if k != background and ws]
        rows.append(f"in {prompt!r}, " + (", ".join(on) if on else "no word lights an object"))
        for w in image["words"]:
            if w["names"] is not None and w["names"] not in area:
                missing.append(f"{w['word']!r} in {prompt!r}")
            elif w["names"] is not None:
                c, own = w["names"], w["shares"][w["names"]]
                more = sorted((o for o in image["words"] if o["names"] != c and o["shares"][c] > own),
                              key=lambda o: -o["shares"][c])
                if more:
                    theirs = _listed([f"{o['shares'][c]:.1%}" for o in more])
                    ahead.append(f"on the {c} of {prompt!r}, {_listed([repr(o['word']) for o in more])} "
                                 f"({theirs} against {own:.1%} of {w['word']!r})")
        behind |= {repr(w) for w, _ in lit.get(background, [])}
    return [
        "Measured against the oracle's masks of these images, as the share of each word's attention inside "
        "each object (a word lights the region where its attention per pixel is highest): " + "; ".join(rows) + ".",
        (f"Other words put more of their attention on a class word's object than the class word itself: "
         f"{'; '.join(ahead)}." if ahead else
         "On its own object, every class word holds more of its attention than any other word does."),
        (f"The oracle finds no object for {_listed(missing)}: the image lacks it, so the word's map cannot sit on "
         "it, whatever the attention does." if missing else ""),
        f"Mostly on the background: {_listed(sorted(behind))}." if behind else "",
    ]


def token_maps(steps_used: Sequence[Sequence[int]], num_steps: int, shares: Sequence[Mapping] = (),
               paper_step: int = PAPER.capture_steps[0], paper_num_steps: int = PAPER.num_steps,
               background: str = "background", most: int = 3) -> str:
    """01, Fig. 4: the (step index, timestep) pairs the maps come from, of ``num_steps`` sampler steps, and,
    where the images have object masks, each row's ``word_shares``: which words light which object (at most
    ``most`` named per object), which words outshine a class word on its own object, which class words' objects
    are missing."""
    return _join(
        f"Each map is one word's column of Eq. 3 at {_taken(steps_used, num_steps)}, min-max scaled per map; the "
        f"paper takes step {paper_step} of {paper_num_steps}, the middle of its sampler run.",
        *(_objects_read(shares, background, most) if shares else (
            "With no object masks for these images, judge by eye which object each word's map lights: a class word "
            "should light its own object and nothing else.",)),
    )


def by_step_and_resolution(steps_used: Sequence[Sequence[int]], resolutions: Sequence[Sequence[int]]) -> str:
    """01, the maps by denoising step and by layer resolution: the (step index, timestep) of each
    row of the first figure, and the layer resolutions (h, w) of the second."""
    (k0, t0), (k1, t1) = steps_used[0], steps_used[-1]
    sizes = ", ".join(f"{h}x{w}" for h, w in resolutions)
    return _join(
        f"The image is the same in every row (its noise is fixed by the seed); only the step the maps come "
        f"from changes, from step index {k0} (timestep {t0}, nearly pure noise) to {k1} (timestep {t1}, "
        "nearly the final image).",
        "Look for the step where each class map first sits on its shape: early maps see little image yet, "
        "late ones can drift to edges and texture.",
        f"The second figure splits the maps by layer resolution ({sizes}): finer layers draw outlines, coarser "
        "ones blobs; the kit, like the paper, averages all layers after resizing them to one size.",
        "The measurement below says which timestep and resolution localize best.",
    )


def probe(metrics: Mapping) -> str:
    """01, which timestep and layer resolution localize best: ``probe_miou_by_timestep`` {t: mIoU}
    and ``probe_miou_by_resolution_t500`` {resolution or "all layers": mIoU} of the metrics."""
    by_t = metrics.get("probe_miou_by_timestep")
    if not by_t:
        return _join("This path has no images with exact labels, so nothing is measured here: judge the maps "
                      "above by eye, or run the toy preset to see the measurement.")
    ts = sorted(by_t, key=float)
    best, worst, mid = max(ts, key=by_t.get), min(ts, key=by_t.get), ts[len(ts) // 2]
    by_res = metrics.get("probe_miou_by_resolution_t500", {})
    layers = {k: v for k, v in by_res.items() if k != "all layers"}
    res = ", ".join(f"{k} layers {v:.2f}" for k, v in layers.items())
    every = by_res.get("all layers")
    top = max(layers, key=layers.get) if layers else None
    return _join(
        f"On rendered images with exact labels, one forward pass at timestep t: mIoU runs from "
        f"{by_t[worst]:.2f} (t = {worst}) to {by_t[best]:.2f} (t = {best}); the middle timestep, t = {mid}, "
        f"the counterpart of the paper's middle step, scores {by_t[mid]:.2f}.",
        "Here the image is given, not generated: a small t (little noise) shows the model a nearly clean image, "
        "so the best t here need not be the best step for a generated image, whose maps the paper takes mid-way.",
        (f"By resolution: {res}; all layers together {every:.2f}, "
         f"{'above' if every > layers[top] else 'not above'} the best single resolution ({top})."
         if layers and every is not None else ""),
    )


# 02 · mask building


def typical(per_image: Sequence[float]) -> int:
    """02, the worked example: the index of the image of median score (the upper median; 0 with no scores)."""
    return int(np.argsort(per_image, kind="stable")[len(per_image) // 2]) if len(per_image) else 0


def equations(beta: float, r: float, reliable: float, foreground: Mapping[str, float],
              steps_used: Sequence[Sequence[int]], num_steps: int, example: float | None = None,
              per_image: Sequence[float] = (), paper_step: int = PAPER.capture_steps[0],
              paper_num_steps: int = PAPER.num_steps) -> str:
    """02, the figure of Eqs. 4-6 on one image: beta (Eq. 5), r (Eq. 6), the share of pixels R marks
    reliable, the share of pixels each post-processing labels as an object {method: share}, the sampler
    steps the maps average; ``example``: the image's pseudo-mask mIoU against the oracle, among every
    image's (``per_image``), when there is an oracle."""
    shares = ", ".join(f"{m} {_pct(v)}" for m, v in foreground.items())
    ranked = sorted(per_image)
    median = ranked[len(ranked) // 2] if ranked else None
    maps = f"its maps are {_taken(steps_used, num_steps)}, where the paper takes step {paper_step} of {paper_num_steps}"
    return _join(
        (f"This image is the typical one, not a pick: its pseudo-mask scores {example:.2f} against the oracle, "
         f"{'the median' if example == median else f'beside the median {median:.2f}'} of the {len(ranked)} "
         f"images (from {ranked[0]:.2f} to {ranked[-1]:.2f}); {maps}." if example is not None and ranked else
         f"This is the first image, as no oracle here says how typical it is; {maps}."),
        f"$A_0$ is bright where no class map is (Eq. 5, β = {beta:g}); a larger β darkens it and lets the "
        "objects grow into the background.",
        f"R (Eq. 6, r = {r:g}) marks {_pct(reliable)} of the pixels reliable (yellow): the unreliable ones "
        "(purple) mostly lie around the object boundaries, where neither a class nor the background is confident; "
        "BECO (notebook 06) trusts the label only on the reliable ones.",
        f"The label maps call this much of the image object: {shares}. Argmax compares $A_0$ with the class "
        "maps pixel by pixel, threshold and Otsu cut the strongest class map, and the dense CRF also follows "
        "the image's colour edges.",
    )


def rendered_attention(metrics: Mapping, beta: float, method: str = "dcrf", paper_beta: float = PAPER.beta) -> str:
    """02, attention on rendered images with exact labels, at the probe's ``beta``, labelled by ``method``:
    ``rendered_attention_miou`` (and ``_iou`` per class, ``_attributes``, ``_by_beta``, ``_by_method``)."""
    if "rendered_attention_miou" not in metrics:
        return _join("This path has no images with exact labels, so attention quality is not measured here.")
    iou = {k: v for k, v in metrics["rendered_attention_iou"].items() if v is not None}
    lo, hi = min(iou, key=iou.get), max(iou, key=iou.get)
    by_method = metrics.get("rendered_attention_miou_by_method", {})
    alone = {m: v for m, v in by_method.items() if m != "dcrf"}
    crf = by_method.get("dcrf")
    top = max(alone, key=alone.get) if alone else None
    by_beta = metrics.get("rendered_attention_miou_by_beta", {})
    best_b = max(by_beta, key=by_beta.get) if by_beta else None
    return _join(
        (f"With the true caption, the class-word maps label rendered images ({method}) at mIoU "
         f"{metrics['rendered_attention_miou']:.2f} (β = {beta:g}; from {lo} {iou[lo]:.2f} to {hi} {iou[hi]:.2f}); "
         f"adding each class's colour word "
         f"{_change(metrics['rendered_attention_miou'], metrics['rendered_attention_miou_attributes'])} this to "
         f"{metrics['rendered_attention_miou_attributes']:.2f}."),
        (f"**{'The dense CRF does much of this work' if crf > alone[top] else 'Here the dense CRF does not help'}:** "
         f"the same maps without it score {', '.join(f'{v:.2f} by {m}' for m, v in alone.items())}, so the CRF "
         f"adds {crf - alone[top]:+.2f} over the best of them ({top}). On flat-coloured shapes the CRF snaps labels "
         "to exact colour edges, which photographs do not offer; the attention-only numbers are the fairer "
         "measure of the attention." if top is not None and crf is not None else ""),
        (f"By β: {', '.join(f'{float(b):g}: {v:.2f}' for b, v in by_beta.items())}; β = {float(best_b):g} "
         f"scores best here" + (" as in the paper." if float(best_b) == paper_beta else
                                f", not the paper's {paper_beta:g}: the toy model's maps are wider than Stable "
                                "Diffusion's, and a larger β grows objects into the background.")
         if len(by_beta) > 1 else ""),
    )


def generated_pseudomasks(metrics: Mapping, beta: float) -> str:
    """02, pseudo-masks of generated images scored against the oracle, at the notebook's ``beta``:
    ``generated_pseudomask_miou`` (and ``_where_all_found``, ``_by_beta``, ``_by_method``),
    ``prompt_fidelity``, ``prompt_fidelity_all_classes_found``, ``oracle_rendered_miou``."""
    if "generated_pseudomask_miou" not in metrics:
        return _join("Without an oracle on this path, the pseudo-masks of generated images are not scored "
                     "here: look at them in the figure below.")
    by_method = metrics.get("generated_pseudomask_miou_by_method", {})
    alone = {m: v for m, v in by_method.items() if m != "dcrf"}
    crf = by_method.get("dcrf")
    by_beta = metrics.get("generated_pseudomask_miou_by_beta", {})
    return _join(
        f"The oracle is an instrument, not the truth: it scores {metrics['oracle_rendered_miou']:.2f} on rendered "
        "images, so read differences smaller than its own error with care.",
        f"Against it, pseudo-masks of generated images score {metrics['generated_pseudomask_miou']:.2f} "
        f"(β = {beta:g}), and {metrics['generated_pseudomask_miou_where_all_found']:.2f} on the "
        f"{_pct(metrics['prompt_fidelity_all_classes_found'])} of images where every prompted class appears.",
        f"The model draws exactly the prompted objects in only {_pct(metrics['prompt_fidelity'])} of the images: "
        "a missing or extra object makes a pseudo-mask wrong whatever the attention does.",
        (f"Without the CRF: {', '.join(f'{m} {v:.2f}' for m, v in alone.items())}, against {crf:.2f} with it."
         if alone and crf is not None else ""),
        f"By β: {', '.join(f'{float(b):g}: {v:.2f}' for b, v in by_beta.items())}." if len(by_beta) > 1 else "",
    )


def pseudomask_examples(per_image: Sequence[float] = (), n_images: int = 0) -> str:
    """02, Fig. 5: the per-image mIoU against the oracle of the images shown (toy), or, without an
    oracle, the number of images shown."""
    if not per_image:
        return _join(f"{n_images} generated images and their pseudo-masks; with no oracle here, check by eye "
                      "that each colour of the legend covers its object and nothing else.")
    ranked = sorted(per_image)
    return _join(
        f"Rows are sorted by each image's mIoU against the oracle: from {ranked[-1]:.2f} down to {ranked[0]:.2f}, "
        f"median {ranked[len(ranked) // 2]:.2f} over {len(ranked)} images.",
        "In the bottom rows, tell the two kinds of failure apart: of generation (a missing, duplicated or "
        "misshapen object, which the oracle column shows too) and of attention (the oracle column is right, "
        "the pseudo-mask spills into the background or names the wrong shape).",
    )


# 03-06 · the paper's tables


def table5(rows: Sequence[Mapping], toy: bool = True, floors: Sequence[Mapping] = ()) -> str:
    """03, Table 5: rows with post_processing, pseudo_mask_mIoU (None without an oracle), labelled_share,
    segmenter_mIoU, paper_mIoU; ``toy``: the images are the toy world's; ``floors`` of the validation labels."""
    got = {r["post_processing"]: r for r in rows}
    scored = {k: r for k, r in got.items() if r.get("pseudo_mask_mIoU") is not None}
    ours = {k: r["segmenter_mIoU"] for k, r in got.items() if r.get("paper_mIoU") is not None}
    theirs = {k: got[k]["paper_mIoU"] for k in ours}
    best, paper_best = max(ours, key=ours.get), max(theirs, key=theirs.get)
    crf = [k for k in ours if k.startswith("dcrf")]
    cut = [k for k in ours if not k.startswith("dcrf")]
    gap = max(ours[k] for k in crf) - max(ours[k] for k in cut)
    paper_gap = max(theirs[k] for k in crf) - max(theirs[k] for k in cut)
    masks_best = max(scored, key=lambda k: scored[k]["pseudo_mask_mIoU"]) if scored else None
    seg_best = max(got, key=lambda k: got[k]["segmenter_mIoU"])
    below = sum(r["segmenter_mIoU"] < r["pseudo_mask_mIoU"] for r in scored.values())
    refined = got.get("self-attention refinement")
    return _join(
        f"The paper's best is {paper_best} ({theirs[paper_best]:.3f}); here the best of its variants is {best} "
        f"({ours[best]:.3f}): {'reproduced' if best == paper_best else 'not reproduced'}.",
        f"The best dense CRF minus the best threshold or Otsu: {gap:+.3f} here, {paper_gap:+.3f} in the paper"
        + (": on flat-coloured toy shapes the CRF's colour edges are exact, so it does more of the work than on "
           "photographs." if toy and gap > paper_gap else "."),
        (f"The best pseudo-masks ({masks_best}, "
         f"{got[masks_best]['pseudo_mask_mIoU']:.3f} against the oracle) "
         f"{'also train' if masks_best == seg_best else 'do not train'} the best segmenter ({seg_best}, "
         f"{got[seg_best]['segmenter_mIoU']:.3f}); {below} of {len(scored)} segmenters score below their own labels."
         if masks_best else ""),
        (f"The self-attention refinement (beyond the paper) labels {_pct(refined['labelled_share'])} of the pixels "
         f"and trains a segmenter to {refined['segmenter_mIoU']:.3f}." if refined else ""),
        _against_floors(floors, {k: r["segmenter_mIoU"] for k, r in got.items()}),
    )


def variants(rows: Sequence[Mapping]) -> str:
    """03, the figure of every post-processing on the same images: the Table 5 rows."""
    scored = [r for r in rows if r.get("pseudo_mask_mIoU") is not None]
    best = max(scored, key=lambda r: r["pseudo_mask_mIoU"]) if scored else None
    partial = [r for r in rows if r["labelled_share"] < 1]
    return _join(
        (f"Compare each column with the oracle's: {best['post_processing']} comes closest over the whole set "
         f"(pseudo-mask mIoU {best['pseudo_mask_mIoU']:.3f})." if best else
         "With no oracle for these images, compare the columns by eye against the image."),
        "Thresholds cut every map at one level, so weak objects vanish and strong ones bleed; the dense CRF "
        "follows the shapes' edges.",
        (f"White pixels are ignored: only {', '.join(r['post_processing'] for r in partial)} leaves some "
         f"unlabelled ({', '.join(_pct(1 - r['labelled_share']) for r in partial)})." if partial else ""),
    )


def table6(rows: Sequence[Mapping], toy: bool = True, floors: Sequence[Mapping] = ()) -> str:
    """04, Table 6: rows with method, mIoU, paper_mIoU (and the NTI pseudo-masks' score against truth);
    ``toy``: the "real" images are the toy world's rendered ones; ``floors`` of the validation labels."""
    got = {r["method"]: r for r in rows}
    a2m, train, val = got["attn2mask"], got["NTI on the train set and retraining"], got["NTI on the val set"]
    truth = got.get("NTI pseudo-masks of the train set vs truth")
    beaten = max(train["mIoU"], val["mIoU"]) > a2m["mIoU"]
    return _join(
        f"The paper: neither NTI variant beats attn2mask ({a2m['paper_mIoU']:.3f} against {train['paper_mIoU']:.3f} "
        f"and {val['paper_mIoU']:.3f}); here: attn2mask {a2m['mIoU']:.3f}, NTI on the training set "
        f"{train['mIoU']:.3f}, NTI on the validation set {val['mIoU']:.3f}: "
        f"{'not reproduced' if beaten else 'reproduced'}.",
        (("**This is not a refutation of the paper.**" if beaten else "**Read the agreement with care too.**")
         + " The toy world's \"real\" images are rendered by the same procedure as the toy model's own training "
         "images, so null-text inversion here inverts in-distribution images, which the model can redraw closely"
         + (f" (the pseudo-masks of the inverted training images score {truth['mIoU']:.3f} against the true "
            "labels)." if truth else ".") if toy else
         "These are real photographs, as in the paper, so the comparison is the paper's own"
         + (f"; the pseudo-masks of the inverted training images score {truth['mIoU']:.3f} against their true "
            "labels." if truth else ".")),
        ("The paper's photographs are far from anything Stable Diffusion redraws exactly, so its inverted "
         "attention is noisier; what this notebook shows is the method at work, not the paper's ranking."
         if toy else ""),
        _against_floors(floors, {k: got[k]["mIoU"] for k in ("attn2mask", "NTI on the train set and retraining",
                                                              "NTI on the val set")}),
    )


def nti_examples(reconstruction_mse: Mapping[str, float]) -> str:
    """04, the figure of real images, NTI reconstructions and pseudo-masks: {"ddim": mse, "nti": mse}."""
    ddim, nti = reconstruction_mse["ddim"], reconstruction_mse["nti"]
    return _join(
        f"Plain DDIM inversion reconstructs the images with a mean squared error of {ddim:.4f}; optimising the "
        f"null-text embedding per step brings it to {nti:.4f}.",
        "Compare the reconstruction column with the real one: where they match, the attention of the "
        "regenerated image is the model's attention on that real image, and its pseudo-mask should match "
        "the truth column.",
    )


def look(images: np.ndarray) -> dict[str, float]:
    """05, Fig. 6 measured: two statistics of an image set's look on the 0-255 scale, its mean brightness (luma)
    and its texture, the mean absolute brightness difference between neighbouring pixels (stripes and noise
    raise it)."""
    grey = np.asarray(images, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma
    texture = (np.abs(np.diff(grey, axis=-1)).mean() + np.abs(np.diff(grey, axis=-2)).mean()) / 2
    return {"brightness": float(grey.mean()), "texture": float(texture)}


def _toward(before: float, after: float, target: float) -> str:
    """Whether ``after`` lies closer to ``target`` than ``before`` does, and whether it went past it."""
    if abs(after - target) >= abs(before - target):
        return "no closer to the target"
    return "closer to the target" + (", past it" if (after - target) * (before - target) < 0 else "")


def _survival(prompted: Sequence[tuple[str, Sequence[str]]], found: Mapping[str, Sequence[Mapping[str, int]]]) -> str:
    """Fig. 6's objects: in how many images the oracle finds every prompted class, before and after."""
    kept = {k: [set(classes) <= set(counts) for (_, classes), counts in zip(prompted, found[k], strict=True)]
            for k in ("before", "after")}
    lost = [text for (text, _), b, a in zip(prompted, kept["before"], kept["after"]) if b and not a]
    objects = {k: sum(sum(c.values()) for c in found[k]) for k in ("before", "after")}
    return (f"The oracle finds every prompted class in {sum(kept['before'])} of {len(prompted)} images before "
            f"adaptation and {sum(kept['after'])} after ({objects['before']} objects counted before, "
            f"{objects['after']} after): "
            + (f"{_listed([repr(t) for t in lost])} {'loses its objects' if len(lost) == 1 else 'lose their objects'} "
               "to the adaptation, and a pseudo-mask there labels objects the image no longer shows." if lost else
               "the objects survive the adaptation."))


def before_after(instance_prompt: str, looks: Mapping[str, Mapping[str, float]],
                 prompted: Sequence[tuple[str, Sequence[str]]] = (),
                 found: Mapping[str, Sequence[Mapping[str, int]]] | None = None, toy: bool = True) -> str:
    """05, Fig. 6: images and class maps before and after the domain LoRA trained with ``instance_prompt``;
    ``looks``: ``look`` of the real target images and of the images shown {"target", "before", "after"};
    ``prompted``: each shown prompt's text and the classes it names; ``found``: the oracle's object counts
    (``toy.oracle.object_counts``) of each shown image {"before": [...], "after": [...]}, None without an
    oracle; ``toy``: the toy world's target domain."""
    t, b, a = looks["target"], looks["before"], looks["after"]
    return _join(
        "Before adaptation the model draws "
        + ("the light source-domain backgrounds it was trained on" if toy else
           "in the style of its own training images")
        + f"; with the LoRA (trained on \"{instance_prompt}\") and the domain token in its prompts, it is meant to "
        "draw images like the real target images of the last column.",
        f"Measured on these images: brightness {b['brightness']:.1f} before and {a['brightness']:.1f} after (target "
        f"{t['brightness']:.1f}), {_toward(b['brightness'], a['brightness'], t['brightness'])}; "
        f"texture (neighbouring pixels' difference) {b['texture']:.1f} before and {a['texture']:.1f} after (target "
        f"{t['texture']:.1f}), {_toward(b['texture'], a['texture'], t['texture'])}.",
        (_survival(prompted, found) if found else
         "With no oracle for these images, count by eye whether the objects survive in the after column."),
        "Where an object survives, check that its class map still sits on it: the LoRA should change the style of "
        "the images, not where the model attends.",
    )


def table4(rows: Sequence[Mapping], n_seeds: int, floors: Sequence[Mapping],
           spreads: float = paper.TABLE4_SPREADS) -> str:
    """05, Table 4: rows with method, pixel_acc(_std), mIoU(_std), paper_pixel_acc, paper_mIoU; ``n_seeds``;
    the trivial ``floors`` of the validation labels (``floors``); the verdict of ``paper.table4_verdict``."""
    base, lora = rows[0], rows[1]
    return _join(
        f"mIoU {base['mIoU']:.3f} → {lora['mIoU']:.3f} (paper {base['paper_mIoU']:.3f} → "
        f"{lora['paper_mIoU']:.3f}), "
        f"pixel accuracy {base['pixel_acc']:.3f} → {lora['pixel_acc']:.3f} (paper {base['paper_pixel_acc']:.3f} → "
        f"{lora['paper_pixel_acc']:.3f}), over {n_seeds} seeds.",
        _against_floors(floors, {r["method"]: r["mIoU"] for r in rows}),
        _against_floors(floors, {r["method"]: r["pixel_acc"] for r in rows}, "pixel_acc"),
        f"**Table 4 is {paper.table4_verdict(rows, floors, spreads)}.**",
        f"Pixel accuracy varies by up to {max(base['pixel_acc_std'], lora['pixel_acc_std']):.3f} between seeds: "
        "one seed alone could tell either story.",
    )


def table1(rows: Sequence[Mapping], n_seeds: int, floors: Sequence[Mapping] = ()) -> str:
    """06, Table 1: rows with method, one IoU per class, mIoU, mIoU_std, to_real, paper_mIoU, paper_to_real;
    ``floors`` of the validation labels."""
    r = {row["method"]: row for row in rows}
    real, plain, beco = r["real-supervised"], r["attn2mask"], r["attn2mask+BECO"]
    order = " > ".join(sorted(r, key=lambda k: r[k]["mIoU"], reverse=True))
    paper_order = " > ".join(sorted(r, key=lambda k: r[k]["paper_mIoU"], reverse=True))
    gain, noise = beco["mIoU"] - plain["mIoU"], max(plain["mIoU_std"], beco["mIoU_std"])
    known = {"method", "mIoU", "mIoU_std", "to_real", "paper_mIoU", "paper_to_real"}
    gaps = {k: real[k] - plain[k] for k in real if k not in known and real[k] is not None and plain.get(k) is not None}
    worst = max(gaps, key=gaps.get)
    return _join(
        f"Order here: {order}; in the paper: {paper_order}.",
        f"As a share of the real-data segmenter: attn2mask {plain['to_real']:.2f} and with BECO {beco['to_real']:.2f} "
        f"here, {plain['paper_to_real']:.2f} and {beco['paper_to_real']:.2f} in the paper.",
        f"BECO {'adds' if gain > 0 else 'changes mIoU by'} {gain:+.3f}{' mIoU' if gain > 0 else ''} against a seed "
        f"spread of {noise:.3f} ({n_seeds} seeds): the {'gain' if gain > 0 else 'change'} "
        f"{'exceeds' if abs(gain) > 2 * noise else 'does not exceed'} twice the spread.",
        f"The class attn2mask loses most on is {worst} ({plain[worst]:.3f} against {real[worst]:.3f} with real "
        "labels): look at its pseudo-masks in notebook 02 to see why.",
        _against_floors(floors, {k: v["mIoU"] for k, v in r.items()}),
    )


def table2(rows: Sequence[Mapping], paper_table: Mapping = paper.TABLE2, floors: Sequence[Mapping] = ()) -> str:
    """06, Table 2: rows with method, n_images, mIoU; the paper's Table 2 (mIoU in %) beside them; ``floors``
    of the validation labels."""
    curves = {}
    for row in rows:
        curves.setdefault(row["method"], {})[row["n_images"]] = row["mIoU"]
    plain, beco = curves.get("attn2mask", {}), curves.get("attn2mask+BECO", {})
    both = sorted(set(plain) & set(beco))
    wins = sum(beco[n] > plain[n] for n in both)
    p = paper_table["attn2mask"]
    lo, hi = min(plain), max(plain)
    return _join(
        f"From {lo} to {hi} generated images, attn2mask {_trend(plain)}: {plain[lo]:.3f} to {plain[hi]:.3f}"
        + (f"; with BECO, {beco[min(beco)]:.3f} to {beco[max(beco)]:.3f}." if beco else "."),
        f"The paper's curve, from {min(p):,} to {max(p):,} images, {_trend(p)}: {p[min(p)] / 100:.3f} to "
        f"{p[max(p)] / 100:.3f}: compare the shapes of the two curves, not their sizes.",
        (f"BECO beats plain training at {wins} of {len(both)} sizes; each size is one seed, so differences "
         "smaller than Table 1's seed spread are noise." if both else ""),
        _against_floors(floors, {f"{r['method']} with {r['n_images']} images": r["mIoU"] for r in rows}),
    )


def table3(rows: Sequence[Mapping], paper_table: Mapping = paper.TABLE3, toy: bool = True,
           floors: Sequence[Mapping] = ()) -> str:
    """06, Table 3: rows with method, n_images, mIoU (foreground/background); the paper's Table 3 (in %);
    ``toy``: the images are the toy world's; ``floors`` of the foreground/background validation labels.
    Without a real arm (no ``real-supervised`` rows) only attn2mask is read."""
    curves = {}
    for row in rows:
        curves.setdefault(row["method"], {})[row["n_images"]] = row["mIoU"]
    real, a2m = curves.get("real-supervised"), curves["attn2mask"]
    n = max(set(real or ()) & set(a2m) or set(a2m))
    p_real, p_a2m = paper_table["real-supervised"], paper_table["attn2mask"]
    pn = max(set(p_real) & set(p_a2m))
    if real:
        real[n] = real.get(n, real[max(real)])
        ours = (f"Foreground against background is a much easier task than naming classes: with {n} images "
                f"attn2mask scores {a2m[n]:.3f} against {real[n]:.3f} with real labels ({a2m[n] / real[n]:.0%} of it).")
    else:
        ours = (f"Foreground against background is a much easier task than naming classes: with {n} images "
                f"attn2mask scores {a2m[n]:.3f}; this run has no real arm to compare with.")
    return _join(
        ours,
        f"In the paper, at {pn:,} images: {p_a2m[pn] / 100:.3f} against {p_real[pn] / 100:.3f} "
        f"({p_a2m[pn] / p_real[pn]:.0%})"
        + ("; one flat-coloured object on a smooth background leaves the toy segmenters little to get wrong."
           if toy else "."),
        _against_floors(floors, {f"{r['method']} with {r['n_images']} images": r["mIoU"] for r in rows}),
    )


def training_data(reliable: float, beta: float, r: float, n_images: int,
                  pixel_acc: Mapping[str, float] | None = None) -> str:
    """06, the training-data figure: the share of the pixels of the ``n_images`` generated images shown
    that Eq. 6 marks reliable at ``beta``, ``r``; ``pixel_acc``: {segmenter: pixel accuracy} of the
    seed-0 segmenters of Table 1 on the validation images shown (their labelled pixels)."""
    return _join(
        f"With β = {beta:g} and r = {r:g}, Eq. 6 marks {_pct(reliable)} of the pixels of these {n_images} "
        "generated images reliable (white in the reliability row); the unreliable rest (black) lies mostly "
        "around the objects' boundaries, where neither a class map nor the background is confident.",
        "Plain training trusts every pseudo-label; BECO trusts them only on the reliable pixels and, elsewhere, "
        "asks each of its two networks to agree with the other.",
        (f"On the validation images shown, the segmenters label "
         f"{', '.join(f'{_pct(v)} ({k})' for k, v in pixel_acc.items())} of the pixels right: compare each "
         "prediction row with the truth row above it." if pixel_acc else ""),
    )
