"""DVC as a team uses it: param-scoped reruns, determinism, remotes and shared caches."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.data.label_maps import load_label_png, save_label_png
from tests.conftest import run

GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def _commit(project: Path, message: str) -> None:
    run([*GIT, "add", "-A"], project)
    run([*GIT, "commit", "-qm", message, "--allow-empty"], project)


@pytest.fixture()
def project(reproduced_project, tmp_path) -> Path:
    """A private copy (git, DVC cache and outputs) of the reproduced tiny project, lock committed."""
    copy = tmp_path / "project"
    shutil.copytree(reproduced_project, copy, symlinks=True)
    _commit(copy, "reproduced")
    return copy


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([a-z_]+)'", output))


# One edit per params section, and the stages `dvc status` must then call stale: exactly those
# that declare the key in their dvc.yaml `params:`. `dvc repro` reruns those and, downstream,
# only the stages whose inputs came out changed; nothing upstream or beside can run. The
# `masks` stage reads the whole `dataset` section (the root and the mask folder's layout).
EDITS = [
    (("synthetic", "seed"), 1, {"synthetic"}),
    (("dataset", "root"), "voc_copy", {"dataset", "masks"}),
    (("train_cls", "lr"), 0.002, {"train_cls"}),
    (("cams", "flip"), True, {"cams"}),
    (("crf", "alpha_high"), 8, {"crf_labels"}),
    (("aff_pairs", "radius"), 3, {"aff_pairs"}),
    (("train_aff", "lr"), 0.05, {"train_aff"}),
    (("random_walk", "beta"), 16, {"random_walk"}),
    (("evaluate", "seed_background"), 0.3, {"evaluate"}),
    (("train_seg", "lr"), 0.001, {"train_seg"}),
    (("evaluate_seg", "flip"), False, {"evaluate_seg"}),
    (("explain_eval", "max_images"), 4, {"explain_eval"}),
    (("report", "gallery_images"), 2, {"report"}),
]


def _edit(project: Path, key: tuple[str, str], value) -> None:
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params[key[0]][key[1]] = value
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.parametrize("key, value, readers", EDITS, ids=[".".join(e[0]) for e in EDITS])
def test_editing_one_key_makes_exactly_its_readers_stale(project, key, value, readers):
    if key == ("dataset", "root"):  # a second VOC-layout folder: a copy of the generated one
        shutil.copytree(project / "data/synthetic", project / value)
    _edit(project, key, value)
    assert set(json.loads(run(["dvc", "status", "--json"], project).stdout or "{}")) == readers


def test_a_rerun_after_an_edit_runs_the_reader_and_the_stages_whose_inputs_changed(project):
    _edit(project, ("train_seg", "lr"), 0.001)
    assert _ran(run(["dvc", "repro"], project).stdout) == {"train_seg", "evaluate_seg", "report"}
    assert "up to date" in run(["dvc", "status"], project).stdout.lower()


def test_forced_rerun_of_every_stage_is_byte_identical(project):
    before = (project / "dvc.lock").read_text()
    run(["dvc", "repro", "--force"], project)
    assert (project / "dvc.lock").read_text() == before, "some stage wrote different bytes on a rerun"


def test_push_then_fresh_clone_pulls_and_has_nothing_to_do(project, tmp_path):
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "team", str(remote)], project)
    _commit(project, "remote")
    run(["dvc", "push"], project)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    run(["dvc", "pull"], clone)
    status = run(["dvc", "status"], clone).stdout
    assert "up to date" in status.lower(), status
    assert _ran(run(["dvc", "repro"], clone).stdout) == set()
    assert (clone / "data/pseudo_labels").is_dir()


def test_shared_cache_directory_serves_a_second_checkout(project, tmp_path):
    shared = tmp_path / "shared_cache"
    shutil.copytree(project / ".dvc/cache", shared)
    clone = tmp_path / "colleague"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    run(["dvc", "cache", "dir", str(shared)], clone)
    run(["dvc", "config", "cache.shared", "group"], clone)
    run(["dvc", "checkout"], clone)
    assert "up to date" in run(["dvc", "status"], clone).stdout.lower()
    assert _ran(run(["dvc", "repro"], clone).stdout) == set()


# One edit per kind of code, and the stages `dvc status` must then call changed: exactly the
# stages whose dvc.yaml deps cover the file, i.e. that run a module of its group folder
# (written out here, not derived, so that a wrong derivation in `wsss code-deps` cannot pass
# by agreeing with itself). The comments name the reruns the folder granularity adds.
CODE_EDITS = [
    ("pipeline/evaluation/pseudo_labels.py", {"evaluate", "evaluate_seg", "explain_eval"}),  # + explain_eval
    ("pipeline/refine/confident.py", {"crf_labels", "aff_pairs", "train_aff", "random_walk", "evaluate_seg"}),  # + the other refine users
    ("pipeline/sources/coco.py", {"synthetic", "dataset", "masks"}),  # only the stages that read a source; + synthetic
    ("pipeline/segmentation/train.py", {"train_seg", "evaluate_seg"}),  # + evaluate_seg
    ("pipeline/seeds/stored.py", {"cams", "crf_labels", "random_walk", "evaluate", "explain_eval", "report"}),  # + cams, explain_eval
    ("pipeline/explain/rules.py", {"cams", "explain_eval"}),
    ("pipeline/classifier/model.py", {"train_cls", "cams", "aff_pairs", "train_aff", "random_walk", "train_seg", "evaluate_seg", "explain_eval"}),
    ("pipeline/report/figures.py", {"report"}),
    ("stages/crf_labels.py", {"crf_labels"}),
    ("stages/runner/paths.py", {"synthetic", "dataset", "masks", "train_cls", "cams", "crf_labels", "aff_pairs", "train_aff", "random_walk", "evaluate",
                         "train_seg", "evaluate_seg", "explain_eval", "report"}),
    ("stages/cli.py", set()),  # the dispatcher loads stage modules lazily: adding a command reruns nothing
    ("stages/stage_list.py", set()),  # nor does the list of stages
]


@pytest.mark.parametrize("path, stale", CODE_EDITS, ids=[e[0] for e in CODE_EDITS])
def test_a_code_edit_makes_exactly_the_stages_that_run_it_stale(project, path, stale):
    with open(project / path, "a") as handle:
        handle.write("# an edit\n")
    changed = json.loads(run(["dvc", "status", "--json"], project).stdout or "{}")
    assert set(changed) == stale


SEED_CHAIN = {"train_cls", "cams", "crf_labels", "aff_pairs", "train_aff", "random_walk"}
READS_MASKS = {"evaluate", "train_seg", "evaluate_seg", "explain_eval", "report"}


def _stale_after_reindexing(project: Path, edit: str) -> set[str]:
    """Change a 4x4 block of one file of the image folder (a mask block becomes ignored, an image
    block inverted), rerun only dataset (the one stage that lists the folder) and masks, and return
    what `dvc status` then calls stale, the generated folder's own stage aside."""
    path = project / "data/synthetic" / edit
    before = path.read_bytes()
    if edit.startswith("SegmentationClass/"):
        mask = load_label_png(path)
        mask[30:34, 30:34] = 255
        save_label_png(path, mask)
    else:
        pixels = np.array(Image.open(path))
        pixels[30:34, 30:34] = 255 - pixels[30:34, 30:34]
        Image.fromarray(pixels).save(path, quality=95)
    assert path.read_bytes() != before
    run(["dvc", "repro", "--single-item", "dataset", "masks"], project)
    return set(json.loads(run(["dvc", "status", "--json"], project).stdout or "{}")) - {"synthetic"}


