"""`assets fetch` against a local HTTP server that behaves like the download endpoints: credentials posted as
form data, Range requests, and a connection that drops mid-file."""

from __future__ import annotations

import hashlib

import pytest

from backend import assets
from backend.app.cli import main
from emoca_contract.errors import EmocaError
from tests.assets import helpers as H

USER, PASSWORD = "animator@example.org", "s3cr3t-Pässwörd"
FLAME_URL = "/download.php?domain=flame&resume=1&sfile=FLAME2020.zip"
MODEL_URL = "/emoca/assets/EMOCA/models/EMOCA_v2_mp.zip"


@pytest.fixture
def archives(asset_env):
    """The two archives the server offers: FLAME2020.zip and an EMOCA model zip (stored, so sizes are real)."""
    flame = H.zip_bytes({"generic_model.pkl": H.flame_pkl_bytes(), "Readme.pdf": b"%PDF" + b"x" * 5000})
    built = asset_env / "built"
    H.write_model_folder(built, "EMOCA_v2_mp")
    model = H.zip_bytes(H.folder_to_zip_entries(built / "EMOCA_v2_mp", "EMOCA_v2_mp"))
    return {FLAME_URL: flame, MODEL_URL: model}


def _all_written_bytes(*folders) -> bytes:
    return b"".join(p.read_bytes() for d in folders if d.exists() for p in d.rglob("*") if p.is_file())


def test_fetch_resumes_after_a_dropped_connection(root, asset_env, archives, monkeypatch):
    monkeypatch.setenv("EMOCA_BLENDER_USERNAME", USER)
    monkeypatch.setenv("EMOCA_BLENDER_PASSWORD", PASSWORD)
    with H.DownloadServer(archives, USER, PASSWORD, drop_once=(FLAME_URL, MODEL_URL)) as srv:
        placed = assets.fetch(
            ["FLAME2020", "EMOCA_v2_mp"],
            root,
            base_url=srv.base_url,
            sha256={"FLAME2020": hashlib.sha256(archives[FLAME_URL]).hexdigest()},
        )
    assert str(root / "FLAME/geometry/generic_model.pkl") in placed
    st = {s.key: s for s in assets.status(root, keys=["flame2020", "model:EMOCA_v2_mp"])}
    assert all(s.valid for s in st.values()), {k: s.message for k, s in st.items()}
    # each file: one request cut in the middle, then one Range request from exactly where it stopped
    for url, data in archives.items():
        reqs = [r for r in srv.log.requests if r["path"] == url]
        assert [r["range"] for r in reqs] == [None, f"bytes={len(data) // 2}-"]
        assert all(r["method"] == "POST" and r["creds_ok"] for r in reqs)
    # archives are removed after import, nothing half-done remains
    assert not list((root / ".downloads").iterdir())
    # the credentials were never written anywhere
    written = _all_written_bytes(asset_env)
    for secret in (PASSWORD, USER):
        for enc in ("utf-8", "latin-1"):
            try:
                assert secret.encode(enc) not in written
            except UnicodeEncodeError:
                pass
        assert secret.replace("@", "%40").encode() not in written


def test_resume_across_runs_from_a_part_file(root, archives, asset_env):
    creds = assets.Credentials(USER, PASSWORD)
    item = assets.FETCH_ITEMS["FLAME2020"]
    dest = root / ".downloads"
    with H.DownloadServer(archives, USER, PASSWORD, drop_once=(FLAME_URL,)) as srv:
        with pytest.raises(EmocaError) as e:
            assets.download(item, dest, creds, srv.base_url, retries=0)
        assert e.value.code == "download_failed"
        part = dest / "FLAME2020.zip.part"
        assert part.stat().st_size == len(archives[FLAME_URL]) // 2  # what arrived is kept
        out = assets.download(item, dest, creds, srv.base_url, sha256=hashlib.sha256(archives[FLAME_URL]).hexdigest())
    assert out.read_bytes() == archives[FLAME_URL] and not part.exists()
    assert srv.log.requests[-1]["range"] == f"bytes={len(archives[FLAME_URL]) // 2}-"


def test_no_resume_starts_over(root, archives):
    dest = root / ".downloads"
    dest.mkdir(parents=True)
    (dest / "FLAME2020.zip.part").write_bytes(b"stale bytes from another file")
    with H.DownloadServer(archives, USER, PASSWORD) as srv:
        out = assets.download(
            assets.FETCH_ITEMS["FLAME2020"], dest, assets.Credentials(USER, PASSWORD), srv.base_url, resume=False
        )
    assert out.read_bytes() == archives[FLAME_URL] and srv.log.requests[0]["range"] is None


def test_a_wrong_part_file_is_caught_by_verification(root, archives):
    """A .part from another file resumes into a damaged archive: verification deletes it, a rerun succeeds."""
    dest = root / ".downloads"
    dest.mkdir(parents=True)
    (dest / "FLAME2020.zip.part").write_bytes(b"Z" * 100)
    creds = assets.Credentials(USER, PASSWORD)
    with H.DownloadServer(archives, USER, PASSWORD) as srv:
        with pytest.raises(EmocaError) as e:
            assets.download(assets.FETCH_ITEMS["FLAME2020"], dest, creds, srv.base_url)
        assert e.value.code == "download_failed"
        assert not (dest / "FLAME2020.zip.part").exists()
        out = assets.download(assets.FETCH_ITEMS["FLAME2020"], dest, creds, srv.base_url)
    assert out.read_bytes() == archives[FLAME_URL]


