"""``ctnormalize train``: train a model recipe on simulated pairs (or your paired volumes) into a package."""

from __future__ import annotations

import sys

from .events import dumps

NAME = "train"
HELP = "train a learned model (default conditioned network or the U-Net) and write a model package"
ORDER = 70
DESCRIPTION = (
    "Train a model on paired data simulated on the fly from procedural phantoms (seeds < 1000) and "
    "lung1 crops, or on your own registered source/target volumes (--manifest). Checkpoints are "
    "resumable (safetensors + JSON, no pickle); logs go to OUT/log.csv and OUT/train.json (the denoise "
    "recipes: OUT/log.csv and the checkpoint's state.json). The package (model.safetensors + card.json) is "
    "written to OUT/package/<name> or --package-dir; put it in $CTNORMALIZE_MODELS to use it (a package with "
    "the name of a shipped one is hidden by it: `ctnormalize models` warns). The denoise recipes are not "
    "validated at training time: choose a continued denoiser's (denoise-v2 and after) NLM blend and flip averaging with scripts/choose_nlm_blend.py and judge "
    "either with the benchmarks."
)


def _continued_help(recipe: str, over: dict) -> str:
    """One continued denoiser recipe's help, from its row of ``RECIPE_OVERRIDES``."""
    what = f"learns to use {over['context']} slices" if over["init_from"] == "ctn-denoise-v1" else \
        "trains it on fresh noise"
    return (f"{recipe} ({over['name']}: starts from the installed {over['init_from']} and {what}, "
            f"{over['steps']} batches, seed {over.get('seed', 0)})")


def add_arguments(p):
    from ..train.denoiser import RECIPE_OVERRIDES

    p.add_argument("--recipe", choices=["default", "unet", "v3", *RECIPE_OVERRIDES],
                   default="default",
                   help="which model: default (protocol-conditioned, v2 recipe), unet, v3 (signature-conditioned, "
                        "domain-randomized physics), denoise (the learned blind denoiser the chain uses, "
                        "ctn-denoise-v1), "
                        + ", ".join(_continued_help(name, o) for name, o in RECIPE_OVERRIDES.items() if o.get("init_from"))
                        + " (default: %(default)s)")
    p.add_argument("-o", "--out", required=True, help="run folder (checkpoints, logs, cached bank)")
    p.add_argument("--manifest", help="JSON manifest of paired volumes instead of simulated data")
    p.add_argument("--bank", help="a cached simulated bank (.npz) to reuse (denoise: the v3 bank, bank_dr.npz)")
    p.add_argument("--steps", type=int, help="training steps (default: the recipe's)")
    p.add_argument("--minutes", type=float, help="stop (with a checkpoint) after this many minutes")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the data and the batches (default: the recipe's: 0, but "
                        + ", ".join(f"{o['seed']} for {name}" for name, o in RECIPE_OVERRIDES.items() if "seed" in o)
                        + ", so that no continued model sees its starting model's batches again)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default) or a GPU (cuda, cuda:N), which runs the GPU recipe of the denoise recipes "
                        "(noise drawn on the device) and of v3 (CUDA: pairs simulated on the device while it trains; with "
                        "--minutes and no --steps the schedule is sized to fit that much training, to which setting "
                        "up the phantoms and a 20-step probe add), batch 256, bf16")
    p.add_argument("--truths", help="v3 on a GPU: the lung1 slabs packed by scripts/pack_v3_truths.py (for a machine "
                                    "without SimpleITK); default: read lung1 here")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT has a checkpoint")
    p.add_argument("--package-dir", help="where to write the model package")
    p.add_argument("--no-validate", action="store_true",
                   help="skip the held-out validation (default/unet recipes; v3 and the denoise recipes have none)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def run(args) -> int:
    from ..train.run import run_training

    pkg = run_training(args.recipe, args.out, bank_path=args.bank, manifest=args.manifest, steps=args.steps,
                       max_minutes=args.minutes, seed=args.seed, resume=not args.no_resume,
                       package_dir=args.package_dir, validate=not args.no_validate, device=args.device,
                       truths_file=args.truths)
    if args.json:
        sys.stdout.write(dumps({"package": str(pkg)}) + "\n")
    else:
        print(f"model package written to {pkg}")
        if args.recipe.startswith("denoise"):
            print("not validated at training time: judge it with benchmarks/heldout_physics.py and benchmarks/quality.py"
                  + (" after scripts/choose_nlm_blend.py" if args.recipe != "denoise" else ""))
    return 0
