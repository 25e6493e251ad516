"""The verified local file of a chosen version: fetched through the download cache (a cache hit costs no network)
and reachable under its sha256 with its file's suffix, since the pipeline reads a file's format from its suffix."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from crawlers.downloads import DownloadError
from serving.search.results import Hit

_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin", ".pth")


class LocalFiles:
    """Chosen versions' primary files on disk: `downloader` (crawlers.downloads) keeps them by bare sha256, and a
    link `<zoo_home>/models/by-sha256/<sha256><suffix>` gives each its suffix."""

    def __init__(self, downloader, zoo_home: str | Path) -> None:
        self.downloader = downloader
        self.links = Path(zoo_home) / "models" / "by-sha256"

    def path(self, hit: Hit) -> Path:
        """The verified local file of the version's primary file (downloaded on a cache miss)."""
        if not hit.sha256:
            raise DownloadError(f"model version {hit.version_id} ({hit.name}): the catalogue has no sha256 for its "
                                "primary file, so a download could not be verified", version_id=hit.version_id)
        cached = self.downloader.fetch(hit.version_id, hit.sha256, file_name_hint=hit.file_name)
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
