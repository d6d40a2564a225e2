"""`make run`: stylize scikit-image's sample photos with its sample textures, as a batch.

The inputs are copied (never modified) from the installed scikit-image package into
out/demo/inputs/, then manifests/demo.yaml runs like any user manifest: outputs, sidecars,
index.sqlite, a contact sheet and index.html land in out/demo/.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

CONTENT = ("astronaut.png", "chelsea.png", "coffee.png")
STYLE = ("ihc.png", "retina.jpg")


def materialize(root: Path) -> Path:
    """Copy the sample images next to the demo manifest's expected inputs folder."""
    try:
        import skimage.data
    except ImportError:
        raise SystemExit("the demo needs scikit-image's sample images: pip install 'nst-batch[demo]'") from None
    data = Path(skimage.data.__file__).parent
    inputs = root / "out" / "demo" / "inputs"
    for folder, names in (("content", CONTENT), ("style", STYLE)):
        (inputs / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            target = inputs / folder / name
            if not target.exists():
                shutil.copyfile(data / name, target)
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
