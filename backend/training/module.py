"""Lightning modules: EMOCA's coarse expression training (only E_expression trains) and the emotion network.

EMOCA coarse stage (emoca.md §1.7, §5): E_flame (frozen, always eval) gives shape/tex/pose/cam/light, the
trainable E_expression gives exp; FLAME -> weak-perspective projection -> textured SH render on black; losses
from `backend.training.losses` with the official weights. The module's network lives at ``self.deca`` so its
state-dict keys are ``deca.E_flame.*``, ``deca.E_expression.*``, ... exactly the official checkpoint layout
(loss networks under ``emonet_loss.*`` and FLAME buffers under ``deca.flame.*``, which the loader ignores by
rule): a checkpoint written by Lightning in ``<run>/coarse/checkpoints`` next to a ``cfg.yaml`` IS an EMOCA
model folder that `backend.models.loading.load_emoca_folder` (and so capture) loads.

Speed and precision: the ResNet-50 encoders hold their weights and take their input in channels_last (oneDNN's
and cuDNN's fast layout; the same values to float rounding). Under bf16 autocast (``trainer.precision:
bf16-mixed``) only the networks run in bf16: FLAME, projection, rendering and the losses always run in float32.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch
from torch import nn

from backend.training import losses as LS
from emoca_contract.errors import EmocaError

if TYPE_CHECKING:
    from backend.flame.layer import FLAME
    from backend.models.emoca import EmocaNet


class TinyEncoder(nn.Module):
    """A small CNN stand-in for the ResNet-50 expression encoder, for the tiny CPU config ONLY (not loadable
    by capture). Keeps the final 4x4 spatial map (flattened, not pooled) and sees pixel coordinates as two
    extra input channels (CoordConv): expressions are WHERE things move. (B, 3, S, S) [0,1] -> (B, outsize)."""

    def __init__(self, outsize: int, width: int = 24):
        super().__init__()
        chans = [5, width, width * 2, width * 4, width * 4]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        self.encoder = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.layers = nn.Sequential(nn.Linear(chans[-1] * 16, 256), nn.ReLU(inplace=True), nn.Linear(256, outsize))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        B, _, H, W = images.shape
        ys = torch.linspace(-1, 1, H, device=images.device, dtype=images.dtype).view(1, 1, H, 1).expand(B, 1, H, W)
        xs = torch.linspace(-1, 1, W, device=images.device, dtype=images.dtype).view(1, 1, 1, W).expand(B, 1, H, W)
        return self.layers(self.encoder(torch.cat([images, xs, ys], 1)))


def _cfg_get(cfg: Any, path: str, default: Any = None) -> Any:
    cur = cfg
    for part in path.split("."):
        if cur is None:
            return default
        cur = cur.get(part) if isinstance(cur, dict) else getattr(cur, part, None)
    return default if cur is None else cur


def build_flame(cfg: dict):
    """(FLAME layer, texture (1,3,H,W), uvs, uv_faces, name) from ``model.flame`` (a FLAME .pkl/.npz) or the
    synthetic test head when it is null."""
    import numpy as np

    from backend.flame.layer import FLAME

    flame_path = _cfg_get(cfg, "model.flame")
    if flame_path:
        from backend.flame.io import load_flame
        from backend.flame.landmarks import load_landmark_embedding, load_mediapipe_embedding

        data = load_flame(flame_path)
        emb_path = _cfg_get(cfg, "model.landmark_embedding")
        if not emb_path:
            raise EmocaError(
                "config_invalid",
                "model.landmark_embedding is required with model.flame",
                "Point it at FLAME/geometry/landmark_embedding.npy.",
            )
        emb = load_landmark_embedding(emb_path)
        mp_path = _cfg_get(cfg, "model.mediapipe_embedding")
        mp = load_mediapipe_embedding(mp_path) if mp_path else None
        flame = FLAME(data, landmark_embedding=emb, mediapipe_embedding=mp)
        tex = torch.full((1, 3, 4, 4), 0.5)  # EMOCA with use_texture off: constant grey albedo
    else:
        from backend.synthetic.head import synthetic_head, synthetic_landmark_embedding, synthetic_texture

        data = synthetic_head(int(_cfg_get(cfg, "model.head_seed", 0)))
        flame = FLAME(
            data,
            landmark_embedding=synthetic_landmark_embedding(data),
            mediapipe_embedding=synthetic_mediapipe_embedding(data, _cfg_get(cfg, "model.mediapipe_indices")),
        )
        tex = torch.from_numpy(np.ascontiguousarray(synthetic_texture())).permute(2, 0, 1)[None].float() / 255
    uvs = torch.as_tensor(data.uvs if data.uvs is not None else np.zeros((data.n_vertices, 2)), dtype=torch.float32)
    uvf = torch.as_tensor(data.uv_faces if data.uv_faces is not None else data.faces).long()
    return flame, tex, uvs, uvf, data.name


def synthetic_mediapipe_embedding(head, indices):
    """The synthetic head is built on mediapipe's 468-point topology (vertex k IS mediapipe point k), so a v2
    embedding of any mediapipe indices (< 468) is exact: the face holding vertex k, barycentric 1 on it."""
    if not indices:
        return None
    import numpy as np

    from backend.flame.landmarks import MediapipeEmbedding

    faces = np.asarray(head.faces)
    f_idx, bary = [], []
    for k in indices:
        k = int(k)
        if not 0 <= k < 468:
            raise EmocaError(
                "config_invalid",
                f"model.mediapipe_indices: {k} is not a mediapipe face-mesh vertex (0..467) of the synthetic head",
            )
        f = int(np.nonzero((faces == k).any(axis=1))[0][0])
        f_idx.append(f)
        bary.append((faces[f] == k).astype(np.float32))
    return MediapipeEmbedding(faces=np.asarray(f_idx, np.int64), bary=np.stack(bary))


class EmocaCoarseModule(L.LightningModule):
    """EMOCA coarse stage. ``cfg``: the merged training config as a plain dict (see configs/emoca_v1.yaml)."""

    # EmocaNet, or (tiny config) a ModuleDict holding only E_expression; both get the FLAME layer as .flame
    deca: nn.Module
    # render buffers (not saved): texture (1,3,H,W), uvs (T,2), uv_faces (F,3), faces (F,3)
    texture: torch.Tensor
    uvs: torch.Tensor
    uv_faces: torch.Tensor
    faces: torch.Tensor

    def __init__(self, cfg: dict):
        super().__init__()
        from backend.models.emoca import EmocaConfig, EmocaNet

        self.cfg = cfg
        self.save_hyperparameters({"cfg": cfg})
        self.n_exp = int(_cfg_get(cfg, "model.n_exp", 50))
        self.backbone = str(_cfg_get(cfg, "model.expression_backbone", "deca_clone"))
        self.coarse_codes = str(_cfg_get(cfg, "model.coarse_codes", "E_flame"))
        self.image_size = int(_cfg_get(cfg, "data.image_size", 224))
        setting = str(_cfg_get(cfg, "loss.setting", "v1"))
        base = {"v1": LS.V1_WEIGHTS, "v2": LS.V2_WEIGHTS}.get(setting)
        if base is None:
            raise EmocaError("config_invalid", f"loss.setting = {setting!r}: expected v1 or v2")
        self.weights = {**base, **{k: float(v) for k, v in (_cfg_get(cfg, "loss.weights", {}) or {}).items()}}
        if self.backbone == "tiny":
            self.deca = nn.ModuleDict({"E_expression": TinyEncoder(self.n_exp)})
            if self.coarse_codes != "dataset":
                raise EmocaError(
                    "config_invalid",
                    "model.expression_backbone = tiny needs model.coarse_codes = dataset (no E_flame is built)",
                )
        else:
            self.deca = EmocaNet(
                EmocaConfig(
                    deca_class="ExpDECA",
                    expression_backbone="deca_clone",
                    n_exp=self.n_exp,
                    mode="coarse",
                    stage="coarse",
                )
            )
            init = _cfg_get(cfg, "model.init")
            if init:
                self._load_init(init)
            self.deca.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.channels_last = self.backbone != "tiny"
        flame, tex, uvs, uvf, name = build_flame(cfg)
        self.flame_name = name
        self.deca.add_module("flame", flame)
        self.register_buffer("texture", tex, persistent=False)
        self.register_buffer("uvs", uvs, persistent=False)
        self.register_buffer("uv_faces", uvf, persistent=False)
        self.register_buffer("faces", flame.faces.long().clone() if hasattr(flame, "faces") else uvf, persistent=False)
        from backend.models.emotion import load_emotion_model

        self.emonet_loss = None
        if self.weights.get("emotion", 0) > 0:
            self.emonet_loss = load_emotion_model(_cfg_get(cfg, "model.emotion_model"))
        # only E_expression trains (emoca.md 1.7)
        for n, p in self.named_parameters():
            p.requires_grad_(n.startswith("deca.E_expression."))

    def _load_init(self, path: str) -> None:
        from pathlib import Path

        from backend.models.loading import load_deca_tar, load_emoca_folder

        p = Path(path)
        net, _info = load_emoca_folder(p) if p.is_dir() else load_deca_tar(p)
        own = self.deca.state_dict()
        src = net.state_dict()
        for k in own:
            if k in src and src[k].shape == own[k].shape:
                own[k] = src[k]
        if net.E_expression is None:  # from DECA: E_expression starts as a copy of E_flame's backbone
            for k, v in src.items():
                if k.startswith("E_flame.encoder."):
                    own["E_expression." + k[len("E_flame.") :]] = v
        self.deca.load_state_dict(own)

    # -- frozen parts stay in eval mode whatever Lightning does
    def train(self, mode: bool = True):
        super().train(mode)
        for name, child in self.deca.named_children():
            if name != "E_expression":
                child.eval()
        if self.emonet_loss is not None:
            self.emonet_loss.eval()
        return self

    def configure_optimizers(self):
        params = [p for p in self.expression_encoder.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=float(_cfg_get(self.cfg, "learning.lr", 5e-5)))

    # -- the forward pass
    def coarse_codes_for(self, batch: dict) -> dict[str, torch.Tensor]:
        """shape/tex/pose/cam/light from the frozen E_flame (or, for synthetic sanity data, the known ones)."""
        if self.coarse_codes == "dataset":
            missing = [k for k in ("shape", "pose", "cam", "light") if k not in batch]
            if missing:
                raise EmocaError(
                    "config_invalid",
                    f"model.coarse_codes = dataset but the batch lacks {missing} "
                    "(only un-augmented synthetic data carries known parameters)",
                )
            return {k: batch[k] for k in ("shape", "pose", "cam", "light")}
        net = cast("EmocaNet", self.deca)  # coarse_codes = E_flame: never the tiny config (checked in __init__)
        with torch.no_grad():
            codes = net.split_code(net.E_flame.head(net.E_flame.features(self.encoder_input(batch["image"]))).float())
        return codes

    def encoder_input(self, images: torch.Tensor) -> torch.Tensor:
        """The images in the encoders' memory format (channels_last for the ResNets; a no-op when already)."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) -> exp (B, n_exp) float32 from the trainable encoder."""
        return self.expression_encoder(self.encoder_input(images))[:, : self.n_exp].float()

    @property
    def expression_encoder(self) -> nn.Module:
        """The trainable encoder: (B,3,S,S) -> (B, >= n_exp)."""
        return cast(nn.Module, self.deca.E_expression)

    @property
    def flame(self) -> FLAME:
        return cast("FLAME", self.deca.flame)

    def step(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total loss, unweighted terms) of one batch: networks (bf16 under autocast), then geometry, rendering
        and losses in float32."""
        images = batch["image"]
        codes = self.coarse_codes_for(batch)
        exp = self(images)
        with torch.autocast(images.device.type, enabled=False):
            out, lmk, r = self.render(codes, exp, images.shape[-1])
            terms = self.geometry_terms(batch, codes, exp, out, lmk, r)
        if self.emonet_loss is not None:
            with torch.no_grad():
                f_in = self.emonet_loss.features(images)
            f_out = self.emonet_loss.features(r["images"])
            terms["emotion"] = LS.emotion_feature_loss(f_in.float(), f_out.float())
        return LS.total(terms, self.weights), terms

    def render(self, codes: dict[str, torch.Tensor], exp: torch.Tensor, size: int):
        """FLAME -> projection -> textured SH render on black, float32: (flame output, projected 68 landmarks
        (B,68,2), render_mesh's dict)."""
        from backend.flame.camera import project
        from backend.render.renderer import render_mesh

        out = self.flame(codes["shape"], exp, codes["pose"])
        verts = project(out.vertices, codes["cam"])
        lmk = project(out.landmarks2d, codes["cam"])[..., :2]
        r = render_mesh(verts, self.faces, self.uvs, self.uv_faces, self.texture, codes["light"], image_size=size)
        return out, lmk, r

    def geometry_terms(self, batch: dict, codes: dict, exp: torch.Tensor, out, lmk: torch.Tensor, r: dict) -> dict:
        """Every unweighted term but the emotion one: landmarks, eye/lip/mouth distances, photometric,
        regularizers, the v2 mediapipe terms when the batch carries valid ones, and the synthetic exp term."""
        terms: dict[str, torch.Tensor] = {}
        gt68 = batch["landmarks68"]
        terms["landmark"] = LS.weighted_landmark_loss(lmk, gt68)
        terms["eye_distance"] = LS.eye_distance_loss(lmk, gt68)
        terms["lip_distance"] = LS.lip_distance_loss(lmk, gt68)
        terms["mouth_corner_distance"] = LS.mouth_corner_distance_loss(lmk, gt68)
        terms["photometric"] = LS.photometric_loss(r["images"], batch["image"], r["mask_images"])
        terms["exp_reg"] = LS.expression_reg(exp)
        terms["light_reg"] = LS.light_reg(codes["light"])
        if out.landmarks_mp is not None and bool(batch.get("lmk_mp_valid", torch.tensor(False)).all()):
            terms.update(self.mediapipe_terms(batch, codes, out))
        if "exp" in batch:
            terms["exp_param"] = LS.expression_param_loss(exp, batch["exp"])
        return terms

    def mediapipe_terms(self, batch: dict, codes: dict, out) -> dict[str, torch.Tensor]:
        """v2: absolute and relative mediapipe landmark terms on the embedded subset (none when the config's
        mediapipe_indices do not match the embedding)."""
        from backend.flame.camera import project

        mp = project(out.landmarks_mp, codes["cam"])[..., :2]
        idx = torch.as_tensor(_cfg_get(self.cfg, "model.mediapipe_indices", []), dtype=torch.long)
        if len(idx) != mp.shape[1]:
            return {}
        gt = batch["landmarks_mp"][:, idx]
        terms = {"landmark_mp": LS.landmark_l1_loss(mp, gt)}
        for name, pairs in (
            ("eye_distance_mp", LS.EYE_PAIRS_MP),
            ("lip_distance_mp", LS.LIP_PAIRS_MP),
            ("mouth_corner_distance_mp", LS.MOUTH_CORNER_PAIRS_MP),
        ):
            pp = LS.remap_pairs(pairs, idx.tolist())
            if pp:
                terms[name] = LS.relative_distance_loss(mp, gt, pp)
        return terms

    def training_step(self, batch, batch_idx):
        loss, terms = self.step(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        for k, v in terms.items():
            self.log(f"train/{k}", v, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch, batch_idx):
        loss, terms = self.step(batch)
        n = len(batch["image"])
        self.log("val_loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        for k, v in terms.items():
            self.log(f"val/{k}", v, batch_size=n, sync_dist=True)
        return loss


# ------------------------------------------------------------------------------------------- emotion network
class EmotionRecognitionModule(L.LightningModule):
    """ResNet-50 (Caffe layout, as EmoCnnModule) regressing valence/arousal and 8 AffectNet classes.

    Attributes ``backbone`` and ``linear`` give the official checkpoint keys (``backbone.*``, ``linear.*``), so
    the run folder (cfg.yaml + checkpoints) loads with `backend.models.emotion.load_emotion_model`.
    """

    def __init__(self, cfg: dict):
        super().__init__()
        from backend.models.emotion import EmoCnnResNet50

        self.cfg = cfg
        self.save_hyperparameters({"cfg": cfg})
        self.n_expression = int(_cfg_get(cfg, "model.n_expression", 8))
        net = EmoCnnResNet50(self.n_expression)
        self.backbone = net.backbone
        self.linear = net.linear
        self.weights = {
            "v_mse": 1.0,
            "a_mse": 1.0,
            "v_pcc": 1.0,
            "a_pcc": 1.0,
            "v_ccc": 1.0,
            "a_ccc": 1.0,
            "expr_nll": 1.0,
            **(_cfg_get(cfg, "loss.weights", {}) or {}),
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,224,224) [0,1] -> (B, n+2) [expression logits | valence | arousal]."""
        return self.linear(self.backbone.features(images))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=float(_cfg_get(self.cfg, "learning.lr", 1e-4)))

    def step(self, batch):
        out = self(batch["image"])
        terms = LS.emotion_losses(out, batch["valence"], batch["arousal"], batch["expression"], self.n_expression)
        if not terms:
            raise EmocaError(
                "input_unsupported",
                "the emotion network needs annotated data: no sample in the "
                "batch has valence/arousal or an expression class",
                "Add an AffectNet-style CSV (file, expression, valence, arousal) to the data folder.",
            )
        return LS.total(terms, self.weights), terms

    def training_step(self, batch, batch_idx):
        loss, terms = self.step(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch, batch_idx):
        loss, terms = self.step(batch)
        self.log("val_loss", loss, batch_size=len(batch["image"]), sync_dist=True)
        for k, v in terms.items():
            self.log(f"val/{k}", v, batch_size=len(batch["image"]), sync_dist=True)
        return loss


def expression_error(module: EmocaCoarseModule, dataset, n_active: int = 7, batch_size: int = 32) -> float:
    """Mean absolute error of the predicted vs known expression (first ``n_active`` components) on a
    synthetic dataset, with the encoder in eval mode."""
    was = module.training
    module.eval()
    errs = []
    with torch.no_grad():
        for s in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(s, min(s + batch_size, len(dataset)))]
            img = torch.stack([it["image"] for it in items]).to(module.device)
            gt = torch.stack([it["exp"] for it in items]).to(module.device)
            errs.append((module(img)[:, :n_active] - gt[:, :n_active]).abs().mean(1))
    module.train(was)
    return float(torch.cat(errs).mean()) if errs else math.nan
