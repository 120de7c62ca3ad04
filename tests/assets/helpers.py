"""Small files in the official asset layouts (no licensed data), zip builders and a local download server.

FLAME files come from the shared official-format writers (``tests.fixtures.flame_files``) at a small vertex
count; model and emotion folders from ``tests.fixtures.checkpoints`` / ``emotion_files`` with a tiny state dict
(layout, cfg.yaml, decoy checkpoints and Lightning fields are the official ones; only ``--deep`` notices that the
weights do not fit the network).
"""

from __future__ import annotations

import io
import socket
import struct
import tempfile
import threading
import urllib.parse
import zipfile
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from tests.fixtures import flame_files

N_VERTS = 60  # small test heads (the official FLAME has 5023)


def _via_file(write, name: str, *args, **kwargs) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        write(path, *args, **kwargs)
        return path.read_bytes()


def flame_pkl_bytes(seed: int = 0) -> bytes:
    """generic_model.pkl's layout (protocol-2 pickle of chumpy Ch objects, old scipy csc path), random data."""
    return _via_file(flame_files.write_flame_pkl, "generic_model.pkl", n_vertices=N_VERTS, seed=seed)


def landmark_embedding_bytes(seed: int = 1) -> bytes:
    """DECA/EMOCA's landmark_embedding.npy (0-d object array, two pickled torch tensors)."""
    return _via_file(flame_files.write_landmark_embedding, "landmark_embedding.npy", seed=seed)


def mediapipe_embedding_bytes(seed: int = 3) -> bytes:
    return _via_file(flame_files.write_mediapipe_embedding, "mediapipe_landmark_embedding.npz", seed=seed)


def obj_bytes() -> bytes:
    a = flame_files.flame_arrays(N_VERTS)
    return _via_file(flame_files.write_head_template_obj, "head_template.obj", a["v_template"], a["f"])


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def png_bytes(w: int = 256, h: int = 256) -> bytes:
    """An RGBA 8-bit PNG (the official masks' format), written with zlib only."""
    raw = b"".join(b"\x00" + bytes([255, 255, 255, 255]) * w for _ in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def flame_folder_files() -> dict[str, bytes]:
    """The contents of EMOCA's FLAME.zip (paths relative to assets/)."""
    return {
        "FLAME/geometry/generic_model.pkl": flame_pkl_bytes(),
        "FLAME/geometry/landmark_embedding.npy": landmark_embedding_bytes(),
        "FLAME/geometry/mediapipe_landmark_embedding.npz": mediapipe_embedding_bytes(),
        "FLAME/geometry/head_template.obj": obj_bytes(),
        "FLAME/geometry/fixed_uv_displacements/fixed_displacement_256.npy": npy_bytes(np.zeros((256, 256))),
        "FLAME/mask/uv_face_mask.png": png_bytes(),
        "FLAME/mask/uv_face_eye_mask.png": png_bytes(),
    }


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def tiny_state() -> dict:
    import torch

    return {"deca.E_flame.layers.0.weight": torch.zeros(4, 4), "deca.E_flame.layers.0.bias": torch.zeros(4)}


def write_model_folder(parent: Path, name: str) -> Path:
    """An official EMOCA model folder (cfg.yaml, best + decoy checkpoints) with a tiny state dict."""
    from tests.fixtures.checkpoints import write_emoca_folder

    return write_emoca_folder(parent, {}, name=name, state_dict=tiny_state())


def write_emotion_folder(parent: Path, name: str = "ResNet50") -> Path:
    """An official-layout emotion folder (the ResNet-50 cfg.yaml, a Lightning checkpoint) with a tiny state."""
    from tests.fixtures.emotion_files import resnet50_cfg
    from tests.fixtures.emotion_files import write_emotion_folder as write

    write(parent / name, cfg=resnet50_cfg(), state_dict=tiny_state())
    return parent / name


def folder_to_zip_entries(folder: Path, arc_prefix: str) -> dict[str, bytes]:
    return {
        f"{arc_prefix}/{p.relative_to(folder).as_posix()}": p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # stored: a cut file is visibly incomplete
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


# --------------------------------------------------------------------------------------- local download server


@dataclass
class ServerLog:
    requests: list[dict] = field(default_factory=list)


class DownloadServer:
    """An http.server on 127.0.0.1 imitating the download endpoints: form-posted credentials, Range requests,
    and a connection that drops mid-file once per path listed in ``drop_once``.

    ``files`` maps the URL path + query (e.g. ``/download.php?domain=flame&resume=1&sfile=FLAME2020.zip``) to
    bytes. ``bad_login``: "401" (an HTTP error) or "html" (a 200 login page, as some sites do).
    """

    def __init__(
        self,
        files: dict[str, bytes],
        username: str,
        password: str,
        drop_once: tuple[str, ...] = (),
        bad_login: str = "401",
        get_only: tuple[str, ...] = (),
    ):
        self.files, self.username, self.password = files, username, password
        self.get_only = set(get_only)  # paths served to a plain GET only (POST -> 405)
        self.drop_pending = set(drop_once)
        self.bad_login = bad_login
        self.log = ServerLog()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server._serve(self, None)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(n).decode())
                server._serve(self, form)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def _serve(self, h: BaseHTTPRequestHandler, form: dict | None) -> None:
        creds_ok = bool(form) and form.get("username") == [self.username] and form.get("password") == [self.password]
        rng = h.headers.get("Range")
        self.log.requests.append({"method": h.command, "path": h.path, "range": rng, "creds_ok": creds_ok})
        data = self.files.get(h.path)
        if h.path in self.get_only:
            if h.command == "POST":
                return self._send(h, 405, b"method not allowed", "text/plain")
            creds_ok = True
        if not creds_ok:
            if self.bad_login == "html":
                return self._send(h, 200, b"<!DOCTYPE html><html><body>Please log in</body></html>", "text/html")
            return self._send(h, 401, b"unauthorized", "text/plain")
        if data is None:
            return self._send(h, 404, b"not found", "text/plain")
        start = 0
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
        body = data[start:]
        h.send_response(206 if rng else 200)
        h.send_header("Content-Type", "application/zip")
        h.send_header("Content-Length", str(len(body)))
        if rng:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if h.path in self.drop_pending:  # send part of the file, then cut the connection
            self.drop_pending.discard(h.path)
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            return
        h.wfile.write(body)

    @staticmethod
    def _send(h, code: int, body: bytes, ctype: str) -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
