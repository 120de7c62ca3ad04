"""Loading the official EMOCA model folders and DECA's ``deca_model.tar``, safely and strictly.

Safety: checkpoints are pickles. They are read with ``torch.load(weights_only=True)`` plus an explicit
allow-list of the harmless classes Lightning stores in ``hyper_parameters`` (OmegaConf containers and nodes),
named in ``backend.pickles`` (the one module of unpickling rules); anything else is refused (``unsafe_file``),
never loaded with ``weights_only=False``.

Strictness (emoca.md 2.3, 10.3): the original loaders skip mismatched keys silently. Here every network key
must be present with the right shape; a missing, unexpected or mis-shaped key is a ``checkpoint_mismatch``
error that lists them. Keys of loss networks and of FLAME/renderer buffers are ignored by rule
(:data:`IGNORED_PREFIXES`); the FLAME buffers can be compared with the user's FLAME
(:func:`flame_buffer_mismatches`).
"""

from __future__ import annotations

import importlib
import math
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend import pickles
from backend.models.emoca import EmocaConfig, EmocaNet
from emoca_contract.errors import EmocaError

# Network submodules whose weights come from the checkpoint (``deca.`` stripped).
NETWORK_PREFIXES = ("E_flame.", "E_expression.", "E_detail.", "D_detail.")
# Checkpoint keys that are not network weights and are ignored BY RULE (emoca.md 2.3): loss networks
# (perceptual VGG-19, identity net, VGG loss, emotion net, lip-reading net) and fixed buffers (FLAME,
# albedo, renderer, UV masks, fixed displacement) that we rebuild from the user's own asset files.
IGNORED_PREFIXES = (
    "deca.perceptual_loss.",
    "deca.id_loss.",
    "deca.vgg_loss.",
    "deca.emonet_loss.",
    "deca.lipread_loss.",
    "emonet_loss.",
    "emonet.",
    "lipread_loss.",
    "id_loss.",
    "deca.flame.",
    "deca.flametex.",
    "deca.render.",
    "deca.uv_face_eye_mask",
    "deca.uv_face_mask",
    "deca.fixed_uv_dis",
)
DECA_TAR_KEYS = ("E_flame", "E_detail", "D_detail")


# ---------------------------------------------------------------------------------------------------------------
# safe torch.load
# ---------------------------------------------------------------------------------------------------------------
def _resolve(full_name: str) -> Any:
    """``"omegaconf.dictconfig.DictConfig"`` -> the class itself (the module is imported)."""
    module, _, attr = full_name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _allowed_globals() -> list:
    """What ``torch.load(weights_only=True)`` admits beyond torch's own data types: the hyper-parameter classes
    named in ``backend.pickles.CHECKPOINT_HPARAM_GLOBALS`` and the Lightning callback stand-ins."""
    return [_resolve(n) for n in pickles.CHECKPOINT_HPARAM_GLOBALS] + pickles.lightning_callback_stubs()


