"""`python -m backend train`: config merging, json progress, checkpoints, resume, capture-loadable output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emoca_contract.errors import EmocaError

pytest.importorskip("torch")
pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_configs_load_and_overrides_merge():
    from backend.training.run import CONFIG_DIR, load_config

    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert names == ["emoca_v1", "emoca_v2", "emotion_resnet50", "tiny_cpu"]
    v1 = load_config("emoca_v1")
    assert v1["learning"]["lr"] == 5e-5 and v1["data"]["batch_size"] == 32 and v1["loss"]["setting"] == "v1"
    assert v1["checkpoint"]["save_top_k"] == 3 and v1["learning"]["early_stopping_patience"] == 15
    assert load_config("emoca_v2")["loss"]["setting"] == "v2"
    c = load_config(
        CONFIG_DIR / "emoca_v1.yaml",
        ["trainer.devices=4", "trainer.num_nodes=2", "trainer.strategy=ddp", "loss.weights.emotion=0.5"],
    )
    assert (c["trainer"]["devices"], c["trainer"]["num_nodes"], c["trainer"]["strategy"]) == (4, 2, "ddp")
    assert c["loss"]["weights"]["emotion"] == 0.5


def test_config_errors_are_clear(tmp_path):
    from backend.training.run import load_config

    with pytest.raises(EmocaError) as e:
        load_config("emoca_v1", ["learning.lrr=1"])
    assert e.value.code == "config_invalid" and "lrr" in e.value.message
    with pytest.raises(EmocaError) as e:
        load_config(tmp_path / "nope.yaml")
    assert e.value.code == "input_missing" and "tiny_cpu" in e.value.hint
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: detail\n", encoding="utf-8")
    with pytest.raises(EmocaError) as e:
        load_config(bad)
    assert "task" in e.value.message


def _run(args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "backend", "train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.slow
def test_json_progress_checkpoints_and_resume(unicode_tmp):
    from emoca_contract import protocol

    out = unicode_tmp / "run"
    common = [
        "tiny_cpu",
        f"output_dir={out}",
        "data.synthetic.n_train=32",
        "data.synthetic.n_val=8",
        "learning.max_time_s=null",
        "data.batch_size=8",
    ]
    opts = ["--progress", "json", "--id", "t1"]
    r = _run([*common, "learning.max_steps=3", *opts], ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    msgs = [protocol.decode(line) for line in r.stdout.splitlines()]  # stdout is protocol only
    prog = [m for m in msgs if m["type"] == "progress"]
    assert prog and all(m["stage"] == "train" and m["id"] == "t1" and "epoch" in m and "loss" in m for m in prog)
    res = msgs[-1]
    assert res["type"] == "result" and res["global_step"] == 3
    assert Path(res["checkpoint"]).is_file() and res["capture_loadable"] is False
    assert (out / "coarse" / "checkpoints" / "last.ckpt").is_file() and (out / "logs").is_dir()
    assert (out / "cfg.yaml").is_file()
    # a second run picks up last.ckpt by itself
    r2 = _run([*common, "learning.max_steps=5", *opts], ROOT)
    assert r2.returncode == 0, r2.stderr[-2000:]
    res2 = json.loads(r2.stdout.splitlines()[-1])
    assert res2["resumed_from"].endswith("last.ckpt") and res2["global_step"] == 5


@pytest.mark.slow
def test_real_config_one_step_writes_an_emoca_folder_capture_loads(tmp_path):
    """The real path (ResNet-50 E_flame + E_expression, 224 px, v1 losses with the emotion net, official
    augmentation) for one step; the run folder loads with the capture loader and holds the trained weights."""
    import torch

    from backend.models.loading import load_emoca_folder
    from backend.training.run import load_config, train

    cfg = load_config(
        "emoca_v1",
        [
            f"output_dir={tmp_path / 'v1'}",
            "data.kind=synthetic",
            "data.synthetic.n_train=2",
            "data.synthetic.n_val=1",
            "data.batch_size=2",
            "data.num_workers=0",
            "learning.max_steps=1",
            "learning.val_check_interval=1.0",
            "trainer.accelerator=cpu",
            "learning.early_stopping_patience=0",
        ],
    )
    res = train(cfg)
    module = res.pop("module")
    assert res["global_step"] == 1 and res["capture_loadable"]
    # only E_expression trains; the rest is frozen and in eval mode
    trainable = {n.split(".")[1] for n, p in module.named_parameters() if p.requires_grad}
    assert trainable == {"E_expression"}
    module.train()
    assert not module.deca.E_flame.training and module.deca.E_expression.training
    net, info = load_emoca_folder(tmp_path / "v1")
    assert info["kind"] == "EMOCA" and net.E_expression is not None
    for k, v in module.deca.E_expression.state_dict().items():
        assert torch.equal(v.cpu(), net.E_expression.state_dict()[k].cpu()), k


@pytest.mark.slow
def test_emotion_network_trains_through_the_same_entry_point_and_loads(unicode_tmp):
    import cv2

    from backend.models.emotion import load_emotion_model
    from backend.synthetic.clips import astronaut_image, make_astronaut_clip
    from backend.training.run import load_config, train

    data = unicode_tmp / "affect"
    data.mkdir()
    cv2.imwrite(str(data / "astro.png"), astronaut_image()[..., ::-1])
    make_astronaut_clip(data / "clip.mp4", n_frames=10)
    (data / "labels.csv").write_text(
        "subDirectory_filePath,expression,valence,arousal\nastro.png,1,0.6,0.3\nclip.mp4,3,-0.2,0.7\n", encoding="utf-8"
    )
    out = unicode_tmp / "emo"
    cfg = load_config(
        "emotion_resnet50",
        [
            f"output_dir={out}",
            f"data.train={data}",
            "data.batch_size=2",
            "data.num_workers=0",
            "data.video_every=5",
            "data.val_fraction=0.34",
            "learning.max_steps=1",
            "trainer.accelerator=cpu",
        ],
    )
    res = train(cfg)
    module = res.pop("module")
    assert res["global_step"] == 1 and res["best_checkpoint"]
    model = load_emotion_model(out)  # the run folder is an emotion-network folder
    assert model.arch == "resnet50_caffe"
    import torch

    torch.testing.assert_close(model.net.linear.weight, module.linear.weight.detach())


@pytest.mark.slow
def test_the_same_config_runs_data_parallel_on_two_processes(tmp_path):
    """Lightning DDP (gloo on CPU here, NCCL on GPUs): one config, N processes, one protocol stream."""
    from emoca_contract import protocol

    out = tmp_path / "ddp run"
    r = _run(
        [
            "tiny_cpu",
            f"output_dir={out}",
            "data.synthetic.n_train=32",
            "data.synthetic.n_val=8",
            "learning.max_time_s=null",
            "data.batch_size=8",
            "learning.max_steps=3",
            "trainer.devices=2",
            "trainer.strategy=ddp",
            "--progress",
            "json",
            "--id",
            "d",
        ],
        ROOT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Starting with 2 processes" in r.stderr  # really two ranks
    msgs = [protocol.decode(line) for line in r.stdout.splitlines()]
    results = [m for m in msgs if m["type"] == "result"]
    assert len(results) == 1, "every rank reported: the add-on would see several results"
    res = results[0]
    assert res["world_size"] == 2 and res["global_step"] == 3
    assert res["images_seen"] == 3 * 8 * 2  # each step saw a batch per process
    assert Path(res["checkpoint"]).is_file()
