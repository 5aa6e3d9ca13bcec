"""How much the headline numbers move: the default pipeline over training seeds, and on other datasets.

    python benchmarks/spread.py seeds --write         # train_cls.seed = train_aff.seed = train_seg.seed = 0 .. 4
    python benchmarks/spread.py readme                # the README's results block, again, from metrics/expected.json
    python benchmarks/spread.py sources               # the AffinityNet seed alone, then the segmenter seed alone
    python benchmarks/spread.py variants              # two other synthetic datasets (settings and seeds)
    python benchmarks/spread.py methods               # every explanation method that runs on the default model
    python benchmarks/spread.py crf --set peak_fraction=0,0.15   # the seed runs' CRF labels under other crf settings
    python benchmarks/spread.py walk --set peak_fraction=0,0.15 --set alpha=4,20   # their random walk, every combination

Each configuration is one `dvc exp run --temp` (the workspace is left alone; stages whose
inputs did not change come from the DVC cache), named `spread-<config>`, so `dvc exp show`
lists them afterwards; a seed equal to the workspace's own, with `dvc status` clean, is read from
the workspace instead (its metrics and metrics/timings/). The script prints Markdown tables: mean ± std (sample std, n - 1)
over the seeds, and seed -> CRF -> random walk per dataset variant. The crf and walk modes rerun
nothing through DVC: they recompute the CRF's confident labels, or the random walk, of each seed
run's stored seeds and AffinityNet (from the DVC cache) under other `crf` or `random_walk`
settings, minutes where a seed run takes half an hour. With ``--write`` the seeds'
spread becomes the expected bands (metrics/expected.json, see stages/bands.py) and the README's
results block is rendered from them. Run it on a committed workspace: an experiment starts from
HEAD plus the workspace's changes, and the bands record HEAD as the commit that made them.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, get_type_hints

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from stages import bands  # noqa: E402 (the project root is on the path only from here)

# Settings of the two extra datasets: denser clutter with more, smaller objects at 96 px, and
# sparse scenes with fewer, larger objects at 160 px; each with its own generator seed.
VARIANTS: dict[str, dict[str, object]] = {
    "cluttered": {"synthetic.image_size": 96, "synthetic.clutter": 2.0, "synthetic.objects": [2, 4], "synthetic.scale": [0.12, 0.24], "synthetic.seed": 1},
    "sparse": {"synthetic.image_size": 160, "synthetic.clutter": 0.5, "synthetic.objects": [1, 2], "synthetic.scale": [0.2, 0.35], "synthetic.seed": 2},
}

BEST_SEEDS, CRF, WALK, SEGMENTER, SEGMENTER_CRF = map(bands.label, ("seed_miou_best_background", "crf_confident_miou", "random_walk_miou",
                                                                    "miou", "crf.miou"))


def _run(args: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def _set_args(settings: dict[str, object]) -> list[str]:
    out: list[str] = []
    for key, value in settings.items():
        out += ["-S", f"{key}={json.dumps(value)}"]
    return out


def _experiment_ref(name: str) -> str | None:
    refs = _run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"]).split()
    return next((ref for ref in refs if ref.endswith(f"/{name}")), None)


def experiment_figures(name: str) -> dict[str, float | None]:
    """The headline figures as the experiment `name` committed them."""
    with tempfile.TemporaryDirectory() as folder:
        for path in {figure.path for figure in bands.HEADLINE}:
            (Path(folder) / path).parent.mkdir(parents=True, exist_ok=True)
            (Path(folder) / path).write_text(_run(["git", "show", f"{_experiment_ref(name)}:{path}"]))
        return bands.read_figures(Path(folder))


def run_experiment(name: str, settings: dict[str, object], timings: Path) -> dict[str, float | None]:
    """`dvc exp run --temp` under `name`; returns the figures of the finished experiment. The
    stages that run record their wall times in `timings` (WSSS_TIMINGS_DIR), since the
    temporary workspace, and its metrics/timings/, is gone afterwards."""
    start = time.perf_counter()
    if _experiment_ref(name):
        _run(["dvc", "exp", "remove", name])  # a rerun replaces the earlier experiment of that name
    _run(["dvc", "exp", "run", "--temp", "-n", name, *_set_args(settings)], {**os.environ, "WSSS_TIMINGS_DIR": str(timings)})
    values = experiment_figures(name)
    print(f"{name}: done in {time.perf_counter() - start:.0f} s: " + ", ".join(f"{k} {v:.1f}" for k, v in values.items() if v is not None),
          file=sys.stderr)
    return values


def _stage_timings(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def _machine() -> str:
    """The CPU's model name and widest vector extension, and its core count."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), platform.processor())
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "").split()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model} ({isa}, {os.cpu_count()} cores)"


