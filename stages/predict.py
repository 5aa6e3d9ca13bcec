"""predict: segment any images with a trained segmenter (not a DVC stage)."""
from __future__ import annotations

from pathlib import Path

import typer

from stages.runner.outputs import echo
from stages.runner.params import PARAMS_OPTION, StageParams
from stages.runner.paths import SEGMENTER

# The `wsss` dispatcher imports this module to read its options: torch and timm load in main().


def image_files(inputs: list[Path], suffixes: tuple[str, ...]) -> list[Path]:
    """The files named, and the files with those suffixes inside the folders named (sorted, not recursive)."""
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        else:
            files.append(path)
    return files


def main(
    images: list[Path] = typer.Argument(..., help="Image files (JPEG, PNG; any size, colour or greyscale) or folders of them."),
    out: Path = typer.Option(..., "--out", help="Folder for <name>.png (palette labels) and <name>_overlay.png."),
    model: Path = typer.Option(SEGMENTER, "--model", help="A segmenter checkpoint written by train_seg."),
    scales: str = typer.Option("0.75,1,1.25", "--scales", help="Comma-separated input scales whose predictions are averaged."),
    flip: bool = typer.Option(True, "--flip/--no-flip", help="Also average the mirrored image's prediction."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    params_file: Path = PARAMS_OPTION,
) -> None:
    """Write a palette PNG of labels and a colour overlay per image; unreadable files are named and skipped."""
    from PIL import Image

    from pipeline.core.device import resolve_device
    from pipeline.core.errors import DatasetError
    from pipeline.core.memory import MemoryConfig
    from pipeline.core.progress import progress
    from pipeline.data.images import IMAGE_SUFFIXES, read_image
    from pipeline.data.label_maps import save_label_png
    from pipeline.report.figures import colour_labels, overlay
    from pipeline.segmentation.infer import check_inference_fits, predict_probs
    from pipeline.segmentation.net import load_segmenter

    try:
        scale_values = [float(s) for s in scales.split(",")]
    except ValueError:
        raise typer.BadParameter(f"'{scales}' is not a comma-separated list of numbers, e.g. 0.75,1,1.25", param_hint="--scales") from None
    files = image_files(images, IMAGE_SUFFIXES)
    if not files:
        raise typer.BadParameter("no JPEG or PNG file found in the paths given", param_hint="IMAGES")
    torch_device = resolve_device(device)
    net, meta = load_segmenter(model, torch_device)
    out.mkdir(parents=True, exist_ok=True)
    stems = [path.stem for path in files]
    clashes = sorted({stem for stem in stems if stems.count(stem) > 1})
    if clashes:
        raise typer.BadParameter(f"several inputs are named {clashes[0]}.* (outputs would overwrite each other); "
                                 "predict them into separate --out folders", param_hint="IMAGES")
    # Inside a project the params' memory budget applies; elsewhere only the device's free memory.
    budget = StageParams(params_file).section("memory", MemoryConfig).budget_bytes if params_file.is_file() else None
    checked: set[tuple[int, int]] = set()
    failed: list[str] = []
    for path in progress(files, total=len(files), desc="predict"):
        try:
            image = read_image(path)
        except DatasetError as error:  # names the file; the other images are still segmented
            failed.append(str(error))
            continue
        if image.shape[:2] not in checked:  # one dry run per distinct size
            check_inference_fits(net, image.shape[:2], scale_values, flip, budget, torch_device, f"predict {path}")
            checked.add(image.shape[:2])
        labels = predict_probs(net, image, scale_values, flip, torch_device).argmax(axis=0).astype("uint8")
        save_label_png(out / f"{path.stem}.png", labels)
        Image.fromarray(overlay(image, colour_labels(labels))).save(out / f"{path.stem}_overlay.png")
    classes = ", ".join(f"{k} {name}" for k, name in enumerate(meta["class_names"]))
    echo(f"predict: {len(files) - len(failed)} of {len(files)} images -> {out}/ (labels: {classes})")
    if failed:
        echo(f"predict: {len(failed)} files could not be read:\n  " + "\n  ".join(failed))
        raise typer.Exit(code=1)
