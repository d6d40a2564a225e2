"""`make run`: stylize scikit-image's sample photos with The Starry Night and a sample texture.

The inputs are copied (never modified) into out/demo/inputs/: the photos and the texture from
the installed scikit-image package, the painting from pipeline/demo_assets/ (a 512 px copy of
a public-domain work, see NOTICE). Then manifests/demo.yaml runs like any user manifest:
outputs, sidecars, index.sqlite, a contact sheet and index.html land in out/demo/.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

CONTENT = ("astronaut.png", "chelsea.png", "coffee.png")
STYLE = ("ihc.png",)                                              # scikit-image's stained tissue
PAINTING = Path(__file__).parent / "demo_assets" / "starry_night.jpg"   # van Gogh, 1889


def materialize(root: Path) -> Path:
    """Copy the sample images next to the demo manifest's expected inputs folder."""
    try:
        import skimage.data
    except ImportError:
        raise SystemExit("the demo needs scikit-image's sample images: pip install 'nst-batch[demo]'") from None
    data = Path(skimage.data.__file__).parent
    inputs = root / "out" / "demo" / "inputs"
    sources = [("content", data / name) for name in CONTENT] + [("style", data / name) for name in STYLE]
    for folder, source in [*sources, ("style", PAINTING)]:
        (inputs / folder).mkdir(parents=True, exist_ok=True)
        target = inputs / folder / source.name
        if not target.exists():
            shutil.copyfile(source, target)
    return inputs


def main() -> None:
    from .cli import main as cli_main

    root = Path.cwd()
    manifest = root / "manifests" / "demo.yaml"
    if not manifest.exists():
        raise SystemExit(f"{manifest} not found: run the demo from the nst-batch checkout (make run)")
    materialize(root)
    cli_main(["run", str(manifest), *sys.argv[1:]])


if __name__ == "__main__":
    main()