def _up_to_date() -> bool:
    """`dvc status` has nothing to report: the workspace's outputs are its own run's."""
    return json.loads(_run(["dvc", "status", "--json"]) or "{}") == {}


def _bands(per_run: list[dict[str, float | None]]) -> dict[str, dict]:
    """The spread of each headline figure that every run has."""
    return {f.label: bands.spread([run[f.label] for run in per_run]) for f in bands.HEADLINE if all(run[f.label] is not None for run in per_run)}


def _is_workspace_run(seed: int) -> bool:
    """The workspace's params use ``seed`` for every varied key, and its outputs are up to date."""
    workspace = yaml.safe_load((ROOT / "params.yaml").read_text())
    if any(workspace[key.split(".")[0]][key.split(".")[1]] != seed for key in bands.VARIED):
        return False
    return _up_to_date()


def _measured_earlier(seed: int, fingerprint: dict) -> dict | None:
    """The committed bands' record of ``seed``'s run, if those bands were made with this
    ``fingerprint`` (every stage's code deps and default params). A run restored from DVC's
    run-cache records no time; when the committed bands come from the same code and params, their
    run of this seed did the same work, so its time stands. Otherwise the run that filled the
    cache is unknown (a screen, say) and nothing is substituted."""
    path = ROOT / bands.EXPECTED
    if not path.is_file():
        return None
    committed = json.loads(path.read_text())
    if committed["fingerprint"] != fingerprint:
        return None
    made = committed["made"]
    return next(({**run, "commit": run.get("commit", made["commit"])} for run in made["runs"] if run["seed"] == seed), None)


def seeds(values: list[int], write: bool) -> None:
    runs, per_run = [], []
    fingerprint = bands.fingerprint_of(yaml.safe_load((ROOT / "params.yaml").read_text()))
    for seed in values:
        if _is_workspace_run(seed):  # the committed run itself: its metrics and timings are in the workspace
            figures, timings = bands.read_figures(ROOT), _stage_timings(ROOT / "metrics/timings")
            print(f"seed {seed}: the workspace's own run (dvc status is clean)", file=sys.stderr)
        else:
            with tempfile.TemporaryDirectory() as folder:
                figures = run_experiment(f"spread-seed{seed}", {key: seed for key in bands.VARIED}, Path(folder))
                timings = _stage_timings(Path(folder))
        # Stages whose inputs a seed does not touch (synthetic, dataset, masks) come from the cache.
        run = {"seed": seed, "seconds": round(sum(t["seconds"] for t in timings), 1), "stages_run": len(timings),
               "numerics": next((t["numerics"] for t in timings if "numerics" in t), None)}
        restored = not any(t["stage"] == "train_cls" for t in timings)  # the seed's first stage came from the run-cache
        runs.append(_measured_earlier(seed, fingerprint) or run if restored else run)
        per_run.append(figures)
    figures = _bands(per_run)
    print("| metric | " + " | ".join(f"seed {s}" for s in values) + f" | mean ± std (n={len(values)}) |")
    print("|---|" + "---|" * (len(values) + 1))
    for label, band in figures.items():
        print(f"| {label} | " + " | ".join(f"{v:.1f}" for v in band["values"]) + f" | {band['mean']:.1f} ± {band['std']:.1f} |")
    if write:
        numerics = next((run["numerics"] for run in runs if run["numerics"]), None)
        if numerics is None:
            sys.exit("no stage ran (all came from DVC's run-cache), so the runs' numerics are unknown: clear the run-cache or rerun")
        made = {"commit": _run(["git", "rev-parse", "HEAD"]).strip(), "date": time.strftime("%Y-%m-%d"), "machine": _machine(),
                "torch": numerics["torch"], "numerics": numerics, "runs": runs}
        expected = {"made": made, "fingerprint": fingerprint, "figures": figures}
        (ROOT / bands.EXPECTED).write_text(json.dumps(expected, indent=2) + "\n")
        readme(ROOT / bands.EXPECTED)
        print(f"wrote {bands.EXPECTED} and the README's results block", file=sys.stderr)