@pytest.mark.parametrize("bad_login", ["401", "html"])
def test_wrong_credentials(root, archives, bad_login):
    with H.DownloadServer(archives, USER, PASSWORD, bad_login=bad_login) as srv:
        with pytest.raises(EmocaError) as e:
            assets.fetch(["FLAME2020"], root, username=USER, password="wrong", base_url=srv.base_url)
    err = e.value
    assert err.code == "download_failed"
    assert ("HTTP 401" in err.message) if bad_login == "401" else ("web page" in err.message)
    assert "flame.is.tue.mpg.de" in err.hint and "licence" in err.hint
    assert "wrong" not in err.message + err.hint  # the password is not echoed
    assert not (root / "FLAME").exists()
    assert not list((root / ".downloads").glob("*.zip"))


def test_not_found_and_unreachable(root, archives):
    with H.DownloadServer(archives, USER, PASSWORD) as srv:
        with pytest.raises(EmocaError) as e:
            assets.fetch(["FLAME2023"], root, username=USER, password=PASSWORD, base_url=srv.base_url)
        assert "HTTP 404" in e.value.message and "--base-url" in e.value.hint
        port = srv.httpd.server_address[1]
    with pytest.raises(EmocaError) as e:
        assets.fetch(["FLAME2020"], root, username=USER, password=PASSWORD, base_url=f"http://127.0.0.1:{port}")
    assert e.value.code == "download_failed" and "cannot reach" in e.value.message


def test_sha256_mismatch_is_refused(root, archives):
    with H.DownloadServer(archives, USER, PASSWORD) as srv:
        with pytest.raises(EmocaError) as e:
            assets.fetch(
                ["FLAME2020"],
                root,
                username=USER,
                password=PASSWORD,
                base_url=srv.base_url,
                sha256={"FLAME2020": "0" * 64},
            )
    assert e.value.code == "download_failed" and "sha256" in e.value.message
    assert not (root / "FLAME").exists() and not list((root / ".downloads").iterdir())


def test_flame_needs_credentials(root):
    with pytest.raises(EmocaError) as e:
        assets.fetch(["FLAME2020"], root, base_url="http://127.0.0.1:9")
    assert e.value.code == "download_failed" and "EMOCA_BLENDER_USERNAME" in e.value.hint


def test_flame_specific_credentials_win(monkeypatch):
    monkeypatch.setenv("EMOCA_BLENDER_USERNAME", "emoca-user")
    monkeypatch.setenv("EMOCA_BLENDER_PASSWORD", "p1")
    monkeypatch.setenv("EMOCA_BLENDER_FLAME_USERNAME", "flame-user")
    monkeypatch.setenv("EMOCA_BLENDER_FLAME_PASSWORD", "p2")
    assert assets.resolve_credentials("flame").username == "flame-user"
    assert assets.resolve_credentials("emoca").username == "emoca-user"
    assert "p2" not in repr(assets.resolve_credentials("flame"))


def test_prompted_credentials(monkeypatch):
    import getpass

    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or USER)
    monkeypatch.setattr(getpass, "getpass", lambda prompt: asked.append(prompt) or PASSWORD)
    creds = assets.resolve_credentials("flame", prompt=True)
    assert (creds.username, creds.password) == (USER, PASSWORD) and "flame.is.tue.mpg.de" in asked[0]
    monkeypatch.setattr("builtins.input", lambda prompt: "")  # EMOCA: empty = download without an account
    assert assets.resolve_credentials("emoca", prompt=True) is None
    assert assets.resolve_credentials("flame", prompt=False) is None


def test_unknown_name(root):
    with pytest.raises(EmocaError) as e:
        assets.fetch(["EMOCA_v3"], root)
    assert e.value.code == "config_invalid" and "EMOCA_v2_mp" in e.value.hint


def test_cli_fetch(root, archives, monkeypatch, capsys):
    monkeypatch.setenv("EMOCA_BLENDER_USERNAME", USER)
    monkeypatch.setenv("EMOCA_BLENDER_PASSWORD", PASSWORD)
    with H.DownloadServer(archives, USER, PASSWORD) as srv:
        # without a terminal the licence confirmation must be given explicitly
        assert main(["assets", "--root", str(root), "fetch", "FLAME2020", "--base-url", srv.base_url]) == 2
        assert "--yes" in capsys.readouterr().err
        assert main(["assets", "--root", str(root), "fetch", "FLAME2020", "--base-url", srv.base_url, "--yes"]) == 0
    assert "fetched and imported 1 file(s)" in capsys.readouterr().out
    assert assets.status(root, keys=["flame2020"])[0].valid is True
    assert main(["assets", "fetch", "--list"]) == 0
    assert "EMOCA_v2_lr_mse_20" in capsys.readouterr().out


def test_emoca_assets_fall_back_to_a_plain_get(root, archives):
    """The official EMOCA script fetches its zips with a plain GET: with no EMOCA credentials we do the same,
    and a server that refuses the POST (405) gets the GET too."""
    with H.DownloadServer(archives, USER, PASSWORD, get_only=(MODEL_URL,)) as srv:
        assets.fetch(["EMOCA_v2_mp"], root, base_url=srv.base_url)
        assert [r["method"] for r in srv.log.requests] == ["GET"]
        assets.fetch(["EMOCA_v2_mp"], root / "second", username=USER, password=PASSWORD, base_url=srv.base_url)
        assert [r["method"] for r in srv.log.requests[1:]] == ["POST", "GET"]
    assert assets.status(root / "second", keys=["model:EMOCA_v2_mp"])[0].valid is True
