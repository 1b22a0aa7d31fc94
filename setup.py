"""One build step on top of pyproject.toml: the wheel ships the prompts.

``prompts/`` at the repository root stays the only copy in git; a wheel (``pip install .``) gets it, subfolders
included, as ``synth/prompts_data/``, which ``synth.prompts.prompts_dir`` looks at first. An editable install
skips the copy and reads the checkout's ``prompts/`` directly, so an edited prompt takes effect at once.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PROMPTS = Path(__file__).resolve().parent / "prompts"


class BuildWithPrompts(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        if not any(PROMPTS.glob("*.toml")):  # an sdist built without MANIFEST.in's graft would ship no prompts
            raise FileNotFoundError(f"{PROMPTS}: no prompt files to put into the wheel")
        self.copy_tree(str(PROMPTS), str(Path(self.build_lib, "synth", "prompts_data")))


setup(cmdclass={"build_py": BuildWithPrompts})