def _run_lock(run: str) -> dict:
    """dvc.lock of a finished run: ``seed<N>`` is the workspace's own run when its params use that
    seed and it is up to date, else experiment `spread-seed<N>`; any other name, experiment
    `spread-<name>` (a dataset variant)."""
    seed = run.removeprefix("seed")
    if run.startswith("seed") and seed.isdigit() and _is_workspace_run(int(seed)):
        return yaml.safe_load((ROOT / "dvc.lock").read_text())
    ref = _experiment_ref(f"spread-{run}")
    if ref is None:
        mode = f"seeds --seeds {seed}" if run.startswith("seed") else f"variants --names {run}"
        sys.exit(f"no run '{run}': run `python benchmarks/spread.py {mode}` first")
    return yaml.safe_load(_run(["git", "show", f"{ref}:dvc.lock"]))


def _cached_dep(lock: dict, stage: str, path: str, link: Path) -> Path:
    """``stage``'s dep ``path`` as ``lock`` records it, linked from the DVC cache at ``link``
    (a folder, such as a store, file by file)."""
    digest = next(dep["md5"] for dep in lock["stages"][stage]["deps"] if dep["path"] == path)
    cache = ROOT / ".dvc/cache/files/md5"
    if not digest.endswith(".dir"):
        link.symlink_to(cache / digest[:2] / digest[2:])
        return link
    for entry in json.loads((cache / digest[:2] / digest[2:]).read_text()):
        (link / entry["relpath"]).parent.mkdir(parents=True, exist_ok=True)
        (link / entry["relpath"]).symlink_to(cache / entry["md5"][:2] / entry["md5"][2:])
    return link


def _run_truth(lock: dict, folder: Path) -> tuple[Any, Any]:
    """The dataset index, its images and the ground truth a run was evaluated on, linked from the
    DVC cache into ``folder`` (a dataset variant's differ from the workspace's)."""
    from pipeline.data.ground_truth import GroundTruth
    from pipeline.data.index import DatasetIndex

    folder.mkdir(parents=True)
    index = DatasetIndex(_cached_dep(lock, "evaluate", "data/dataset.zarr", folder / "dataset.zarr"))
    if any(dep["path"] == str(index.root) for dep in lock["stages"]["dataset"]["deps"]):  # a tracked folder, e.g. data/synthetic
        index.root = _cached_dep(lock, "dataset", str(index.root), folder / "images")
    return index, GroundTruth(_cached_dep(lock, "evaluate", "data/masks.zarr", folder / "masks.zarr"))


def _settings(section: str, cls: type, options: list[str]) -> dict[str, Any]:
    """One config per combination of the ``KEY=V1,V2`` options, the rest of ``section`` as in
    params.yaml, labelled like ``peak_fraction 0.15, alpha 4``."""
    from stages.runner import params as P

    base = P.section(P.load(ROOT / "params.yaml"), section, cls)
    hints = get_type_hints(cls)
    parsed = []
    for option in options:
        key, _, values = option.partition("=")
        if key not in hints or not values:
            sys.exit(f"--set {option}: give KEY=V1,V2 with KEY one of {section}'s keys ({', '.join(hints)})")
        parsed.append((key, [yaml.safe_load(value) for value in values.split(",")]))
    configs = {}
    for combination in itertools.product(*(values for _, values in parsed)):
        changes = {key: hints[key](value) if hints[key] in (int, float) else value for (key, _), value in zip(parsed, combination)}
        configs[", ".join(f"{key} {value}" for key, value in changes.items())] = dataclasses.replace(base, **changes)
    return configs


def _print_settings(section: str, columns: list[str], figures: dict[str, list[tuple[float, ...]]], runs: list[str]) -> None:
    """One row per setting: the first column per run, then every column as mean ± std over the runs."""
    summary = f"mean ± std (n={len(runs)})" if len(runs) > 1 else "one run"
    print(f"| {section} | " + " | ".join(runs) + " | " + " | ".join(f"{column}, {summary}" for column in columns) + " |")
    print("|---|" + "---|" * (len(runs) + len(columns)))
    for label, per_run in figures.items():
        cells = [bands.spread([run[i] for run in per_run]) for i in range(len(columns))]
        # One run has no spread to quote.
        print(f"| {label} | " + " | ".join(f"{run[0]:.1f}" for run in per_run) + " | " +
              " | ".join(f"{cell['mean']:.1f}" + (f" ± {cell['std']:.1f}" if len(runs) > 1 else "") for cell in cells) + " |")