def test_a_mask_edit_reruns_what_reads_masks_never_the_seed_chain(project):
    mask = sorted((project / "data/synthetic/SegmentationClass").glob("*.png"))[0].name
    stale = _stale_after_reindexing(project, f"SegmentationClass/{mask}")
    assert stale == READS_MASKS, stale


def test_an_image_edit_reruns_every_stage_that_reads_pixels(project):
    image = sorted((project / "data/synthetic/JPEGImages").glob("*.jpg"))[0].name
    stale = _stale_after_reindexing(project, f"JPEGImages/{image}")
    assert stale == SEED_CHAIN | READS_MASKS, stale


def test_bytecode_in_a_code_folder_changes_nothing(project):
    """Code deps are folders; Python writes __pycache__ into them wherever bytecode is on."""
    cache = project / "pipeline" / "core" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "config.cpython-311.pyc").write_bytes(b"\x00bytecode")
    assert json.loads(run(["dvc", "status", "--json"], project).stdout or "{}") == {}


def test_a_damaged_store_ends_in_one_message_with_the_fix(project):
    shard = sorted((project / "data/cams.zarr/cams").glob("c.*"))[0]
    shard.unlink()
    result = run(["wsss", "crf_labels"], project, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "data/cams.zarr is damaged" in result.stderr and "dvc checkout data/cams.zarr" in result.stderr
    run(["dvc", "checkout", "data/cams.zarr"], project)
    assert "up to date" in run(["dvc", "status"], project).stdout.lower()
