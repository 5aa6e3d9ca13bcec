"""aff_pairs stage: confident labels at feature resolution and the pair code of every offset."""
from __future__ import annotations

from pipeline.classifier.model import feature_backbone, load_classifier
from pipeline.core.artifacts import Artifact, ArtifactWriter
from pipeline.core.errors import InputError
from pipeline.core.progress import progress
from pipeline.data.index import DatasetIndex
from pipeline.data.label_maps import resize_labels
from pipeline.refine.affinity.pairs import AffPairsConfig, half_disc_offsets, pair_codes, pair_counts
from stages.runner.outputs import write_json
from stages.runner.paths import AFF_PAIRS, AFF_PAIRS_METRICS, CLASSIFIER, CRF_LABELS, DATASET
from stages.runner.spec import StageResult
from stages.runner.stage import Stage

OUTPUT = AFF_PAIRS
METRICS = AFF_PAIRS_METRICS
KIND = "aff_pairs"


def run(stage: Stage) -> StageResult:
    """Reduce confident labels to the AffinityNet feature grid and code each radius pair -> data/aff_pairs.zarr."""
    cfg = stage.section("aff_pairs", AffPairsConfig)
    index = DatasetIndex(DATASET)
    crf = Artifact(CRF_LABELS, "crf_labels")
    # The feature grid is the classifier backbone's: stride from the network itself.
    _, _, stride = feature_backbone(load_classifier(CLASSIFIER)[0], cfg.image_size)
    if cfg.image_size % stride:
        raise InputError(f"aff_pairs.image_size={cfg.image_size} must be a multiple of the backbone stride {stride}")
    grid = (cfg.image_size // stride, cfg.image_size // stride)
    wanted = set(index.ids[i] for i in index.indices([cfg.split]))
    rows = [row for row, image_id in enumerate(crf.ids) if image_id in wanted]
    if not rows:
        raise InputError(f"{CRF_LABELS} has no image of split '{cfg.split}' (aff_pairs.split); check cams.splits includes it")
    offsets = half_disc_offsets(cfg.radius)
    totals = {"negative": 0, "bg_positive": 0, "fg_positive": 0, "ignore": 0}
    attrs = {"grid": list(grid), "stride": stride, "image_size": cfg.image_size, "radius": cfg.radius, "offsets": [list(o) for o in offsets],
             "codes": {"negative": 0, "bg_positive": 1, "fg_positive": 2, "ignore": 255}}
    with ArtifactWriter(OUTPUT, KIND, [crf.ids[r] for r in rows], attrs) as out:
        out.create("labels", grid, "uint8")
        out.create("codes", (len(offsets), *grid), "uint8")
        for k, crf_labels in enumerate(progress(crf.iter_rows("labels", rows), total=len(rows), desc="aff_pairs")):
            labels = resize_labels(crf_labels, grid)
            codes = pair_codes(labels, offsets)
            for kind, count in pair_counts(codes).items():
                totals[kind] += count
            out.write("labels", k, labels)
            out.write("codes", k, codes)
    write_json(METRICS, {"images": len(rows), "pairs": totals})
    stage.say(f"{len(rows)} images on a {grid[0]}x{grid[1]} grid, pairs {totals} -> {OUTPUT}")
    return StageResult(len(rows), "image")