def _unsafe_globals(path: Path) -> list[str]:
    """The globals of ``path`` the checkpoint rule refuses ([] when unreadable: only used for the message)."""
    try:
        return pickles.unsafe_checkpoint_globals(path)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, KeyError):
        return []


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with the explicit allow-list above.

    Errors: ``asset_missing`` (no such file), ``asset_invalid`` (a folder, truncated/corrupt, not a torch
    file), ``unsafe_file`` (it references code outside the allow-list).
    """
    path = Path(path)
    if not path.exists():
        raise EmocaError("asset_missing", f"{path}: no such file")
    if path.is_dir():
        raise EmocaError("asset_invalid", f"{path} is a folder; expected a checkpoint file saved by torch.save")
    if path.stat().st_size == 0:
        raise EmocaError("asset_invalid", f"{path} is empty (0 bytes); the download or copy is incomplete")
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # the weights-only unpickler reports refused globals and plain corruption with the same exception type
        bad = _unsafe_globals(path)
        m = re.search(r"unsupported global:? GLOBAL (\S+)", str(exc), flags=re.IGNORECASE)
        what = ", ".join(bad) or (m.group(1) if m else "")
        if what:
            raise EmocaError(
                "unsafe_file",
                f"{path} references code that is not plain data ({what}); refusing to load it",
            ) from None
        raise _corrupt(path, exc) from None
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
        KeyError,
        AttributeError,
        TypeError,
        IndexError,
    ) as exc:
        raise _corrupt(path, exc) from None


def _corrupt(path: Path, exc: BaseException) -> EmocaError:
    size = path.stat().st_size
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip() and "weights_only" not in ln]
    first = lines[-1][:200] if lines else type(exc).__name__
    return EmocaError(
        "asset_invalid",
        f"{path} ({size} bytes) is truncated or corrupt and cannot be read as a torch checkpoint ({first})",
        "Download the file again; its size should match the official archive.",
    )


# ---------------------------------------------------------------------------------------------------------------
# checkpoint selection (emoca.md 2.2)
# ---------------------------------------------------------------------------------------------------------------
def checkpoint_score(path: Path) -> float | None:
    """The float after the last '=' in the stem (``...val_loss/dataloader_idx_0=9.44489288.ckpt`` -> 9.44...);
    None for 'last' checkpoints or names without a number."""
    stem = path.stem
    if "last" in stem or "=" not in stem:
        return None
    try:
        value = float(stem.rsplit("=", 1)[1])
    except ValueError:
        return None
    return None if math.isnan(value) else value


def locate_checkpoint(folder: str | os.PathLike, mode: str = "best") -> Path:
    """``rglob('*.ckpt')`` sorted; 'best' = min score (ignoring 'last'), 'latest' = the last one sorted.

    When no file has a score, 'best' falls back to the last file sorted (e.g. only ``last.ckpt``).
    """
    folder = Path(folder)
    if mode not in ("best", "latest"):
        raise EmocaError("config_invalid", f"checkpoint mode {mode!r}: expected 'best' or 'latest'")
    if not folder.is_dir():
        raise EmocaError("asset_missing", f"{folder}: checkpoint folder not found")
    files = sorted(folder.rglob("*.ckpt"))
    if not files:
        raise EmocaError("asset_missing", f"{folder}: no .ckpt file in it or its sub-folders")
    if mode == "latest":
        return files[-1]
    scored = [(s, p) for p in files if (s := checkpoint_score(p)) is not None]
    if not scored:
        return files[-1]
    return min(scored, key=lambda sp: sp[0])[1]


# ---------------------------------------------------------------------------------------------------------------
# strict state-dict loading
# ---------------------------------------------------------------------------------------------------------------
def _shape(t: Any) -> tuple:
    return tuple(t.shape) if hasattr(t, "shape") else ()


def _listing(title: str, items: list[str], limit: int = 12) -> str:
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    by_module = ""
    if len(items) > limit:  # long lists: say which submodules they belong to
        counts: dict[str, int] = {}
        for item in items:
            counts[item.split(".", 1)[0]] = counts.get(item.split(".", 1)[0], 0) + 1
        by_module = " [by module: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + "]"
    return f"{title} ({len(items)}){by_module}: " + ", ".join(items[:limit]) + more


def load_network_state(net: EmocaNet, state: Mapping[str, Any], source: str) -> None:
    """Strictly load module-local keys (``E_flame.encoder.conv1.weight``...) into ``net``.

    With ``deca_parallel`` the shared ``E_expression.resnet.*`` copy of E_flame may be absent (taken from
    E_flame) or present (then it must equal E_flame's weights).
    """
    expected = net.state_dict()
    state = dict(state)
    problems: list[str] = []
    shared = [k for k in expected if k.startswith("E_expression.resnet.")]
    for key in shared:
        twin = "E_flame." + key[len("E_expression.resnet.") :]
        if key not in state:
            if twin in state:
                state[key] = state[twin]
        elif (
            twin in state
            and _shape(state[key]) == _shape(state[twin])
            and not torch.equal(torch.as_tensor(state[key]), torch.as_tensor(state[twin]))
        ):
            problems.append(f"{key} differs from {twin} (deca_parallel shares E_flame's backbone)")
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    misshaped = sorted(
        f"{k} expected {tuple(expected[k].shape)} found {_shape(state[k])}"
        for k in expected
        if k in state and tuple(expected[k].shape) != _shape(state[k])
    )
    if missing or unexpected or misshaped or problems:
        parts = [
            f"{source} does not fit the network built from its config ({net.config.deca_class}, "
            f"expression_backbone={net.config.expression_backbone})"
        ]
        if missing:
            parts.append(_listing("missing keys", missing))
        if unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if misshaped:
            parts.append(_listing("mis-shaped keys", misshaped))
        if problems:
            parts.append(_listing("inconsistent keys", problems))
        raise EmocaError("checkpoint_mismatch", "; ".join(parts))
    bad_type = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad_type:
        raise EmocaError("checkpoint_mismatch", _listing(f"{source}: entries that are not tensors", bad_type))
    net.load_state_dict(state, strict=True)


def split_lightning_state(state: Mapping[str, Any], source: str) -> tuple[dict, dict[str, int]]:
    """Lightning ``state_dict`` -> (module-local network keys, {ignored prefix: count}).

    Unknown keys (neither network nor ignored by rule) raise ``checkpoint_mismatch``.
    """
    network: dict[str, Any] = {}
    ignored: dict[str, int] = {}
    unknown: list[str] = []
    for key, value in state.items():
        local = key[len("deca.") :] if key.startswith("deca.") else None
        if local is not None and local.startswith(NETWORK_PREFIXES):
            network[local] = value
            continue
        rule = next((p for p in IGNORED_PREFIXES if key.startswith(p)), None)
        if rule is not None:
            ignored[rule] = ignored.get(rule, 0) + 1
        else:
            unknown.append(key)
    if unknown:
        raise EmocaError(
            "checkpoint_mismatch",
            f"{source}: "
            + _listing("unexpected keys (neither network weights nor known loss/buffer keys)", sorted(unknown)),
        )
    return network, ignored


# ---------------------------------------------------------------------------------------------------------------
# EMOCA model folder / DECA tar
# ---------------------------------------------------------------------------------------------------------------
def read_cfg(path: Path) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.load(path)
    except Exception as exc:  # noqa: BLE001 - any YAML/OmegaConf failure is a bad file
        raise EmocaError("config_invalid", f"{path}: cannot be read as YAML ({exc})") from None


def load_emoca_folder(
    folder: str | os.PathLike,
    device: str | torch.device = "cpu",
    mode: str = "best",
    flame: Any = None,
    strict_flame: bool = False,
) -> tuple[EmocaNet, dict]:
    """An official EMOCA model folder (``cfg.yaml`` + ``<stage>/checkpoints/**/*.ckpt``) -> (net in eval, info).

    ``flame`` (a FlameData) is compared with the checkpoint's embedded FLAME buffers: differences are listed in
    ``info['warnings']``, or raise ``flame_mismatch`` when ``strict_flame``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        if folder.is_file() and folder.suffix == ".ckpt":
            raise EmocaError(
                "asset_invalid", f"{folder} is a checkpoint file; pass its model folder (the one with cfg.yaml) instead"
            )
        raise EmocaError("asset_missing", f"{folder}: model folder not found")
    cfg_path = folder / "cfg.yaml"
    if not cfg_path.is_file() and ((folder / "data.pkl").is_file() or any(folder.glob("*/data.pkl"))):
        raise EmocaError(
            "asset_invalid",
            f"{folder} looks like an extracted deca_model.tar. deca_model.tar is a single file written by "
            "torch.save, not a tar archive: do not extract it; pass the deca_model.tar file itself",
        )
    if not cfg_path.is_file():
        raise EmocaError(
            "asset_invalid",
            f"{folder} has no cfg.yaml; expected an EMOCA model folder "
            "(cfg.yaml, coarse/checkpoints, detail/checkpoints)",
        )
    config = EmocaConfig.from_cfg(read_cfg(cfg_path), source=str(cfg_path))
    stage = config.stage or config.mode
    ckpt_dir = folder / stage / "checkpoints"
    if not ckpt_dir.is_dir():
        ckpt_dir = folder / stage
    ckpt_path = locate_checkpoint(ckpt_dir, mode)
    ckpt = safe_torch_load(ckpt_path)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise EmocaError("asset_invalid", f"{ckpt_path}: not a Lightning checkpoint (no 'state_dict' entry)")
    state = ckpt["state_dict"]
    network, ignored = split_lightning_state(state, str(ckpt_path))
    net = EmocaNet(config)
    load_network_state(net, network, str(ckpt_path))
    info: dict = {
        "name": folder.name,
        "kind": "EMOCA" if config.has_expression else "DECA",
        "trained": True,
        "config": config.to_dict(),
        "checkpoint": str(ckpt_path),
        "stage": stage,
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "lightning_version": ckpt.get("pytorch-lightning_version"),
        "ignored": ignored,
        "warnings": [],
        "has_flame_buffers": any(k.startswith("deca.flame.") for k in state),
    }
    if flame is not None:
        check_flame(state, flame, info, strict_flame, str(ckpt_path))
    return net.to(device).eval(), info


def check_flame(state: Mapping[str, Any], flame: Any, info: dict, strict: bool, source: str) -> None:
    mismatches = flame_buffer_mismatches(state, flame)
    info["flame_mismatches"] = mismatches
    if mismatches:
        msg = (
            f"{source} was trained with a different FLAME model than {getattr(flame, 'name', 'the one given')}: "
            + "; ".join(mismatches)
        )
        if strict:
            raise EmocaError("flame_mismatch", msg)
        info["warnings"].append(msg)


def load_deca_tar(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[EmocaNet, dict]:
    """DECA's ``deca_model.tar``: a torch.save dict (NOT a tar archive) with E_flame, E_detail, D_detail."""
    path = Path(path)
    if path.is_dir():
        raise EmocaError(
            "asset_invalid",
            f"{path} is a folder. deca_model.tar is a single file written by torch.save, not a tar archive: "
            "do not extract it; pass the deca_model.tar file itself",
        )
    data = safe_torch_load(path)
    if not isinstance(data, Mapping) or not all(k in data for k in DECA_TAR_KEYS):
        found = sorted(map(str, data.keys())) if isinstance(data, Mapping) else type(data).__name__
        raise EmocaError(
            "checkpoint_mismatch", f"{path}: expected a dict with {', '.join(DECA_TAR_KEYS)}; found {found}"
        )
    net = EmocaNet(EmocaConfig.deca())
    state = {f"{name}.{k}": v for name in DECA_TAR_KEYS for k, v in data[name].items()}
    load_network_state(net, state, str(path))
    info: dict[str, Any] = {
        "name": path.stem,
        "kind": "DECA",
        "trained": True,
        "config": net.config.to_dict(),
        "checkpoint": str(path),
        "stage": "detail",
        "global_step": data.get("global_step"),
        "ignored": {k: 1 for k in data if k not in DECA_TAR_KEYS},
        "warnings": [],
        "has_flame_buffers": False,
    }
    return net.to(device).eval(), info


# ---------------------------------------------------------------------------------------------------------------
# FLAME buffers embedded in a checkpoint vs the user's FLAME
# ---------------------------------------------------------------------------------------------------------------
def flame_buffers(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The ``deca.flame.*`` (or ``flame.*``) buffers of a state dict, as numpy, keyed without the prefix."""
    out = {}
    for key, value in state.items():
        for prefix in ("deca.flame.", "flame."):
            if key.startswith(prefix):
                out[key[len(prefix) :]] = np.asarray(torch.as_tensor(value).detach().cpu().numpy())
    return out


def expected_flame_buffers(flame: Any, n_shape: int = 100, n_exp: int = 50) -> dict[str, np.ndarray]:
    """What DECA/EMOCA embed for a FlameData (emoca.md 2.5): shapedirs = first n_shape identity | first n_exp
    expression components (V, 3, n_shape+n_exp); posedirs reshaped (V*3, 36) and transposed -> (36, V*3)."""
    f = flame.truncated(n_shape, n_exp)
    v = f.v_template.shape[0]
    return {
        "v_template": np.asarray(f.v_template, np.float32),
        "shapedirs": np.concatenate([f.shapedirs, f.expdirs], axis=2).astype(np.float32),
        "posedirs": np.asarray(f.posedirs, np.float32).reshape(v * 3, -1).T,
        "J_regressor": np.asarray(f.J_regressor, np.float32),
        "lbs_weights": np.asarray(f.weights, np.float32),
        "faces_tensor": np.asarray(f.faces, np.int64),
        "parents": np.asarray(f.parents, np.int64),
    }


def flame_buffer_mismatches(state: Mapping[str, Any], flame: Any, rtol: float = 1e-4, atol: float = 1e-6) -> list[str]:
    """Compare a checkpoint's embedded FLAME buffers with ``flame`` (FlameData). One line per difference;
    [] when they agree or when the checkpoint embeds no FLAME buffers (DECA's tar)."""
    found = flame_buffers(state)
    if not found:
        return []
    n_total = found["shapedirs"].shape[2] if "shapedirs" in found and found["shapedirs"].ndim == 3 else 150
    n_exp = min(50, flame.n_exp)
    n_shape = n_total - n_exp
    if n_shape > flame.n_shape:
        return [
            f"shapedirs: the checkpoint has {n_total} components, the FLAME model only {flame.n_shape}+{flame.n_exp}"
        ]
    expected = expected_flame_buffers(flame, n_shape, n_exp)
    out = []
    for name, want in expected.items():
        if name not in found:
            out.append(f"{name}: not in the checkpoint")
            continue
        have = found[name]
        if have.shape != want.shape:
            out.append(f"{name}: checkpoint {have.shape} vs FLAME {want.shape}")
        elif np.issubdtype(want.dtype, np.integer):
            n = int(np.sum(have != want))
            if n:
                out.append(f"{name}: {n} entries differ")
        elif not np.allclose(have, want, rtol=rtol, atol=atol):
            out.append(f"{name}: values differ (max abs difference {float(np.max(np.abs(have - want))):.3g})")
    return out