def _scored_rows(cams: Any, positions: np.ndarray, truth: Any, first: int, count: int | None) -> list[int]:
    """Rows ``first`` .. ``first + count`` of a cams store that have a ground-truth mask."""
    stop = None if count is None else first + count
    return [row for row in range(len(positions))[first:stop] if cams.ids[row] in truth]


def crf_settings(options: list[str], runs: list[str], first: int, count: int | None) -> None:
    """CRF confident mIoU and coverage of each of ``runs`` (see :func:`_run_lock`) under each
    combination of ``crf`` settings, from the runs' stored seeds, on images ``first`` ..
    ``first + count`` of cams.splits."""
    from pipeline.core.artifacts import Artifact
    from pipeline.evaluation.pseudo_labels import SegmentationScore
    from pipeline.refine.confident import CRFConfig, confident_labels_many
    from pipeline.seeds.stored import cam_positions, full_resolution_seeds

    configs = _settings("crf", CRFConfig, options)
    figures: dict[str, list[tuple[float, float]]] = {label: [] for label in configs}
    with tempfile.TemporaryDirectory() as folder:
        for run in runs:
            lock = _run_lock(run)
            index, truth = _run_truth(lock, Path(folder) / run)
            cams = Artifact(_cached_dep(lock, "crf_labels", "data/cams.zarr", Path(folder) / run / "cams.zarr"), "cams")
            positions = cam_positions(index, cams)
            rows = _scored_rows(cams, positions, truth, first, count)
            images = [index.image(positions[row]) for row in rows]
            seeds, labels = zip(*(full_resolution_seeds(cams, row, image.shape[:2]) for row, image in zip(rows, images)))
            targets = list(truth.masks([cams.ids[row] for row in rows]))
            for label, config in configs.items():
                score = SegmentationScore(index.num_classes + 1)
                for label_map, target in zip(confident_labels_many(images, seeds, labels, config), targets):
                    score.add(label_map, target)
                figures[label].append((100 * float(np.nanmean(score.confident_iou())), 100 * score.coverage()))
                print(f"{run}, crf {label}: CRF confident mIoU {figures[label][-1][0]:.1f}, "
                      f"coverage {figures[label][-1][1]:.1f} % ({len(rows)} images)", file=sys.stderr)
    _print_settings("crf", ["CRF confident mIoU", "coverage %"], figures, runs)


def walk_settings(options: list[str], runs: list[str], first: int, count: int | None) -> None:
    """Random-walk mIoU of each of ``runs`` under each combination of ``random_walk`` settings,
    from the runs' stored seeds and AffinityNets, on images ``first`` .. ``first + count`` of
    cams.splits. The affinities of an image are predicted once for every setting."""
    import torch

    from pipeline.core.artifacts import Artifact
    from pipeline.core.progress import progress
    from pipeline.data.preprocess import normalise, resize_square, to_tensor
    from pipeline.evaluation.pseudo_labels import SegmentationScore
    from pipeline.refine.affinity.net import load_affinitynet, predict_affinity
    from pipeline.refine.affinity.pairs import half_disc_offsets
    from pipeline.refine.random_walk import RandomWalkConfig, refine
    from pipeline.seeds.stored import cam_positions, present_class_maps

    configs = _settings("random_walk", RandomWalkConfig, options)
    figures: dict[str, list[tuple[float, ...]]] = {label: [] for label in configs}
    with tempfile.TemporaryDirectory() as folder:
        for run in runs:
            lock, run_folder = _run_lock(run), Path(folder) / run
            index, truth = _run_truth(lock, run_folder)
            cams = Artifact(_cached_dep(lock, "random_walk", "data/cams.zarr", run_folder / "cams.zarr"), "cams")
            net, meta = load_affinitynet(_cached_dep(lock, "random_walk", "data/models/affinitynet.pt", run_folder / "affinitynet.pt"),
                                         _cached_dep(lock, "random_walk", "data/models/classifier.pt", run_folder / "classifier.pt"),
                                         torch.device("cpu"))
            offsets = half_disc_offsets(meta["radius"])
            positions = cam_positions(index, cams)
            rows = _scored_rows(cams, positions, truth, first, count)
            scores = {label: SegmentationScore(index.num_classes + 1) for label in configs}
            seeds = zip(cams.iter_rows("cams", rows), cams.iter_rows("labels", rows), truth.masks([cams.ids[row] for row in rows]))
            for row, (cam, cam_labels, target) in progress(zip(rows, seeds), total=len(rows), desc=run):
                image = index.image(positions[row])
                with torch.no_grad():
                    batch = normalise(to_tensor([resize_square(image, meta["image_size"])]))
                    affinity = predict_affinity(net, batch, offsets)[0].double().numpy()
                maps, labels = present_class_maps(cam, cam_labels)
                for label, config in configs.items():
                    scores[label].add(refine(maps, labels, affinity, offsets, config, image.shape[:2]), target)
            for label, score in scores.items():
                background, precision, recall = _foreground_balance(score.confusion)
                figures[label].append((100 * score.miou(), background, precision, recall))
                print(f"{run}, random_walk {label}: random walk mIoU {100 * score.miou():.1f}, background IoU {background:.1f}, "
                      f"object precision {precision:.1f}, recall {recall:.1f} ({len(rows)} images)", file=sys.stderr)
    _print_settings("random_walk", ["random walk mIoU", "background IoU", "object precision", "object recall"], figures, runs)


