"""The Dockerfile carried out for each service without Docker, for the tests (there is no daemon here).

Only the instructions our Dockerfiles use are understood, and any other one fails the test, so
the emulation cannot drift quietly from the files. The base image is this machine's Python
(the same minor version as `python:3.11-slim`) in a fresh virtualenv that holds nothing but
what the Dockerfile installs; the app files are made read-only, as the pods' root filesystem is.
"""

import fnmatch
import json
import os
import shlex
import shutil
import string
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

IGNORED = {"FROM", "USER", "EXPOSE"}  # the base (see above), the uid and a port note: nothing to lay out


@dataclass
class Image:
    """A built "image": a root folder with the app, a virtualenv, the ENV and the CMD."""

    root: Path
    venv: Path
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None
    cmd: list[str] = field(default_factory=list)

    def environment(self, **settings: str) -> dict[str, str]:
        """The container's environment: PATH to the image's Python, its ENV, then `settings`."""
        path = f"{self.venv / 'bin'}{os.pathsep}/usr/bin:/bin"
        return {"PATH": path, "HOME": str(self.root), **self.env, **settings}

    def start(self, log: Path, **settings: str) -> subprocess.Popen:
        """Run the CMD in the WORKDIR, its output into `log`."""
        with log.open("wb") as out:
            return subprocess.Popen(self.cmd, cwd=self.workdir, env=self.environment(**settings),
                                    stdout=out, stderr=subprocess.STDOUT)


def build(context: Path, root: Path, **build_args: str) -> Image:
    """Carry out `context`/Dockerfile into `root` with `build_args`; raise on an instruction it does not know."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    image = Image(root=root / "fs", venv=venv)
    image.root.mkdir()
    ignored = _dockerignore(context)
    for instruction, raw in _instructions(context / "Dockerfile"):
        argument = string.Template(raw).substitute(build_args) if instruction != "CMD" else raw
        if instruction in IGNORED:
            continue
        if instruction == "ARG":
            if argument not in build_args:
                raise ValueError(f"Dockerfile: build argument {argument} is not given")
        elif instruction == "ENV":
            image.env.update(item.split("=", 1) for item in shlex.split(argument))
        elif instruction == "WORKDIR":
            image.workdir = image.root / argument.lstrip("/")
            image.workdir.mkdir(parents=True, exist_ok=True)
        elif instruction == "COPY":
            source, target = shlex.split(argument)
            _copy(context, source, image.workdir, target, ignored)
        elif instruction == "RUN" and argument.startswith("pip install"):
            subprocess.run(argument, shell=True, cwd=image.workdir, env=image.environment(), check=True,
                           capture_output=True)
        elif instruction == "RUN" and argument.startswith("useradd"):
            continue  # the uid is USER's business, which the pods' securityContext checks
        elif instruction == "CMD":
            image.cmd = json.loads(argument)  # the exec form
        else:
            raise NotImplementedError(f"Dockerfile: {instruction} {argument} is not emulated")
    for path in image.root.rglob("*"):
        path.chmod(path.stat().st_mode & ~0o222)
    return image


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = dockerfile.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#")]


def _dockerignore(context: Path) -> list[str]:
    path = context / ".dockerignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def _excluded(relative: Path, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or a folder above it decides; `!` keeps."""
    candidates = [str(relative), *map(str, relative.parents)][:-1]
    excluded = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        if any(fnmatch.fnmatch(candidate, pattern.lstrip("!")) for candidate in candidates):
            excluded = not keep
    return excluded


def _copy(context: Path, source: str, workdir: Path, target: str, ignored: list[str]) -> None:
    def skip(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).relative_to(context)
        return {n for n in names if _excluded(relative / n, ignored)}

    path = context / source
    if path.is_dir():
        shutil.copytree(path, workdir / target, ignore=skip, dirs_exist_ok=True)
    elif target.endswith("/"):  # `COPY file dir/` creates the folder and copies into it
        (workdir / target).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, workdir / target)
    else:
        shutil.copy2(path, workdir / target)
