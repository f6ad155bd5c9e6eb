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

DATASETS = ("mvtec_ad", "mpdd", "visa", "btad", "mvtec_loco", "folder")


class _Group(click.Group):
    """Click group that turns exceptions into one-line messages."""

    def invoke(self, ctx: click.Context):
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
        except Exception as exc:  # noqa: BLE001 - last line of defence against tracebacks
            if os.environ.get("ANOBENCH_DEBUG"):
                raise
            message = str(exc).splitlines()[0] if str(exc) else ""
            click.echo(f"error: {exc.__class__.__name__}: {message} (set ANOBENCH_DEBUG=1 for a traceback)", err=True)
            ctx.exit(1)


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
@click.option("--split", default="thirds", show_default=True, help="Protocol: thirds, half, anomalydiffusion (leaky), dualanodiff.")
@click.option("--anomaly-source", type=click.Path(path_type=Path), help="Folder of texture images (DRAEM uses DTD).")
@click.option("--model", help="Diffusion weights: hub id or local diffusers folder.")
@click.option("--checkpoint", type=click.Path(path_type=Path), help="Trained generator checkpoint (train-generator).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--image-size", default=256, show_default=True, type=click.IntRange(min=32))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a generator config field.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def generate(generator, dataset, data_root, category, num, out, seed, split, anomaly_source, model, checkpoint,
             device, batch_size, image_size, overrides, quiet) -> None:
    """Generate NUM synthetic anomalies for one category."""
    from anobench.config import parse_overrides
    from anobench.generation import generate_dataset

    summary = generate_dataset(
        generator, dataset, data_root, category, num, out, seed=seed, split=split,
        anomaly_source=anomaly_source, model=model, checkpoint=checkpoint, device=device,
        batch_size=batch_size, overrides=parse_overrides(overrides), image_size=image_size,
        progress=not quiet,
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
    """Count every category's images and list every problem; exit 1 on any problem."""
    from anobench.datasets import check_category, list_categories, load_category

    names = list(categories) or list_categories(dataset, root)
    if not names:
        raise AnobenchError(f"{root}: no {dataset} categories found")
    problems = 0
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
        problems += len(found)
    if problems:
        click.echo(f"{problems} problem(s) found", err=True)
        sys.exit(1)
    click.echo("no problems found")


@cli.command("demo-data")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--size", default=256, show_default=True, type=click.IntRange(min=64))
@click.option("--train", "n_train", default=40, show_default=True, type=click.IntRange(min=1), help="Good training images per category.")
def demo_data(out, seed, size, n_train) -> None:
    """Write a small procedural MVTec-layout dataset (textures and an object) to OUT."""
    from anobench.demo import make_demo_dataset

    counts = make_demo_dataset(out, seed=seed, size=size, n_train=n_train)
    summary = ", ".join(f"{cat} ({n} images)" for cat, n in counts.items())
    click.echo(f"{out}: {summary}")


# --- end of commands ---


def main() -> None:
    cli(prog_name="anobench")


if __name__ == "__main__":
    main()
