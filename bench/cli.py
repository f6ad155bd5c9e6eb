"""The ``anobench`` command line.

Every command keeps its body thin: parse options, call the library, print one summary line.
User-caused problems surface as ``error: <one line>`` with exit status 2, never a traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from anobench.errors import AnobenchError
from anobench.presets import PRESETS

DATASETS = ("mvtec_ad", "mpdd", "visa", "btad", "mvtec_loco", "folder")
PROTOCOL_PRESETS = tuple(PRESETS)


class _Group(click.Group):
    """Click group that turns exceptions into one-line messages."""

    def invoke(self, ctx: click.Context):
        _one_line_warnings()
        try:
            return super().invoke(ctx)
        except AnobenchError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: re-run the same command to resume", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except OSError as exc:  # disk full, read-only disk, permissions: name the file and the cause
            from anobench.safety import os_error

            click.echo(f"error: {os_error(exc)}", err=True)
            ctx.exit(2)
        except MemoryError:
            click.echo("error: out of memory; use a smaller --image-size, --batch-size or --num", err=True)
            ctx.exit(2)
        except Exception as exc:  # noqa: BLE001 - last line of defence against tracebacks
            if os.environ.get("ANOBENCH_DEBUG"):
                raise
            message = str(exc).splitlines()[0] if str(exc) else ""
            click.echo(f"error: {exc.__class__.__name__}: {message} (set ANOBENCH_DEBUG=1 for a traceback)", err=True)
            ctx.exit(1)


def _one_line_warnings() -> None:
    """anobench warnings print as ``warning: <message>`` on stderr, like errors; others as usual."""
    import warnings

    from anobench.errors import AnobenchWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, AnobenchWarning):
            click.echo(f"warning: {message}", err=True)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="anobench")
def cli() -> None:
    """anobench: benchmark synthetic anomaly generators by the detectors they train."""


@cli.command("list")
def list_cmd() -> None:
    """Show every registered generator and what it needs."""
    from anobench.generators.base import available_generators

    generators = available_generators()
    width = max(len(n) for n in generators)
    for name, cls in generators.items():
        click.echo(f"{name:<{width}}  v{cls.version}  needs: {cls.needs.describe()}")
        if cls.description:
            click.echo(f"{'':<{width}}  {cls.description}")


@cli.command()
@click.option("--generator", "-g", required=True, help="Registered generator name (see `anobench list`).")
@click.option("--dataset", type=click.Choice(DATASETS), default="mvtec_ad", show_default=True)
@click.option("--data-root", required=True, type=click.Path(path_type=Path), help="Dataset root folder.")
@click.option("--category", required=True, help="Category folder under the data root, e.g. bottle.")
@click.option("--num", "-n", required=True, type=click.IntRange(min=1), help="Number of samples to generate.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Output root; writes OUT/GENERATOR/CATEGORY.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--split", default="thirds", show_default=True, help="Protocol: thirds, half, anomalydiffusion, dualanodiff, dhdiff (the last three leaky).")
@click.option("--anomaly-source", type=click.Path(path_type=Path), help="Folder of texture images (DRAEM uses DTD).")
@click.option("--model", help="Diffusion weights: hub id or local diffusers folder.")
@click.option("--checkpoint", type=click.Path(path_type=Path), help="Trained generator checkpoint (train-generator).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N] or mps.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--image-size", default=256, show_default=True, type=click.IntRange(min=32))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a generator config field.")
@click.option("--verify", is_flag=True, help="On resume, check every file's sha256; remake damaged samples.")
@click.option("--drop-duplicates", is_flag=True,
              help="Leave test images with the same pixels as a reference out of the test set (recorded).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def generate(generator, dataset, data_root, category, num, out, seed, split, anomaly_source, model, checkpoint,
             device, batch_size, image_size, overrides, verify, drop_duplicates, quiet) -> None:
    """Generate NUM synthetic anomalies for one category."""
    from anobench.config import parse_overrides
    from anobench.generation import generate_dataset

    summary = generate_dataset(
        generator, dataset, data_root, category, num, out, seed=seed, split=split,
        anomaly_source=anomaly_source, model=model, checkpoint=checkpoint, device=device,
        batch_size=batch_size, overrides=parse_overrides(overrides), image_size=image_size,
        progress=not quiet, verify=verify, drop_duplicates=drop_duplicates,
    )
    click.echo(summary.line())


@cli.group()
def datasets() -> None:
    """Inspect real datasets."""


@datasets.command("check")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--dataset", type=click.Choice(DATASETS), default="mvtec_ad", show_default=True)
@click.option("--category", "categories", multiple=True, help="Only these categories (default: all found).")
def datasets_check(root, dataset, categories) -> None:
    """Count every category's images, list every problem and duplicate image; exit 1 on any problem."""
    from anobench.datasets import LAYOUTS, check_category, list_categories, load_category
    from anobench.protocol import find_duplicates

    names = list(categories) or list_categories(dataset, root)
    if not names:
        click.echo(f"expected {dataset} layout:\n{LAYOUTS[dataset]}", err=True)
        raise AnobenchError(f"{root}: no {dataset} categories found (expected layout above)")
    problems = n_warnings = 0
    for name in names:
        try:
            data = load_category(dataset, root, name)
        except AnobenchError as exc:
            click.echo(f"{name}: PROBLEM {exc}")
            problems += 1
            continue
        per_type = {}
        for s in data.test_anomalies:
            per_type[s.defect_type] = per_type.get(s.defect_type, 0) + 1
        types = ", ".join(f"{k} {v}" for k, v in sorted(per_type.items())) or "none"
        click.echo(f"{name}: train good {len(data.train)}, test good {len(data.test_normals)}, "
                   f"anomalies {len(data.test_anomalies)} ({types})")
        found, warnings = check_category(data)
        for line in found:
            click.echo(f"  PROBLEM {line}")
        for line in warnings:
            click.echo(f"  warning {line}")
        for group in find_duplicates(data):
            click.echo(f"  duplicate pixels: {' = '.join(group)}")
        problems += len(found)
        n_warnings += len(warnings)
    if problems:
        click.echo(f"{problems} problem(s) found" + (f", {n_warnings} warning(s)" if n_warnings else ""), err=True)
        sys.exit(1)
    click.echo(f"no problems found, {n_warnings} warning(s) above" if n_warnings else "no problems found")


