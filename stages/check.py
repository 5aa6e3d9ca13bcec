"""check: validate every section of params.yaml and every file of the dataset, before `dvc repro`.

Each stage still validates its own section when it runs; this command does all of them at
once, in seconds, so a wrong value in `crf:` is found before training rather than after.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.classifier.train import ClassifierConfig
from pipeline.core.artifacts import StorageConfig
from pipeline.core.distributed import DistributedConfig
from pipeline.core.errors import InputError
from pipeline.core.memory import MemoryConfig
from pipeline.core.progress import progress
from pipeline.evaluation.explanations import ExplainEvalConfig
from pipeline.evaluation.pseudo_labels import EvaluateConfig
from pipeline.refine.affinity.pairs import AffPairsConfig
from pipeline.refine.affinity.train import AffinityTrainConfig
from pipeline.refine.confident import CRFConfig
from pipeline.refine.random_walk import RandomWalkConfig
from pipeline.report.config import ReportConfig
from pipeline.seeds.relevance import CamsConfig
from pipeline.segmentation.infer import EvaluateSegConfig
from pipeline.segmentation.train import SegTrainConfig
from pipeline.sources.build_index import DatasetConfig, check_files, open_source, split_membership
from pipeline.sources.synthetic import SyntheticConfig
from stages.runner import params as P
from stages.runner.outputs import echo
from stages.runner.params import PARAMS_OPTION, StageParams
from stages.runner.paths import SYNTHETIC

# Each params.yaml section and the config class its stage validates it against.
SECTIONS: dict[str, type] = {
    "synthetic": SyntheticConfig,
    "dataset": DatasetConfig,
    "train_cls": ClassifierConfig,
    "cams": CamsConfig,
    "crf": CRFConfig,
    "aff_pairs": AffPairsConfig,
    "train_aff": AffinityTrainConfig,
    "random_walk": RandomWalkConfig,
    "evaluate": EvaluateConfig,
    "train_seg": SegTrainConfig,
    "evaluate_seg": EvaluateSegConfig,
    "explain_eval": ExplainEvalConfig,
    "report": ReportConfig,
    "distributed": DistributedConfig,
    "storage": StorageConfig,
    "memory": MemoryConfig,
}
TOP_LEVEL_VALUES = ("device",)


def across_sections(params: StageParams) -> list[str]:
    """What no single section can check: weight files that must exist, sizes that must agree."""
    problems = []
    classifier, segmenter = params.section("train_cls", ClassifierConfig), params.section("train_seg", SegTrainConfig)
    for key, value in (("train_cls.pretrained", classifier.pretrained), ("train_seg.network.weights", segmenter.network.weights)):
        if isinstance(value, str) and value != "classifier" and not Path(value).is_file():
            problems.append(f"{params.source}: {key}: '{value}' is not a file; give a local checkpoint path (nothing is downloaded)")
    cams = params.section("cams", CamsConfig)
    if cams.image_size != classifier.image_size:  # the maps live on the grid the classifier was trained at
        problems.append(f"{params.source}: cams.image_size={cams.image_size} differs from train_cls.image_size={classifier.image_size}; "
                        "set them equal (cams.scales explains at other sizes)")
    if classifier.model == "demo_hybrid":
        stride = 2 ** len(classifier.demo_hybrid.stem_channels) * classifier.demo_hybrid.patch_size
        sizes = [("aff_pairs.image_size", params.section("aff_pairs", AffPairsConfig).image_size)]
        if segmenter.network.backbone == "classifier":
            sizes.append(("train_seg.crop_size", segmenter.crop_size))
        problems += [f"{params.source}: {key}={size} must be a multiple of the classifier's token stride {stride} (train_cls.demo_hybrid)"
                     for key, size in sizes if size % stride]
    return problems


def main(params_file: Path = PARAMS_OPTION) -> None:
    """Check every params.yaml section (types, ranges, unknown keys) and decode every image and mask of the dataset."""
    params = StageParams(params_file)
    problems = []
    for name in sorted(set(params.raw) - set(SECTIONS) - set(TOP_LEVEL_VALUES)):
        problems.append(f"{params.source}: unknown section '{name}' (sections: {', '.join([*TOP_LEVEL_VALUES, *SECTIONS])}); check the spelling")
    for name, cls in SECTIONS.items():
        try:
            params.section(name, cls)
        except InputError as error:
            problems.append(str(error))
    try:
        params.device()
    except InputError as error:
        problems.append(str(error))
    if not problems:
        problems += across_sections(params)
    if problems:
        raise P.ParamsError(f"{len(problems)} problem(s) in {params.source}:\n  " + "\n  ".join(problems))
    echo(f"check: {params.source}: all {len(SECTIONS) + len(TOP_LEVEL_VALUES)} sections valid")
    dataset = params.section("dataset", DatasetConfig)
    if Path(dataset.root) == SYNTHETIC and not SYNTHETIC.exists():
        echo(f"check: {SYNTHETIC} is made by the synthetic stage; the dataset stage decodes and checks its files")
        return
    source = open_source(dataset)
    ids, _ = split_membership(source, dataset)
    records = check_files(source, ids, lambda items: progress(items, total=len(items), desc="check"))
    masks = sum(record.has_mask for record in records)
    echo(f"check: {dataset.root}: {len(records)} images decoded, {masks} masks match their images, no problems")
