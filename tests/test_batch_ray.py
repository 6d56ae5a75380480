"""Batch and scenes on an embedded local Ray (``ray.init(num_cpus=2)`` once per session, shut
down at the end); tiny models, fp32, one CPU thread on every side so pixels can be compared
exactly. Select these with ``-k ray`` (or this file); deselect with ``-k "not ray"``."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from engine.batch.run import BatchOptions, run_batch
from engine.batch.tasks import FINGERPRINT_TAG, Settings
from engine.batch.workers import (
    FAULT_ENV,
    ClusterError,
    InProcess,
    ModelSpec,
    check_workers,
    start_ray,
)

pytestmark = pytest.mark.usefixtures("ray_session")
UTM = "EPSG:32632"
DEAD_PROXY = "http://127.0.0.1:9"
ITEMS = [
    ("farm", "farmland", "447000,5411000,447060,5411060", UTM, 17, 1),
    ("wood", "a forest", "447100,5411000,447150,5411040", UTM, 17, 2),
    ("town", "dense city", "10.3,48.8,10.3006,48.8004", "EPSG:4326", 17, 3),
]


def set_env(values: dict) -> dict:
    """Set (None: remove) environment variables; what they were before, to set back."""
    before = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return before


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """The batch's own embedded Ray (start_ray: on 127.0.0.1, 2 CPUs). Ray's dashboard process
    asks cloud metadata addresses (169.254.169.254) who hosts it: its requests go to a dead
    loopback proxy instead (the environment is read when Ray starts its processes). Ray's
    token is a private temp file, not ~/.ray/auth_token (whose folder others can read)."""
    ray = pytest.importorskip("ray")
    token = tmp_path_factory.mktemp("raytoken") / "auth_token"
    with os.fdopen(os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(secrets.token_hex(32))  # as Ray's own token generator
    auth = set_env({"RAY_AUTH_TOKEN_PATH": str(token), "RAY_AUTH_TOKEN": None})
    auth["RAY_AUTH_MODE"] = os.environ.get("RAY_AUTH_MODE")  # ray.init turns it on here
    proxies = {"http_proxy": DEAD_PROXY, "HTTP_PROXY": DEAD_PROXY, "no_proxy": None,
               "NO_PROXY": None}
    saved = set_env(proxies)
    try:
        assert start_ray(None, 2)
    finally:
        set_env(saved)
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    sent = ray._raylet.AuthenticationTokenLoader.instance().get_token_for_http_header()
    assert list(sent.values()) == [f"Bearer {token.read_text()}"]  # the token is ours
    yield ray
    ray.shutdown()
    set_env(auth)


def read(path: Path):
    with rasterio.open(path) as src:
        return src.read(), src.tags()


@pytest.fixture(scope="module")
def ray_batch(tmp_path_factory, tiny_t2i, t2i_model):
    """The same 3 items in-process and on 2 Ray workers, one of which is killed (os._exit,
    as abrupt as kill -9) at the first denoising step of its first item."""
    folder = tmp_path_factory.mktemp("raybatch")
    items = folder / "items.csv"
    items.write_text("id,prompt,bbox,crs,level,seed\n" + "".join(
        f'{i},{p},"{b}",{c},{lv},{s}\n' for i, p, b, c, lv, s in ITEMS))
    settings = Settings(model=str(tiny_t2i), precision="fp32", steps=2, tile=256, overlap=64)
    spec = ModelSpec(str(tiny_t2i), "fp32", "cpu", threads=1)
    local = BatchOptions(items, folder / "local", settings, spec, quiet=True)
    in_process = run_batch(local, InProcess(spec, t2i_model))
    marker = folder / "killed-once"
    on_ray = BatchOptions(items, folder / "ray", settings, spec, workers=2, quiet=True,
                          actor_env={FAULT_ENV: f"die-once:{marker}"})
    return folder, in_process, run_batch(on_ray), marker


def test_ray_batch_writes_the_same_cogs_as_in_process(ray_batch):
    folder, in_process, on_ray, _ = ray_batch
    assert in_process.count("done") == on_ray.count("done") == 3
    for name, *_ in ITEMS:
        local, local_tags = read(folder / "local" / f"{name}.tif")
        remote, remote_tags = read(folder / "ray" / f"{name}.tif")
        assert np.array_equal(local, remote), name
        assert local_tags[FINGERPRINT_TAG] == remote_tags[FINGERPRINT_TAG]
        valid, errors, _ = cog_validate(str(folder / "ray" / f"{name}.tif"), strict=False)
        assert valid, errors


def test_ray_worker_killed_mid_item_is_retried_and_leaves_nothing_partial(ray_batch):
    folder, _, on_ray, marker = ray_batch
    assert marker.is_file()  # a worker really died mid-item
    assert on_ray.count("failed") == 0
    assert sorted(p.name for p in (folder / "ray").glob("*.tif")) == [
        "farm.tif", "town.tif", "wood.tif"]
    assert not [p for p in (folder / "ray").rglob(".t2e-*")]


def test_ray_stac_collection_lists_every_output(ray_batch):
    import pystac

    folder = ray_batch[0]
    collection = pystac.read_file(str(folder / "ray" / "collection.json"))
    assert sorted(i.id for i in collection.get_items()) == ["farm", "town", "wood"]


def test_ray_workers_without_the_engine_get_shipping_advice():
    with pytest.raises(ClusterError) as info:
        check_workers(None, modules=("engine.batch.tasks", "t2e_absent_package"))
    message = str(info.value)
    assert "t2e_absent_package" in message and "--runtime-env" in message
    assert "\n" not in message


def test_ray_huge_scene_split_over_two_workers_equals_one_process(tmp_path, tiny_inpaint):
    """`text2earth batch --split-scenes --workers 2`: a 3 x 2 window outpainted scene
    (wavefronts of 1, 1, 2, 1, 1 windows) made on two Ray actors equals the one-process one."""
    from engine.model.checkpoint import load_model

    items = tmp_path / "items.csv"
    items.write_text('id,prompt,bbox,crs,level,seed\n'
                     'city,farmland,"447000,5411000,447400,5411300",EPSG:32632,17,3\n')
    settings = Settings(model=str(tiny_inpaint), precision="fp32", steps=2, tile=256,
                        overlap=64)
    spec = ModelSpec(str(tiny_inpaint), "fp32", "cpu", threads=1)
    model = load_model(str(tiny_inpaint), "cpu", precision="fp32")
    one = run_batch(BatchOptions(items, tmp_path / "one", settings, spec, quiet=True),
                    InProcess(spec, model))
    split = run_batch(BatchOptions(items, tmp_path / "split", settings, spec, workers=2,
                                   split_scenes=True, quiet=True))
    assert one.count("done") == split.count("done") == 1, split.results
    pixels, tags = read(tmp_path / "one" / "city.tif")
    split_pixels, _ = read(tmp_path / "split" / "city.tif")
    assert tags["TEXT2EARTH_SCENE_METHOD"] == "outpaint" and tags["TEXT2EARTH_WINDOWS"] == "3x2"
    assert np.array_equal(pixels, split_pixels)
    assert not [p for p in (tmp_path / "split").rglob(".t2e-*")]

