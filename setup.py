"""Package list for setuptools (everything else is in pyproject.toml).

``study_app/`` stays at the top of the repository (the project's layout names it), and the wheel
ships it inside the package as ``sonieval._study_app``, so that ``sonieval study serve`` finds
``app.py`` in an install (sonieval.study.server.app_path) without a top-level ``study_app`` package.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["sonieval", "sonieval.*"]), "sonieval._study_app"],
    package_dir={"sonieval._study_app": "study_app"},
)
