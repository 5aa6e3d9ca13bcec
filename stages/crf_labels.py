"""crf_labels stage: confident foreground / background / neutral labels from the seeds by dense CRF."""
from __future__ import annotations

from pathlib import Path

from pipeline.artifacts import Artifact, ArtifactWriter
from pipeline.crf import CRFConfig, confident_labels_many
from pipeline.dataset_index import DatasetIndex
from pipeline.progress import progress_bar
from pipeline.seeds import cam_positions, full_resolution_seeds
from stages.common import PARAMS_OPTION, StageParams, echo
from stages.staging import finish, resuming_note, staging_folder
from stages.paths import CAMS, CRF_LABELS, DATASET

OUTPUT = CRF_LABELS
KIND = "crf_labels"
CHUNK = 64  # images handed to the worker pool at a time, to bound memory


def main(params_file: Path = PARAMS_OPTION) -> tuple[int, str]:
    """Two dense CRFs per image (low and high background alpha) -> data/crf_labels.zarr (0 bg, class, 255 neutral)."""
    params = StageParams(params_file)
    cfg = params.section("crf", CRFConfig)
    index = DatasetIndex(DATASET)
    cams = Artifact(CAMS, "cams")
    positions = cam_positions(index, cams)
    group, _ = params.join(cpu_only=True)
    max_size = tuple(int(v) for v in index.sizes[positions].max(axis=0))
    attrs = {"class_names": index.class_names, "crf": cfg.__dict__, "values": "0 background, k class k, 255 neutral"}
    staging = staging_folder("crf_labels", params, group)
    with ArtifactWriter(OUTPUT, KIND, cams.ids, attrs, params.shard_size(), work=staging and staging / OUTPUT.name, group=group) as out:
        out.create("labels", max_size, "uint8", max_shape=True)
        resuming_note("crf_labels", len(out.done_before), out.shard_count, "shards", group)
        shards = out.my_shards()
        bar = progress_bar(sum(len(out.rows(shard)) for shard in shards), desc="crf_labels")
        # This rank's shards, each in chunks handed to the worker pool (bounded memory).
        for shard in shards:
            shard_rows = out.rows(shard)
            for start in range(shard_rows.start, shard_rows.stop, CHUNK):
                rows = range(start, min(start + CHUNK, shard_rows.stop))
                images = [index.image(positions[row]) for row in rows]
                seeds, labels = zip(*(full_resolution_seeds(cams, row, image.shape[:2]) for row, image in zip(rows, images)))
                for row, label_map in zip(rows, confident_labels_many(images, seeds, labels, cfg, progress=bar.update)):
                    out.write("labels", row, label_map)
        bar.close()
    finish(staging, group, f"crf_labels: {len(positions)} label maps -> {OUTPUT}")
    return len(positions), "image"
