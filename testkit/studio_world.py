"""A zoo whose files the studio can really load, for tests and benchmarks: every served checkpoint's primary file
is one tiny random SD 1.5-topology checkpoint and every other served version's a tiny random kohya LoRA (the
catalogue's sha256 rewritten to match), served by a local HTTP server standing in for Civitai's download endpoint.
Nothing is downloaded from anywhere else."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sqlalchemy import Engine, text

from testkit import tiny_sd


class FileServer:
    """Stands in for Civitai's download endpoint: /api/download/models/{id} -> 307 -> /files/{id} -> the bytes.
    `modes[id]` makes a version answer 401, 403 (early access), 404, or wrong bytes ('mismatch'). It also stands in
    for Civitai's image host: /images/{name} answers the PNG `images[name]` (the gallery's thumbnails)."""

    def __init__(self) -> None:
        self.blobs: dict[int, tuple[str, bytes]] = {}
        self.images: dict[str, bytes] = {}
        self.modes: dict[int, str] = {}
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self):
        files = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, headers: dict, body: bytes = b"") -> None:
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                with files.lock:
                    files.requests.append(self.path)
                endpoint = re.fullmatch(r"/api/download/models/(\d+)", self.path.split("?")[0])
                stored = re.fullmatch(r"/files/(\d+)", self.path.split("?")[0])
                image = files.images.get(self.path.split("?")[0].removeprefix("/images/"))
                json_type = {"Content-Type": "application/json"}
                if endpoint:
                    version = int(endpoint.group(1))
                    mode = files.modes.get(version)
                    if mode == "401":
                        return self._send(401, json_type, b'{"error": "Unauthorized", "message": "log in"}')
                    if mode == "403":
                        return self._send(403, json_type, b'{"error": "Early Access", "deadline": "2031-01-01"}')
                    if mode == "404" or version not in files.blobs:
                        return self._send(404, json_type, b'{"error": "Model not found"}')
                    return self._send(307, {"Location": f"{files.url}/files/{version}"})
                if stored and int(stored.group(1)) in files.blobs:
                    version = int(stored.group(1))
                    name, data = files.blobs[version]
                    if files.modes.get(version) == "mismatch":
                        data = data[:-1] + bytes([data[-1] ^ 1])
                    return self._send(200, {"Content-Type": "application/octet-stream",
                                            "Content-Disposition": f'attachment; filename="{name}"'}, data)
                if image is not None and self.path.startswith("/images/"):
                    return self._send(200, {"Content-Type": "image/png"}, image)
                return self._send(404, json_type, b'{"error": "no such object"}')

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class TinyFiles:
    """What `serve_tiny_files` made: the config folder the studio loads with, the checkpoint's sha256, the served
    versions by type."""

    config_dir: Path
    checkpoint: Path
    checkpoint_sha: str
    versions: dict[int, str] = field(default_factory=dict)


def serve_tiny_files(engine: Engine, files: FileServer, root: Path) -> TinyFiles:
    """Point every served version of the zoo at a tiny file served by `files` (the catalogue's sha256 to match)."""
    from serving.studio import sd_components as sdc
    from serving.studio.model_files import file_sha256

    config = sdc.write_sd15_config(root / "sd-config", "tiny")
    pipe = tiny_sd.build_random_pipeline(config, seed=0)
    checkpoint = tiny_sd.save_single_file(pipe, root / "tiny.safetensors")
    with engine.begin() as conn:
        versions = conn.execute(text(
            "SELECT version_id, model_type FROM served_model_versions ORDER BY version_id")).all()
        for version_id, model_type in versions:
            if model_type == "Checkpoint":
                path = checkpoint
            else:
                path = tiny_sd.write_random_kohya_lora(pipe, root / f"lora-{version_id}.safetensors", seed=version_id,
                                                       scale=0.05)
            sha = file_sha256(path).upper()  # the catalogue stores hashes upper-cased
            conn.execute(text("UPDATE model_files SET sha256 = :sha WHERE version_id = :v AND is_primary"),
                         {"sha": sha, "v": version_id})
            files.blobs[version_id] = (path.name, path.read_bytes())
    return TinyFiles(config, checkpoint, file_sha256(checkpoint), dict(versions))