@cli.command("demo-data")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--size", default=256, show_default=True, type=click.IntRange(min=64))
@click.option("--train", "n_train", default=40, show_default=True, type=click.IntRange(min=1), help="Good training images per category.")
def demo_data(out, seed, size, n_train) -> None:
    """Write a small procedural MVTec-layout dataset (textures and an object) to OUT.

    An earlier demo dataset in OUT is replaced as a whole; a folder holding anything else is refused.
    """
    from anobench.demo import make_demo_dataset
    from anobench.safety import check_seed

    check_seed(seed)
    click.echo(make_demo_dataset(out, seed=seed, size=size, n_train=n_train).line())


@cli.command("score-generation")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--dataset", type=click.Choice(DATASETS), help="Default: the set's own (dataset.json).")
@click.option("--data-root", type=click.Path(path_type=Path), help="Dataset root, if it moved since generation.")
@click.option("--category", help="Default: the set's own (dataset.json).")
@click.option("--split", default=None, help="Protocol for the IC-LPIPS references (default: the set's own).")
@click.option("--metrics", multiple=True, metavar="NAMES",
              help="Comma list of ic_lpips, kid, fid, is, mask_consistency, mask_stats, cost (default: all).")
@click.option("--ic-lpips", "ic_variants", multiple=True, type=click.Choice(["dualanodiff", "dfmgan"]),
              help="IC-LPIPS variant(s) to compute (default: both).")
@click.option("--real", default="all", show_default=True, type=click.Choice(["all", "references", "test"]),
              help="Real anomalies KID/FID compare with.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N] or mps.")
