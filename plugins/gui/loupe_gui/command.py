"""The ``loupe gui [RECIPE]`` command. PyQt5 is imported inside ``run`` only."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from host import Command, UsageError


class GuiCommand(Command):
    name = "gui"
    help = "open the Loupe desktop app (recipe editor, runner, trainer, image collection)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("recipe", nargs="?", help="a recipe YAML to open in the recipe workspace")
        parser.add_argument("--image", help="an image (or folder of images) to show in the recipe workspace")
        parser.add_argument("--workspace", choices=["recipe", "run", "train", "collect"], default="recipe",
                            help="the workspace to show first (default: recipe)")

    def run(self, args: argparse.Namespace) -> int:
        if args.recipe and not Path(args.recipe).is_file():
            raise UsageError(f"recipe {args.recipe}: file not found")
        try:
            from PyQt5 import QtWidgets  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise UsageError(f"'loupe gui' needs PyQt5 ({exc}); install it with pip install PyQt5") from None
        from .app import main

        return main(recipe=args.recipe, image=args.image, workspace=args.workspace, argv=sys.argv[:1])
