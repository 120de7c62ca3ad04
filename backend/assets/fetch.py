"""``assets fetch``: download the official archives with the user's own registered account, then import them.

Conventions: credentials come from the arguments, the environment or a terminal prompt, are posted as form data
like the official download scripts do, and live in memory only (never written to disk, logged or put in a URL).
A download goes to ``<name>.part`` beside its destination and resumes with HTTP Range requests; only a complete,
verified archive (size, zip CRCs, sha256 when known) is renamed into place.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any

from backend.assets.importer import import_assets
from backend.assets.validate import file_head, sha256_file
from backend.paths import assets_root
from emoca_contract.errors import EmocaError

DEFAULT_BASE_URL = "https://download.is.tue.mpg.de"


@dataclass(frozen=True)
class FetchItem:
    """One downloadable archive. ``path`` is relative to the base URL; ``domain`` picks the credentials."""

    name: str
    path: str
    domain: str  # "flame" | "emoca"
    filename: str
    description: str
    sha256: str | None = None  # none published by the authors; pass known hashes to fetch()


def _emoca(path: str) -> str:
    return "emoca/assets/" + path


FETCH_ITEMS: dict[str, FetchItem] = {
    i.name: i
    for i in (
        FetchItem(
            "FLAME2020",
            "download.php?domain=flame&resume=1&sfile=FLAME2020.zip",
            "flame",
            "FLAME2020.zip",
            "FLAME 2020 (generic_model.pkl)",
        ),
        FetchItem(
            "FLAME2023",
            "download.php?domain=flame&resume=1&sfile=FLAME2023.zip",
            "flame",
            "FLAME2023.zip",
            "FLAME 2023 (optional, rig only)",
        ),
        FetchItem(
            "FLAME",
            _emoca("FLAME.zip"),
            "emoca",
            "FLAME.zip",
            "EMOCA's FLAME folder: landmark embeddings, masks, template, displacement",
        ),
        *(
            FetchItem(n, _emoca(f"EMOCA/models/{n}.zip"), "emoca", f"{n}.zip", f"EMOCA model {n}")
            for n in ("EMOCA", "EMOCA_v2_mp", "EMOCA_v2_lr_mse_20", "EMOCA_v2_lr_cos_1.5")
        ),
        FetchItem("DECA_model", _emoca("EMOCA/models/DECA.zip"), "emoca", "DECA_model.zip", "DECA as an EMOCA model"),
        FetchItem("DECA", _emoca("DECA.zip"), "emoca", "DECA.zip", "DECA data (deca_model.tar)"),
        FetchItem(
            "FaceRecognition",
            _emoca("FaceRecognition.zip"),
            "emoca",
            "FaceRecognition.zip",
            "VGGFace2 ResNet-50 (training)",
        ),
        FetchItem(
            "ResNet50",
            _emoca("EmotionRecognition/image_based_networks/ResNet50.zip"),
            "emoca",
            "ResNet50.zip",
            "official emotion network (ResNet-50)",
        ),
        FetchItem(
            "EMOCA-emorec",
            _emoca("EmotionRecognition/facerec_based_models/EMOCA-emorec.zip"),
            "emoca",
            "EMOCA-emorec.zip",
            "emotion from EMOCA's 3D parameters",
        ),
    )
}
DEFAULT_FETCH = ("FLAME2020", "FLAME", "EMOCA_v2_lr_mse_20", "ResNet50")
SITES = {"flame": "flame.is.tue.mpg.de", "emoca": "emoca.is.tue.mpg.de"}
CHUNK = 1 << 20


@dataclass
class Credentials:
    username: str
    password: str = field(repr=False)


def _env_credentials(domain: str) -> Credentials | None:
    prefixes = ([f"EMOCA_BLENDER_{domain.upper()}_"] if domain == "flame" else []) + ["EMOCA_BLENDER_"]
    for p in prefixes:
        u, pw = os.environ.get(p + "USERNAME"), os.environ.get(p + "PASSWORD")
        if u and pw:
            return Credentials(u, pw)
    return None


def resolve_credentials(
    domain: str, username: str | None = None, password: str | None = None, prompt: bool = False
) -> Credentials | None:
    """Explicit arguments, else the environment, else (``prompt``) ask on the terminal. Memory only."""
    if username and password:
        return Credentials(username, password)
    env = _env_credentials(domain)
    if env and (not username or env.username == username):
        return env
    if prompt:
        import getpass

        site = SITES.get(domain, domain)
        optional = " (leave empty to download without)" if domain != "flame" else ""
        user = username or input(f"{site} username (e-mail){optional}: ").strip()
        if not user:
            return None
        pw = getpass.getpass(f"{site} password for {user}: ")
        return Credentials(user, pw) if pw else None
    return None


def _http_hint(code: int, domain: str) -> str:
    site = SITES.get(domain, domain)
    if code in (401, 403):
        return (
            f"Check your {site} username and password (EMOCA_BLENDER_USERNAME/EMOCA_BLENDER_PASSWORD or the "
            f"prompt) and that you accepted the licence on {site}."
        )
    if code == 404:
        return "The file is not at that address: check --base-url, or the server layout changed (docs/assets.md)."
    if code >= 500:
        return "The server had a problem; run the command again later (it resumes)."
    return ERROR_HINT


ERROR_HINT = "Check your credentials and network, then run the command again (it resumes)."


class _Dropped(Exception):
    """The connection ended before the promised number of bytes arrived."""


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(start, total) from 'bytes START-END/TOTAL' or 'bytes */TOTAL'."""
    if not value:
        return None, None
    m = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value.strip())
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _request(url: str, creds: Credentials | None, have: int) -> urllib.request.Request:
    """The request: credentials as form data (POST) when given, a Range header when resuming at ``have``."""
    headers = {"User-Agent": "emoca-blender-assets/1", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    data = urllib.parse.urlencode({"username": creds.username, "password": creds.password}).encode() if creds else None
    return urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")


def _response_range(resp: Any, have: int, item: FetchItem, url: str) -> tuple[str, int, int | None]:
    """(file mode, bytes already in the part file, total size or None) for a 200/206 response."""
    if resp.status == 206:
        start, total = _content_range(resp.headers.get("Content-Range"))
        if start != have:
            raise _Dropped(f"server resumed at {start}, expected {have}")
        return "ab", have, total
    # 200: the whole file (the server ignored the Range, or a fresh start)
    if resp.headers.get("Content-Type", "").startswith("text/html"):
        raise EmocaError(
            "download_failed",
            f"{item.name}: the server sent a web page instead of {item.filename} (HTTP {resp.status}) from {url}",
            _http_hint(403, item.domain),
        )
    length = resp.headers.get("Content-Length")
    return "wb", 0, int(length) if length and length.isdigit() else None


def _copy_body(
    resp: Any, part: Path, mode: str, done: int, total: int | None, progress: Callable[[int, int | None], None] | None
) -> int:
    """Append (or write) the response body to ``part``; returns the bytes now in it. A read error is a drop."""
    with open(part, mode) as out:
        while True:
            try:
                block = resp.read(CHUNK)
            except (HTTPException, OSError) as exc:
                raise _Dropped(str(exc)) from exc
            if not block:
                return done
            out.write(block)
            done += len(block)
            if progress:
                progress(done, total)


def _download_once(
    url: str,
    part: Path,
    creds: Credentials | None,
    resume: bool,
    item: FetchItem,
    progress: Callable[[int, int | None], None] | None,
    timeout: float,
) -> int:
    """One HTTP request writing into ``part`` (appending when the server honours the Range). Returns the total."""
    have = part.stat().st_size if (resume and part.exists()) else 0
    try:
        resp = urllib.request.urlopen(_request(url, creds, have), timeout=timeout)  # noqa: S310 - URL built by us
    except (HTTPException, ConnectionResetError, TimeoutError) as exc:  # cut before the headers: retry
        raise _Dropped(f"{type(exc).__name__}: {exc}") from exc
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part file may already be complete
            _, total = _content_range(exc.headers.get("Content-Range"))
            if total == have:
                return total
            part.unlink()
            raise _Dropped("range not satisfiable; restarting") from exc
        raise
    with resp:
        mode, have, total = _response_range(resp, have, item, url)
        done = _copy_body(resp, part, mode, have, total, progress)
    if total is not None and done < total:
        raise _Dropped(f"connection closed at {done} of {total} bytes")
    if total is not None and done > total:
        part.unlink()
        raise EmocaError("download_failed", f"{item.name}: received {done} bytes, more than the {total} announced")
    return done if total is None else total


def _download_retrying(
    item: FetchItem,
    url: str,
    part: Path,
    creds: Credentials | None,
    resume: bool,
    retries: int,
    progress: Callable[[int, int | None], None] | None,
    timeout: float,
) -> int:
    """:func:`_download_once` until complete: a drop resumes (up to ``retries`` times), an EMOCA 405 retries
    without credentials; anything else is a ``download_failed`` error. Returns the announced total."""
    attempt = 0
    while True:
        try:
            return _download_once(url, part, creds, resume or attempt > 0, item, progress, timeout)
        except _Dropped as exc:
            attempt += 1
            if attempt > retries:
                raise EmocaError(
                    "download_failed",
                    f"{item.name}: the connection kept dropping ({exc}); {part} keeps what arrived",
                ) from exc
            time.sleep(min(0.2 * attempt, 2.0))
        except urllib.error.HTTPError as exc:
            if exc.code == 405 and creds is not None and item.domain == "emoca":
                creds = None  # the official EMOCA script fetches these with a plain GET
                continue
            raise EmocaError(
                "download_failed",
                f"{item.name}: HTTP {exc.code} {exc.reason} from {url}",
                _http_hint(exc.code, item.domain),
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EmocaError(
                "download_failed",
                f"{item.name}: cannot reach {url}: {reason}",
                "Check the network (and --base-url); run the command again: it resumes.",
            ) from None


def _verify_archive(item: FetchItem, part: Path, total: int, sha256: str | None) -> None:
    """The size, zip integrity (every member's CRC) and sha256 of a finished download; a bad one is deleted."""
    size = part.stat().st_size
    if size != total:
        raise EmocaError("download_failed", f"{item.name}: size {size} bytes, the server announced {total}")
    if not zipfile.is_zipfile(part):
        head = file_head(part, 64)
        part.unlink()
        kind = "a web page" if b"<" in head[:16] else "not a zip archive"
        raise EmocaError(
            "download_failed", f"{item.name}: the download is {kind}, not {item.filename}", _http_hint(403, item.domain)
        )
    try:
        with zipfile.ZipFile(part) as zf:
            bad = zf.testzip()
    except zipfile.BadZipFile as exc:
        bad = str(exc)
    if bad is not None:
        part.unlink()
        raise EmocaError(
            "download_failed",
            f"{item.name}: damaged archive (bad member {bad}); deleted it",
            "Run the command again to download it afresh.",
        )
    if sha256 and sha256_file(part) != sha256.lower():
        part.unlink()
        raise EmocaError(
            "download_failed",
            f"{item.name}: sha256 mismatch (expected {sha256}); deleted it",
            "Run the command again; if it persists the file on the server changed.",
        )


def download(
    item: FetchItem,
    dest_dir: Path,
    creds: Credentials | None,
    base_url: str = DEFAULT_BASE_URL,
    resume: bool = True,
    sha256: str | None = None,
    retries: int = 3,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``item`` into ``dest_dir/<filename>`` via a resumable ``.part`` file; verify size, zip, sha256."""
    url = base_url.rstrip("/") + "/" + item.path
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / item.filename
    part = dest_dir / (item.filename + ".part")
    if part.exists() and not resume:
        part.unlink()
    total = _download_retrying(item, url, part, creds, resume, retries, progress, timeout)
    _verify_archive(item, part, total, sha256)
    os.replace(part, final)
    return final


def fetch(
    names: Sequence[str] | None = None,
    root: Path | str | None = None,
    username: str | None = None,
    password: str | None = None,
    base_url: str | None = None,
    resume: bool = True,
    sha256: dict[str, str] | None = None,
    force: bool = False,
    prompt: bool = False,
    keep_archives: bool = False,
    log: Callable[[str], None] | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> list[str]:
    """Download the official archives ``names`` (default :data:`DEFAULT_FETCH`; "all" for every one) and
    import them into ``root``. Returns the files placed.

    Credentials: the arguments, else ``EMOCA_BLENDER_USERNAME``/``EMOCA_BLENDER_PASSWORD`` (FLAME downloads
    first try ``EMOCA_BLENDER_FLAME_USERNAME``/``..._PASSWORD``), else a terminal prompt when ``prompt``.
    They are posted as form data (``username``, ``password``) and kept in memory only. Archives are downloaded
    to ``root/.downloads`` and deleted after a successful import unless ``keep_archives``.
    """
    root = Path(root) if root is not None else assets_root()
    base_url = base_url or os.environ.get("EMOCA_BLENDER_DOWNLOAD_URL") or DEFAULT_BASE_URL
    log = log or (lambda msg: None)
    wanted = list(names) if names else list(DEFAULT_FETCH)
    if "all" in wanted:
        wanted = list(FETCH_ITEMS)
    unknown = [n for n in wanted if n not in FETCH_ITEMS]
    if unknown:
        raise EmocaError(
            "config_invalid",
            f"unknown asset archive(s): {', '.join(unknown)}",
            f"Choose from: {', '.join(FETCH_ITEMS)} (or 'all').",
        )
    cache: dict[str, Credentials | None] = {}
    placed: list[str] = []
    for name in wanted:
        item = FETCH_ITEMS[name]
        if item.domain not in cache:
            cache[item.domain] = resolve_credentials(item.domain, username, password, prompt)
        creds = cache[item.domain]
        if creds is None and item.domain == "flame":
            raise EmocaError(
                "download_failed",
                f"{item.name}: no {SITES['flame']} credentials",
                "Set EMOCA_BLENDER_USERNAME and EMOCA_BLENDER_PASSWORD (or EMOCA_BLENDER_FLAME_*), or run "
                "`python -m backend assets fetch` in a terminal to be asked.",
            )
        log(f"downloading {item.name} ({item.description}) from {base_url}")
        cb = (lambda done, total, n=name: progress(n, done, total)) if progress else None
        archive = download(
            item, root / ".downloads", creds, base_url, resume, (sha256 or {}).get(name) or item.sha256, progress=cb
        )
        placed += import_assets(archive, root, force=force, log=log)
        if not keep_archives:
            archive.unlink(missing_ok=True)
    return placed


def fetch_items_json() -> list[dict]:
    """Every archive :func:`fetch` knows, as plain dicts (name, path, domain, filename, description, sha256)."""
    return [asdict(i) for i in FETCH_ITEMS.values()]
