"""Print the project's direct requirements, one per line, for `pip lock` (see `make lock`).

pylock.toml holds the dependencies and not the project: pip installs an editable project
only without hashes, and the lock is installed with them. So the lock is resolved from what
pyproject.toml asks for (runtime, the `test` extra and the build system, which builds the
project and the one sdist) rather than from the project itself.
"""

import sys
import tomllib

with open("pyproject.toml", "rb") as source:
    pyproject = tomllib.load(source)

requirements = [
    *pyproject["project"]["dependencies"],
    *pyproject["project"]["optional-dependencies"]["test"],
    *pyproject["build-system"]["requires"],
]
sys.stdout.write("".join(f"{requirement}\n" for requirement in requirements))
