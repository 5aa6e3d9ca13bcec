"""check: validate every section of params.yaml and every file of the dataset, before `dvc repro`.

Each stage still validates its own section when it runs; this command does all of them at
once, in seconds, so a wrong value in `crf:` is found before training rather than after.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.affinity.pairs import AffPairsConfig
from pipeline.affinity.train import AffinityTrainConfig
from pipeline.artifacts import StorageConfig
from pipeline.cams import CamsConfig
from pipeline.classifier import ClassifierConfig
from pipeline.crf import CRFConfig
from pipeline.distributed import DistributedConfig
from pipeline.memory import MemoryConfig
from pipeline.indexing import DatasetConfig, check_files, open_source, split_membership
from pipeline.errors import InputError
from pipeline.evaluation import EvaluateConfig
from pipeline.explain_eval import ExplainEvalConfig
from pipeline.figures import ReportConfig
from pipeline.progress import progress
from pipeline.random_walk import RandomWalkConfig
from pipeline.segmentation.infer import EvaluateSegConfig
from pipeline.segmentation.train import SegTrainConfig
from pipeline.synthetic import SyntheticConfig
from stages import params as P
from stages.common import PARAMS_OPTION, StageParams, echo
from stages.paths import SYNTHETIC

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
    if segmenter.network.backbone == "classifier" and classifier.model == "demo_hybrid":
        stride = 2 ** len(classifier.demo_hybrid.stem_channels) * classifier.demo_hybrid.patch_size
        if segmenter.crop_size % stride:
            problems.append(f"{params.source}: train_seg.crop_size={segmenter.crop_size} must be a multiple of the classifier's token stride {stride}")
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