@click.option("--results", type=click.Path(path_type=Path), help="Results file to append to (default: OUT/results.csv).")
@click.option("--quiet", "-q", is_flag=True, help="Only the results line.")
def score_generation(folder, dataset, data_root, category, split, metrics, ic_variants, real, device, results,
                     quiet) -> None:
    """Score a generated set OUT/NAME/CATEGORY: IC-LPIPS, KID, FID, IS, mask truthfulness, cost."""
    from anobench.quality import score_generated_set, write_scores_json

    from anobench.devices import resolve_device

    device = resolve_device(device)
    log = None if quiet else (lambda message: click.echo(f"  {message}", err=True))
    path = results or Path(folder).parent.parent / "results.csv"  # rows appended per metric as each finishes
    scores = score_generated_set(folder, dataset, data_root, category, split=split, metrics=metrics or None,
                                 ic_lpips_variants=ic_variants or ("dualanodiff", "dfmgan"), real=real,
                                 device=device, log=log, results=path)
    if not quiet:
        for line in scores.lines():
            click.echo(line)
    write_scores_json(scores, folder)
    kept = len(scores.details.get("stored_before", []))
    what = f"{folder}: {len(scores.values)} values for {scores.generator}/{scores.category}"
    click.echo(f"{what} in {path} ({kept} of them stored before, not recomputed)" if kept
               else f"{what} appended to {path}")


@cli.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", default="markdown", show_default=True, help="latex, markdown, csv or html.")
@click.option("--metrics", multiple=True, metavar="NAMES", help="Comma list of metrics to show (default: all).")
@click.option("--layout", help="per-metric (the default: one table per metric), paper (Tables II and IV), "
              "table2, table4 or pair.")
@click.option("--primary", help="Metric the verdict ranks by (default: pixel_ap; see README).")
@click.option("--standalone", is_flag=True, help="LaTeX: a whole document that compiles alone.")
@click.option("--generated", multiple=True, type=click.Path(path_type=Path),
              help="HTML: generated sets (or a folder of them) to show samples from.")
@click.option("--images", default=8, show_default=True, type=click.IntRange(min=0), help="HTML: images per generator.")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Write the report here instead of stdout.")
@click.option("--resamples", default=1000, show_default=True, type=click.IntRange(min=10),
              help="Bootstrap resamples of the test images.")
@click.option("--stats-seed", default=0, show_default=True, type=click.IntRange(min=0), help="Bootstrap seed.")
@click.option("--figures", "figures_dir", type=click.Path(path_type=Path),
              help="Folder for the figures (default: OUT's folder / figures when --out is given).")
@click.option("--no-stats", is_flag=True, help="Tables only: no intervals, tests or figures.")
@click.option("--with-published", "published", multiple=True, metavar="NAME[:METHODS]",
              help="Quote a paper's per-category numbers beside the measured columns (results/published/NAME.csv; "
                   "e.g. dhdiff:AnomalyDiffusion,DH-Diff).")
def report(results, fmt, metrics, layout, primary, standalone, generated, images, out, resamples, stats_seed,
           figures_dir, no_stats, published) -> None:
    """The verdict, then tables from RESULTS files (or run folders): categories x generators.

    The verdict and its 95% intervals, paired tests, ranks and figures come from the per-image
    data stored by `anobench evaluate` (no model is re-run). ``--format csv`` writes the tidy
    result rows themselves. ``--with-published`` quotes paper rows beside the measured columns.
    """
    from anobench.images import atomic_write_text
    from anobench.report import report_files

    names = [m for entry in metrics for m in entry.split(",") if m.strip()] or None
    if out is not None:
        from anobench.safety import check_report_output

        check_report_output(out, results)
    if figures_dir is None and out is not None and not no_stats:
        figures_dir = out.parent / "figures"
    text = report_files(results, fmt, names, layout, generated=generated, images=images, statistics=not no_stats,
                        resamples=resamples, stats_seed=stats_seed, primary=primary, figures_dir=figures_dir,
                        standalone=standalone, out=out, published=published)
    if out is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        atomic_write_text(out, text)
        click.echo(f"{out}: {fmt} report written")


