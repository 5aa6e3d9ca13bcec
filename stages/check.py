"""check: validate every section of params.yaml and every file of the dataset, before `dvc repro`.

Each stage still validates its own section when it runs; this command does all of them at
once, in seconds, so a wrong value in `crf:` is found before training rather than after.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.dataset_index import check_files, index_entries
from pipeline.errors import InputError
from pipeline.progress import progress
from stages import params as P
from stages.common import PARAMS_OPTION, StageParams, echo
from stages.paths import SYNTHETIC


def main(params_file: Path = PARAMS_OPTION) -> None:
    """Check every params.yaml section (types, ranges, unknown keys) and decode every image and mask of dataset.root."""
    params = StageParams(params_file)
    problems = []
    for name in sorted(set(params.raw) - set(P.SECTIONS) - set(P.TOP_LEVEL_VALUES)):
        problems.append(f"{params.source}: unknown section '{name}' (sections: {', '.join([*P.TOP_LEVEL_VALUES, *P.SECTIONS])}); check the spelling")
    for name, cls in P.SECTIONS.items():
        try:
            params.section(name, cls)
        except InputError as error:
            problems.append(str(error))
    try:
        params.device()
    except InputError as error:
        problems.append(str(error))
    if problems:
        raise P.ParamsError(f"{len(problems)} problem(s) in {params.source}:\n  " + "\n  ".join(problems))
    echo(f"check: {params.source}: all {len(P.SECTIONS) + len(P.TOP_LEVEL_VALUES)} sections valid")
    dataset = params.section("dataset", P.DatasetParams)
    if Path(dataset.root) == SYNTHETIC and not SYNTHETIC.exists():
        echo(f"check: {SYNTHETIC} is made by the synthetic stage; the dataset stage decodes and checks its files")
        return
    entries = index_entries(dataset.root, dataset.splits, dataset.use_aug)
    records = check_files(entries, lambda items: progress(items, total=len(items), desc="check"))
    masks = sum(record.has_mask for record in records)
    echo(f"check: {dataset.root}: {len(records)} images decoded, {masks} masks match their images, no problems")
