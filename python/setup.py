"""Builds the extension module sparrow._sparrow with the project's CMake build (setuptools runs this
through pyproject.toml). Offline and without build isolation:

    /usr/bin/python3 -m pip install --no-build-isolation --target DIR ./python

Environment:
  SPARROW_BUILD_DIR   absolute path of a configured CMake build of this repository to build the module in
                      (default: a fresh Release build under python/build/, without tests and
                      benchmarks)
  SPARROW_CMAKE_ARGS  extra arguments for that fresh configuration (e.g. -DSPARROW_WITH_TRAINING=OFF)
  SPARROW_JOBS        parallel build jobs (default 2)
"""

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
MODULE = "_sparrow"
TRAINING_PLUGIN = "libsparrow_training.so"


def run(command):
    print("sparrow setup:", " ".join(shlex.quote(str(c)) for c in command), flush=True)
    subprocess.run([str(c) for c in command], check=True)


class CMakeBuild(build_ext):
    """Builds the CMake target _sparrow (and the training plugin it loads, when the build has
    training) and puts both into the package."""

    def build_extension(self, ext):
        given = os.environ.get("SPARROW_BUILD_DIR")
        if given and not os.path.isabs(given):
            raise RuntimeError(f"SPARROW_BUILD_DIR must be an absolute path (pip builds in another directory), got {given}")
        build_dir = Path(given).resolve() if given else (HERE / "build" / f"cmake-py{sys.version_info[0]}{sys.version_info[1]}")
        if not given:
            run(
                [
                    "cmake", "-S", REPOSITORY, "-B", build_dir, "-G", "Ninja",
                    "-DCMAKE_BUILD_TYPE=Release",
                    "-DSPARROW_BUILD_TESTS=OFF",
                    "-DSPARROW_WITH_BENCHMARKS=OFF",
                    "-DSPARROW_WITH_PYTHON=ON",
                    f"-DSPARROW_PYTHON={sys.executable}",
                ]
                + shlex.split(os.environ.get("SPARROW_CMAKE_ARGS", ""))
            )
        jobs = os.environ.get("SPARROW_JOBS", "2")
        run(["cmake", "--build", build_dir, "--target", MODULE, "-j", jobs])
        # The module built for this interpreter (a reused build may hold others' too).
        built = build_dir / "python" / "sparrow" / f"{MODULE}{sysconfig.get_config_var('EXT_SUFFIX')}"
        if not built.exists():
            raise RuntimeError(f"sparrow setup: no {built.name} in {built.parent} (a build for another Python?)")
        target = Path(self.get_ext_fullpath(ext.name)).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, target)
        plugin = build_dir / "src" / TRAINING_PLUGIN
        if plugin.exists():
            shutil.copy2(plugin, target.parent / TRAINING_PLUGIN)


setup(
    ext_modules=[Extension(f"sparrow.{MODULE}", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
)