@cli.command("train-detector")
@click.option("--dataset", type=click.Choice(DATASETS), help="Default: the generated set's own (dataset.json).")
@click.option("--data-root", type=click.Path(path_type=Path), help="Dataset root, if it moved since generation.")
@click.option("--category", help="Default: the generated set's own (dataset.json).")
@click.option("--generated", required=True, type=click.Path(path_type=Path), help="Generated set OUT/NAME/CATEGORY.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Run folder (resumed if it exists).")
@click.option("--profile", type=click.Choice(["quick", "paper"]), help="anobench's own settings (default: quick).")
@click.option("--protocol-preset", type=click.Choice(PROTOCOL_PRESETS),
              help="A paper's detector protocol instead of --profile (see `anobench presets`).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--num", type=click.IntRange(min=1),
              help="Train on the set's first NUM samples (default: all; same as a fresh NUM-sized set).")
@click.option("--detector", help="A registered detector (built-in: unet, draem_disc; plug-ins: entry-point group anobench.detectors). Default: unet.")
@click.option("--encoder", help="smp encoder of the U-Net (default: tu-tf_efficientnet_lite0).")
@click.option("--encoder-weights", type=click.Choice(["imagenet", "none"]), help="Default: imagenet for unet.")
@click.option("--threads", default=0, type=click.IntRange(min=0), help="torch CPU threads (0: torch's default).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N] or mps.")
@click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              help="auto: fp32 on CPU, bf16 (or fp16 with a grad scaler) autocast on CUDA.")
@click.option("--workers", type=click.IntRange(min=0), help="DataLoader processes (default: 0 on CPU, 4 on GPU).")
@click.option("--deterministic", is_flag=True, help="Deterministic GPU kernels (slower; bitwise repeatable).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a training config field.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train_detector_cmd(dataset, data_root, category, generated, out, profile, protocol_preset, seed, num, detector,
                       encoder, encoder_weights, threads, device, precision, workers, deterministic, overrides,
                       quiet) -> None:
    """Train a detector on normals + the generated set; resumable after a kill."""
    from anobench.config import parse_overrides
    from anobench.detectors.train import train_detector

    if threads:
        import torch

        torch.set_num_threads(threads)
    if profile and protocol_preset:
        raise AnobenchError("give --profile or --protocol-preset, not both")
    summary = train_detector(dataset, data_root, category, generated, out, profile=profile or "quick", seed=seed,
                             protocol_preset=protocol_preset,
                             detector=detector, encoder=encoder, encoder_weights=encoder_weights,
                             overrides=parse_overrides(overrides), progress=not quiet, device=device,
                             precision=precision, workers=workers, deterministic=deterministic, num=num)
    click.echo(summary.line())


@cli.command("evaluate")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--test-set", type=click.Choice(["protocol", "all"]),
              help="protocol (default; a preset's own): the run's held-out split; all: every test image.")
@click.option("--protocol-preset", type=click.Choice(PROTOCOL_PRESETS),
              help="Score as this paper does: its test set and metric variants (default: the run's preset).")
@click.option("--data-root", type=click.Path(path_type=Path), help="Dataset root, if it moved since training.")
@click.option("--heatmaps", default=8, show_default=True, type=click.IntRange(min=0), help="Heat maps to save.")
@click.option("--results", type=click.Path(path_type=Path), help="Results file to append to (default: RUN/results.csv).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N] or mps.")
@click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "fp32", "bf16", "fp16"]))
@click.option("--deterministic", is_flag=True, help="Deterministic GPU kernels.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def evaluate_cmd(run, test_set, protocol_preset, data_root, heatmaps, results, device, precision, deterministic,
                 quiet) -> None:
    """Score RUN's detector on the real held-out test images; append tidy result rows."""
    from anobench.evaluation import evaluate

    result = evaluate(run, test_set=test_set, data_root=data_root, heatmaps=heatmaps, results=results,
                      progress=not quiet, device=device, precision=precision, deterministic=deterministic,
                      protocol_preset=protocol_preset)
    click.echo(result.line())
    click.echo(f"rows appended to {result.results_path}")


