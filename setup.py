"""Package layout only; everything else is in pyproject.toml.

The dashboard's static files live in ui/ at the top of the repository (DESIGN §2) and
are installed as the package data tower/ui, so an installed wheel serves them too
(tower/dashboard.py looks there first). pyproject.toml alone cannot map a directory
outside tower/ into it while also discovering tower's packages, hence this file.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["tower", "tower.*"]), "tower.ui"],
    package_dir={"tower.ui": "ui"},
    package_data={"tower.ui": ["**/*"]},
)
