"""backend.pickles: the opcode scan finds every global a pickle names without running it; the checkpoint rule."""

from __future__ import annotations

import collections
import os
import pickle
import zipfile

import pytest

from backend import pickles
from emoca_contract.errors import EmocaError


class _Payload:
    """Unpickling this would create ``marker`` (what a malicious file does)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_scan_finds_globals_in_every_protocol(protocol):
    data = pickle.dumps({"a": collections.OrderedDict(x=1), "b": [collections.Counter("ab")]}, protocol=protocol)
    found = pickles.scan_pickle_globals(data)
    assert ("collections", "OrderedDict") in found and ("collections", "Counter") in found
    assert pickles.UNRESOLVED not in found


def test_scan_follows_the_memo():
    # protocol 4 writes the module name once and fetches it from the memo for the second STACK_GLOBAL
    data = pickle.dumps([collections.OrderedDict, collections.Counter, collections.OrderedDict], protocol=4)
    assert data.count(b"collections") == 1
    assert pickles.scan_pickle_globals(data) == {("collections", "OrderedDict"), ("collections", "Counter")}


def test_scan_never_runs_the_payload(tmp_path):
    marker = tmp_path / "pwned"
    for protocol in (2, 4):
        found = pickles.scan_pickle_globals(pickle.dumps(_Payload(str(marker)), protocol=protocol))
        assert (os.mkdir.__module__, "mkdir") in found
        assert not pickles.checkpoint_global_allowed(os.mkdir.__module__, "mkdir")
    assert not marker.exists()


def test_unresolvable_stack_global_is_reported():
    # STACK_GLOBAL on a module name built at load time (not a plain string): no rule can allow it
    crafted = b"\x80\x04" + b"\x8c\x01a\x8c\x01b\x86" + b"\x8c\x06system\x93."  # (a, b) tuple, 'system'
    assert pickles.scan_pickle_globals(crafted) == {pickles.UNRESOLVED}
    with pytest.raises(ValueError):
        pickles.scan_pickle_globals(b"\x80\x02cposix\nsys")  # truncated


def test_checkpoint_globals_of_zip_and_legacy_files(tmp_path):
    obj = pickle.dumps({"state_dict": collections.OrderedDict()}, protocol=2)
    z = tmp_path / "new.ckpt"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("archive/data.pkl", obj)
        zf.writestr("archive/data/0", b"\x00" * 16)
    assert pickles.checkpoint_globals(z) == {("collections", "OrderedDict")}
    legacy = tmp_path / "old.ckpt"
    evil = pickle.dumps(_Payload(str(tmp_path / "pwned")), protocol=2)
    legacy.write_bytes(b"".join(pickle.dumps(x, protocol=2) for x in (1, 1001, {})) + evil + pickle.dumps([]))
    assert pickles.unsafe_checkpoint_globals(legacy) == [f"{os.mkdir.__module__}.mkdir"]
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_rule_names():
    allowed = [
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch", "FloatStorage"),
        ("torch", "bfloat16"),
        ("collections", "OrderedDict"),
        ("omegaconf.dictconfig", "DictConfig"),
        ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
        ("__builtin__", "set"),  # Python 2 spelling
    ]
    refused = [("posix", "system"), ("builtins", "eval"), ("torch", "load"), ("torch._utils", "os"), pickles.UNRESOLVED]
    assert all(pickles.checkpoint_global_allowed(*g) for g in allowed)
    assert not any(pickles.checkpoint_global_allowed(*g) for g in refused)


def test_restricted_unpickler_refuses_code(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Payload(str(tmp_path / "pwned")), protocol=2))
    with pytest.raises(EmocaError) as err:
        pickles.restricted_load(path)
    assert err.value.code == "unsafe_file" and "mkdir" in err.value.message and str(path) in err.value.message
    assert not (tmp_path / "pwned").exists()


def test_a_plain_pickle_saved_as_a_checkpoint_is_reported_by_its_global(tmp_path):
    """Issue 13 case 8: an old-format (non-zip) checkpoint that is one pickle naming code was refused as
    "truncated or corrupt" (the scan stopped at the missing second pickle); the global it names is reported."""
    marker = tmp_path / "pwned"
    path = tmp_path / "old.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": {}, "hyper_parameters": _Payload(str(marker))}, protocol=2))
    assert pickles.unsafe_checkpoint_globals(path) == [f"{os.mkdir.__module__}.mkdir"]
    with pytest.raises(ValueError):
        pickles.checkpoint_globals(path)  # still not a complete torch.save file
    cut = tmp_path / "cut.ckpt"  # damaged before any code is named: corrupt, not unsafe
    cut.write_bytes(pickle.dumps({"state_dict": collections.OrderedDict(a=1)}, protocol=2)[:-2])
    with pytest.raises(ValueError):
        pickles.unsafe_checkpoint_globals(cut)
    assert not marker.exists()
