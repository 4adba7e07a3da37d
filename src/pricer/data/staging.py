"""Outputs written aside and published together: a failed run leaves the previous outputs and no staging file.

Each output is written in a hidden folder beside its target (same file system, so a rename publishes
it) and every folder exists before any record is read, so an output that cannot be written fails the
run before the work. Nothing is renamed into place until every output is complete; a rename that
still fails puts back the targets already replaced, so the outputs are never half old, half new.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory
from types import TracebackType
from typing import Self


class Staging:
    """``path(target)`` is where to write ``target``; ``publish()`` renames them all into place.

    Leaving the ``with`` block removes the staging folders and whatever is left in them, on success
    or failure alike.
    """

    def __init__(self, targets: Iterable[Path]) -> None:
        self.targets = list(dict.fromkeys(Path(target) for target in targets))
        self._folders: dict[Path, Path] = {}
        self._cleanup = ExitStack()

    def __enter__(self) -> Self:
        try:
            for parent in dict.fromkeys(target.parent for target in self.targets):
                parent.mkdir(parents=True, exist_ok=True)
                folder = TemporaryDirectory(dir=parent, prefix=".staging-")
                self._folders[parent] = Path(self._cleanup.enter_context(folder))
        except BaseException:
            self._cleanup.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._cleanup.close()

    def path(self, target: Path) -> Path:
        return self._folders[Path(target).parent] / Path(target).name

    def scratch(self, name: str) -> Path:
        """A working file that is never published, removed with the staging folders."""
        return self.path(self.targets[0]).with_name(f".scratch-{name}")

    def publish(self) -> None:
        replaced: list[tuple[Path, Path | None]] = []
        try:
            for target in self.targets:
                staged, previous = self.path(target), None
                if target.exists():
                    previous = staged.with_name(f".previous-{target.name}")
                    try:
                        os.link(target, previous)  # the old content stays reachable, at no copy
                    except OSError:
                        shutil.copy2(target, previous)  # a file system without hard links
                os.replace(staged, target)
                replaced.append((target, previous))
        except BaseException:
            for target, previous in reversed(replaced):
                if previous is None:
                    target.unlink(missing_ok=True)
                else:
                    os.replace(previous, target)
            raise
