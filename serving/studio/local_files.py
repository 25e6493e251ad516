"""The verified local file of a chosen version: fetched through the download cache (a cache hit costs no network)
and reachable under its sha256 with its file's suffix, since the pipeline reads a file's format from its suffix."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from crawlers.downloads import DownloadError
from serving.search.results import Hit

_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin", ".pth")
# Hears of a download as it goes: (the file's name, bytes done, total bytes if known).
DownloadListener = Callable[[str, int, "int | None"], None]


class LocalFiles:
    """Chosen versions' primary files on disk: `downloader` (crawlers.downloads) keeps them by bare sha256, and a
    link `<zoo_home>/models/by-sha256/<sha256><suffix>` gives each its suffix. `expected_size(version_id)` is the
    catalogue's size of a version's primary file in bytes (None when unknown): a download larger than that (and a
    margin) is refused."""

    def __init__(self, downloader, zoo_home: str | Path,
                 expected_size: Callable[[int], int | None] | None = None) -> None:
        self.downloader = downloader
        self.links = Path(zoo_home) / "models" / "by-sha256"
        self.expected_size = expected_size

    def path(self, hit: Hit, progress: DownloadListener | None = None) -> Path:
        """The verified local file of the version's primary file (downloaded on a cache miss, `progress` hearing
        of it under the file's name)."""
        if not hit.sha256:
            raise DownloadError(f"model version {hit.version_id} ({hit.name}): the catalogue has no sha256 for its "
                                "primary file, so a download could not be verified", version_id=hit.version_id)
        options: dict = {}
        if self.downloader.cached_path(hit.sha256) is None:  # only a download needs its size and a listener
            if self.expected_size is not None:
                options["expected_bytes"] = self.expected_size(hit.version_id)
            if progress is not None:
                label = hit.file_name or f"{hit.name} (version {hit.version_id})"
                options["progress"] = lambda done, total: progress(label, done, total)
        cached = self.downloader.fetch(hit.version_id, hit.sha256, file_name_hint=hit.file_name, **options)
        return self._named(cached, hit.file_name)

    def _named(self, cached: Path, file_name: str | None) -> Path:
        """A symlink (else a hard link, else a copy) to the cached file, with the suffix of its file name."""
        suffix = Path(file_name or "").suffix.lower()
        link = self.links / f"{cached.name}{suffix if suffix in _SUFFIXES else '.safetensors'}"
        if link.exists() and link.resolve() == cached.resolve():
            return link
        link.parent.mkdir(parents=True, exist_ok=True)
        staging = link.with_name(f".{link.name}.{os.getpid()}.{threading.get_ident()}")
        staging.unlink(missing_ok=True)
        try:
            staging.symlink_to(cached.resolve())
        except OSError:
            try:
                os.link(cached, staging)
            except OSError:
                shutil.copyfile(cached, staging)
        os.replace(staging, link)
        return link