def _foreground_balance(confusion: np.ndarray) -> tuple[float, float, float]:
    """Background IoU, then the share of pixels labelled as some class that are that class
    (precision: a mask spilling onto the background lowers it) and the share of object pixels
    labelled as their class (recall), in %, from a (C, C + 1) confusion with background first."""
    from pipeline.core.metrics import iou_per_class

    square = confusion[:, : confusion.shape[0]].astype(np.float64)
    hits = np.trace(square) - square[0, 0]
    return (100 * float(iou_per_class(confusion)[0]), 100 * hits / square[:, 1:].sum(), 100 * hits / confusion[1:].sum())


# Each training seed on its own, by its params key. Figures upstream of its stage must not move;
# the table shows that they do not.
SOURCES = {"classifier": "train_cls.seed", "affinitynet": "train_aff.seed", "segmenter": "train_seg.seed"}


def sources(names: list[str], values: list[int]) -> None:
    """Where the spread enters: each of ``names``' seeds varied alone over ``values``, the other
    two kept at the workspace's, beside the workspace's own run (which must be up to date)."""
    if not _up_to_date():
        sys.exit("the workspace's run is not up to date (dvc status); run dvc repro first, since it is every source's first run")
    workspace = yaml.safe_load((ROOT / "params.yaml").read_text())
    base = bands.read_figures(ROOT)
    columns: dict[str, dict[str, dict]] = {}
    for name in names:
        key = SOURCES[name]
        section, field = key.split(".")
        seeds_run = [workspace[section][field], *[v for v in values if v != workspace[section][field]]]
        per_run = [base]
        for seed in seeds_run[1:]:
            with tempfile.TemporaryDirectory() as folder:
                per_run.append(run_experiment(f"spread-{name}-seed{seed}", {key: seed}, Path(folder)))
        columns[name] = _bands(per_run)
        print(f"{name} ({key}): seeds {seeds_run}", file=sys.stderr)
    print("| figure | " + " | ".join(f"{name} seed alone" for name in names) + " |")
    print("|---|" + "---|" * len(names))
    for figure in bands.HEADLINE:
        cells = []
        for name in names:
            band = columns[name].get(figure.label)
            cells.append("—" if band is None else f"{band['mean']:.1f} ± {band['std']:.1f} (" + ", ".join(f"{v:.1f}" for v in band["values"]) + ")")
        print(f"| {figure.label} | " + " | ".join(cells) + " |")


def readme(expected_file: Path) -> None:
    """Render the README's results block from the expected bands."""
    path = ROOT / "README.md"
    path.write_text(bands.replace_block(path.read_text(), bands.render_tables(json.loads(expected_file.read_text()))))