@cli.command("run")
@click.argument("config", required=False, type=click.Path(path_type=Path))
@click.option("--preset", type=click.Choice(["quickstart"]), help="A built-in grid instead of CONFIG.yaml.")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Output folder (overrides the config's).")
@click.option("--protocol-preset", type=click.Choice(PROTOCOL_PRESETS),
              help="Train and score as this paper does (replaces train.profile, protocol and test sets).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--executor", default="local", show_default=True, type=click.Choice(["local", "ray"]),
              help="local: cells one after another here; ray: stages as Ray tasks (pip install 'anobench[ray]').")
@click.option("--address", help="Ray cluster: auto (the running one) or ray://HOST:PORT; default: a local instance.")
@click.option("--max-parallel", type=click.IntRange(min=1), help="Ray: at most N cells in flight (default: all).")
@click.option("--cpus-per-task", default=1, show_default=True, type=click.IntRange(min=1),
              help="Ray: CPUs (and torch threads) each stage task asks for.")
@click.option("--retries", default=2, show_default=True, type=click.IntRange(min=0),
              help="Ray: re-runs of a task whose worker died (killed, out of memory, node lost).")
@click.option("--mlflow", "mlflow_uri", metavar="URI", help="Log one MLflow run per cell to this tracking URI.")
@click.option("--heartbeat", default=60.0, show_default=True, type=click.FloatRange(min=0), metavar="SECONDS",
              help="Print the done/running/failed counts this often while cells run (0: never).")
def run_cmd(config, preset, out, protocol_preset, quiet, executor, address, max_parallel, cpus_per_task, retries, mlflow_uri,
            heartbeat) -> None:
    """Grid generators x categories x seeds: generate, train, evaluate, report (skips finished cells)."""
    from anobench.runner import load_run_config, run_grid

    grid = load_run_config(config, preset, out, protocol_preset=protocol_preset)
    listeners = []
    if mlflow_uri:
        from anobench.tracking import MlflowLogger

        listeners.append(MlflowLogger(mlflow_uri, grid))
    try:
        text = run_grid(grid, progress=not quiet, executor=executor, address=address, max_parallel=max_parallel,
                        task_cpus=cpus_per_task, retries=retries, listeners=listeners, heartbeat=heartbeat)
    finally:
        for listener in listeners:
            listener.close()  # logs the report, also when some cells failed
    click.echo(text.rstrip("\n"))


@cli.command("train-generator")
@click.option("--generator", "-g", required=True, help="A generator with a training stage (see `anobench list`).")
@click.option("--dataset", type=click.Choice(DATASETS), default="mvtec_ad", show_default=True)
@click.option("--data-root", required=True, type=click.Path(path_type=Path), help="Dataset root folder.")
@click.option("--category", required=True, help="Category folder under the data root, e.g. bottle.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Checkpoint folder (re-run to resume).")
@click.option("--model", help="Pretrained diffusion weights to start from (local diffusers SD folder).")
@click.option("--steps", type=click.IntRange(min=1), help="Training steps (default: the generator config's).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--split", default="thirds", show_default=True, help="Protocol whose reference anomalies are trained on.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N] or mps.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a generator config field.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train_generator_cmd(generator, dataset, data_root, category, out, model, steps, seed, split, device, overrides,
                        quiet) -> None:
    """Train a generator on one category's few-shot reference anomalies and normal images."""
    from anobench.config import parse_overrides
    from anobench.generator_training import train_generator
    from anobench.safety import check_seed

    check_seed(seed)
    summary = train_generator(
        generator, dataset, data_root, category, out, model=model, steps=steps, seed=seed, split=split,
        device=device, overrides=parse_overrides(overrides), progress=not quiet,
    )
    click.echo(summary.line())


@cli.command("presets")
@click.argument("name", required=False, type=click.Choice(PROTOCOL_PRESETS))
def presets_cmd(name) -> None:
    """List the protocol presets, or show one's settings, sources and deviations."""
    from anobench.presets import PRESETS

    if name is None:
        for preset in PRESETS.values():
            click.echo(f"{preset.name:<18}{preset.title}{'  [leaky]' if preset.leaky else ''}")
        return
    click.echo(PRESETS[name].describe())


# --- end of commands ---


def main() -> None:
    cli(prog_name="anobench")


if __name__ == "__main__":
    main()