def variants(names: list[str]) -> None:
    print("| dataset | settings | seed mIoU (best bg) | CRF confident mIoU | random walk mIoU | walk gain over best seed |")
    print("|---|---|---|---|---|---|")
    for name in names:
        with tempfile.TemporaryDirectory() as folder:
            run = run_experiment(f"spread-{name}", VARIANTS[name], Path(folder))
        settings = ", ".join(f"{k.split('.')[1]} {v}" for k, v in VARIANTS[name].items())
        print(f"| {name} | {settings} | {run[BEST_SEEDS]:.1f} | {run[CRF]:.1f} | {run[WALK]:.1f} | {run[WALK] - run[BEST_SEEDS]:+.1f} |")


def methods(names: list[str]) -> None:
    """One experiment per cams.method; the cams stage's recorded wall time gives the time per image."""
    print("| cams.method | seed mIoU (best bg) | random walk mIoU | segmenter val mIoU | + CRF | cams s / image |")
    print("|---|---|---|---|---|---|")
    for method in names:
        name = f"spread-method-{method.replace('_', '-')}"
        with tempfile.TemporaryDirectory() as folder:
            run = run_experiment(name, {"cams.method": method}, Path(folder))
            timing = Path(folder) / "cams.json"
            # cams explains the images evaluate judges (both default to the train split). A stage
            # restored from DVC's run-cache does not run, so it records no time.
            images = json.loads(_run(["git", "show", f"{_experiment_ref(name)}:metrics/segmentation.json"]))["images"]
            per_image = f"{json.loads(timing.read_text())['seconds'] / images:.3f}" if timing.is_file() else "cached"
        print(f"| {method} | {run[BEST_SEEDS]:.1f} | {run[WALK]:.1f} | {run[SEGMENTER]:.1f} | {run[SEGMENTER_CRF]:.1f} | {per_image} |", flush=True)


def token_methods() -> list[str]:
    """The registered methods that run on the demo hybrid (relevance at the tokens)."""
    from pipeline.explain import METHODS

    return [m.name for m in METHODS.values() if not m.pixels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    seed_parser = sub.add_parser("seeds", help="the default pipeline over training seeds")
    seed_parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    seed_parser.add_argument("--write", action="store_true", help=f"write {bands.EXPECTED} and the README's results block")
    source_parser = sub.add_parser("sources", help="each training seed alone: which stage's seed moves which figure")
    source_parser.add_argument("--names", nargs="+", default=["affinitynet", "segmenter"], choices=list(SOURCES),
                               help="classifier reruns the whole chain per seed; the default pair reruns from train_aff / train_seg")
    source_parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4], help="besides the workspace's own")
    sub.add_parser("readme", help=f"render the README's results block from {bands.EXPECTED}")
    variant_parser = sub.add_parser("variants", help="the default pipeline on other synthetic datasets")
    variant_parser.add_argument("--names", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    method_parser = sub.add_parser("methods", help="the default pipeline with each explanation method as cams.method")
    method_parser.add_argument("--names", nargs="+", default=None, help="default: every method that runs on the demo hybrid")
    for mode, section, example, helptext in (
        ("crf", "crf", "peak_fraction=0,0.15", "the seed runs' CRF confident labels under other crf settings, from the DVC cache"),
        ("walk", "random_walk", "alpha=4,20", "the seed runs' random walk under other random_walk settings, from the DVC cache"),
    ):
        settings_parser = sub.add_parser(mode, help=helptext)
        settings_parser.add_argument("--set", required=True, action="append", metavar="KEY=V1,V2",
                                     help=f"a {section} key and its values, e.g. {example}; several --set give every combination")
        settings_parser.add_argument("--runs", nargs="+", default=[f"seed{n}" for n in range(5)],
                                     help="seed<N> (`seeds` mode's runs) or a dataset variant (`variants` mode's); default seed0 .. seed4")
        settings_parser.add_argument("--images", type=int, default=None, help="N images of each run (default: all)")
        settings_parser.add_argument("--skip", type=int, default=0, help="start after the first SKIP images (another sample)")
    args = parser.parse_args()
    if args.mode in ("crf", "walk"):
        (crf_settings if args.mode == "crf" else walk_settings)(args.set, args.runs, args.skip, args.images)
    elif args.mode == "seeds":
        seeds(args.seeds, args.write)
    elif args.mode == "sources":
        sources(args.names, args.seeds)
    elif args.mode == "readme":
        readme(ROOT / bands.EXPECTED)
    elif args.mode == "variants":
        variants(args.names)
    else:
        methods(args.names or token_methods())


if __name__ == "__main__":
    main()
