"""Tests of the reproducible data-set builder and the training datasets.

They build from a temporary folder of synthetic "photos" through the very code paths the real build uses (the
catalog, the package resolver and the sizes are injected), so they need none of the Debian / PyPI photo
packages. Photos embedded in containers (Enlightenment .edj, Qt .rcc) are tested on synthetic containers of the
same layout. The few checks of the real catalog against the installed packages are marked ``data``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterable, Mapping, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from model_store import data as D
from model_store import embedded_images as E
from model_store.training_data import ImageFolderDataset, RandomCropDataset

PKG_A = "deb:fake-photos"
PKG_B = "pypi:fake-samples"
#: Small sizes so a whole build takes milliseconds: 48x32 validation crops, training images <= 64 px long.
CONFIG = D.BuildConfig(train_max_long_side=64, train_min_short_side=24, val_size=(48, 32), val_count=2, min_val_count=1)


def synthetic_photo(w: int, h: int, seed: int) -> Image.Image:
    """Smooth gradients + blobs + noise: photo-like enough for resampling and PNG to behave as on photos."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = [128 + 70 * np.sin(xx / (7 + c + seed) + c) * np.cos(yy / (9 + c) - seed) for c in range(3)]
    arr = np.stack(chans, -1) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write(root: Path, rel: str, img: Image.Image, **save_kw) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **save_kw)
    return path


@pytest.fixture()
def fake_packages(tmp_path: Path) -> Tuple[D.Catalog, D.DirectoryResolver, Dict[str, Path]]:
    """Two fake packages with a reviewed catalog, as the real ones have."""
    root_a, root_b = tmp_path / "pkg_a", tmp_path / "pkg_b"
    write(root_a, "photos/big_landscape.png", synthetic_photo(180, 120, 1))
    write(root_a, "photos/big_portrait.jpg", synthetic_photo(100, 150, 2), quality=95)
    write(root_a, "photos/train_clean.png", synthetic_photo(120, 90, 3))
    write(root_a, "photos/train_heavy.jpg", synthetic_photo(130, 60, 4), quality=40)
    # stored 90x60 (sensor orientation); EXIF 6 says "rotate 90 degrees clockwise to view": upright is 60x90
    exif = Image.Exif()
    exif[0x0112] = 6
    write(root_a, "photos/rotated.jpg", synthetic_photo(90, 60, 5), quality=95, exif=exif)
    opaque = synthetic_photo(80, 60, 6).convert("RGBA")
    write(root_a, "photos/opaque_alpha.png", opaque)
    cutout = opaque.copy()
    cutout.putalpha(Image.new("L", cutout.size, 0).point(lambda _: 128))
    write(root_a, "photos/cutout.png", cutout)
    write(root_a, "art/vector.png", Image.new("RGB", (200, 200), (10, 200, 30)))
    write(root_b, "samples/data/sample.png", synthetic_photo(80, 60, 7))

    C, H = D.Quality.CLEAN, D.Quality.HEAVY
    catalog = D.Catalog(
        packages=(D.SourcePackage(PKG_A, ("photos", "art")), D.SourcePackage(PKG_B, ("samples/data",))),
        photos=(
            D.Photo(PKG_A, "photos/big_landscape.png", C, "val landscape"),
            D.Photo(PKG_A, "photos/big_portrait.jpg", C, "val portrait"),
            D.Photo(PKG_A, "photos/train_clean.png", C),
            D.Photo(PKG_A, "photos/train_heavy.jpg", H),
            D.Photo(PKG_A, "photos/rotated.jpg", C),
            D.Photo(PKG_A, "photos/opaque_alpha.png", C),
            D.Photo(PKG_B, "samples/data/sample.png", C),
        ),
        excluded=(D.Excluded(PKG_A, "photos/cutout.png", "alpha cut-out"), D.Excluded(PKG_A, "art/*", "vector art")),
        validation_order=("fake-photos_big_landscape", "fake-photos_big_portrait", "fake-photos_train_clean"),
    )
    resolver = D.DirectoryResolver({PKG_A: (root_a, "1.0-1"), PKG_B: (root_b, "2.3.4")})
    return catalog, resolver, {"a": root_a, "b": root_b}


def build(out: Path, fake_packages, config: D.BuildConfig = CONFIG) -> dict:
    catalog, resolver, _ = fake_packages
    return D.build_dataset(out, catalog, config, resolver, progress=False)


# ---------------------------------------------------------------------------------------------- builder


def test_build_writes_train_val_and_manifest(tmp_path, fake_packages):
    manifest = build(tmp_path / "out", fake_packages)
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "val").glob("*.png")) == [
        "fake-photos_big_landscape.png",
        "fake-photos_big_portrait.png",
    ]
    assert len(list((out / "train").glob("*.png"))) == 5
    assert (out / "val" / D.NO_TRAIN_MARKER).is_file()
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["packages"] == {PKG_A: "1.0-1", PKG_B: "2.3.4"}
    assert manifest["totals"]["train"]["images"] == 5 and manifest["totals"]["val"]["images"] == 2
    assert manifest["params"]["validation_keys"] == ["fake-photos_big_landscape", "fake-photos_big_portrait"]
    assert {e["pattern"] for e in manifest["excluded"]} == {"photos/cutout.png", "art/*"}
    assert "timestamp" not in json.dumps(manifest).lower()


def test_build_is_deterministic(tmp_path, fake_packages):
    build(tmp_path / "one", fake_packages)
    build(tmp_path / "two", fake_packages)
    files_one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    files_two = sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert files_one == files_two
    for rel in files_one:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel


def test_rebuild_in_place_removes_stale_outputs(tmp_path, fake_packages):
    out = tmp_path / "out"
    build(out, fake_packages)
    (out / "train" / "stale.png").write_bytes(b"old")
    build(out, fake_packages)
    assert not (out / "train" / "stale.png").exists()
    assert D.verify_dataset(out) == []


def test_manifest_hashes_match_sources_and_outputs(tmp_path, fake_packages):
    _, _, roots = fake_packages
    manifest = build(tmp_path / "out", fake_packages)
    for rel, rec in manifest["outputs"].items():
        assert D.sha256_file(tmp_path / "out" / rel) == rec["sha256"]
        with Image.open(tmp_path / "out" / rel) as im:
            assert list(im.size) == rec["size"] and im.mode == "RGB"
    for src in manifest["sources"].values():
        root = roots["a"] if src["package"] == PKG_A else roots["b"]
        assert D.sha256_file(root / src["path"]) == src["sha256"]


def test_verify_detects_tampering_missing_and_extra_files(tmp_path, fake_packages):
    out = tmp_path / "out"
    build(out, fake_packages)
    assert D.verify_dataset(out) == []
    assert D.main(["verify", "--out", str(out)]) == 0
    target = out / "train" / "fake-photos_train_clean.png"
    target.write_bytes(target.read_bytes() + b"\0")
    (out / "val" / "fake-photos_big_portrait.png").unlink()
    (out / "train" / "intruder.png").write_bytes(b"x")
    problems = D.verify_dataset(out)
    assert "sha256 mismatch: train/fake-photos_train_clean.png" in problems
    assert "missing: val/fake-photos_big_portrait.png" in problems
    assert "not in manifest: train/intruder.png" in problems
    assert D.main(["verify", "--out", str(out)]) == 1


def test_validation_images_never_appear_in_training(tmp_path, fake_packages):
    manifest = build(tmp_path / "out", fake_packages)
    val_keys = set(manifest["params"]["validation_keys"])
    train_names = {p.stem for p in (tmp_path / "out" / "train").glob("*.png")}
    assert not val_keys & train_names
    sources = manifest["sources"]
    assert not {sources[k]["sha256"] for k in val_keys} & {s["sha256"] for k, s in sources.items() if k not in val_keys}
    outs = manifest["outputs"].values()
    assert not {o["sha256"] for o in outs if o["split"] == "val"} & {o["sha256"] for o in outs if o["split"] == "train"}
    # photos later in the validation order than val_count go to training
    assert "fake-photos_train_clean" in train_names


def test_validation_crops_have_fixed_size_and_orientation(tmp_path, fake_packages):
    manifest = build(tmp_path / "out", fake_packages)
    assert manifest["outputs"]["val/fake-photos_big_landscape.png"]["size"] == [48, 32]
    assert manifest["outputs"]["val/fake-photos_big_portrait.png"]["size"] == [32, 48]
    assert all(o["downscale"] >= CONFIG.min_downscale for o in manifest["outputs"].values())


def test_training_images_downscaled_by_quality_and_capped(tmp_path, fake_packages):
    out = build(tmp_path / "out", fake_packages)["outputs"]
    clean = out["train/fake-photos_train_clean.png"]  # 120x90: the 64 px long-side cap wins over 1.5x
    assert clean["size"] == [64, 48]
    heavy = out["train/fake-photos_train_heavy.png"]  # 130x60 heavy: 3x wanted, relaxed to keep >= 24 px
    assert heavy["downscale"] == pytest.approx(60 / 24) and heavy["size"] == [52, 24]
    for rec in out.values():
        assert max(rec["size"]) <= CONFIG.train_max_long_side
        assert min(rec["size"]) >= CONFIG.train_min_short_side


def test_exif_orientation_is_applied(tmp_path, fake_packages):
    out = build(tmp_path / "out", fake_packages)["outputs"]
    w, h = out["train/fake-photos_rotated.png"]["size"]
    assert h > w  # stored landscape, shown portrait


def test_training_scale_rules():
    cfg = D.BuildConfig()
    assert D.training_scale((1200, 900), D.Quality.HEAVY, cfg) == pytest.approx(3.0)
    assert D.training_scale((1200, 900), D.Quality.COMPRESSED, cfg) == pytest.approx(2.0)
    assert D.training_scale((900, 600), D.Quality.CLEAN, cfg) == pytest.approx(1.5)
    assert D.training_scale((640, 480), D.Quality.HEAVY, cfg) == pytest.approx(480 / 256)  # relaxed, still >= 1.5
    assert D.training_scale((3000, 2000), D.Quality.CLEAN, cfg) == pytest.approx(3000 / 1024)  # long-side cap
    with pytest.raises(D.SourceError):
        D.training_scale((500, 333), D.Quality.CLEAN, cfg)  # < 256 px even at the minimum 1.5x


def test_cutouts_are_rejected(fake_packages):
    roots = fake_packages[2]
    with pytest.raises(D.SourceError, match="transparent"):
        D.load_rgb(roots["a"] / "photos/cutout.png")
    assert D.load_rgb(roots["a"] / "photos/opaque_alpha.png").mode == "RGB"


def test_duplicate_sources_are_rejected(tmp_path, fake_packages):
    catalog, resolver, roots = fake_packages
    (roots["a"] / "photos/copy.png").write_bytes((roots["a"] / "photos/train_clean.png").read_bytes())
    dup = replace(catalog, photos=catalog.photos + (D.Photo(PKG_A, "photos/copy.png", D.Quality.CLEAN),))
    with pytest.raises(D.SourceError, match="same bytes"):
        D.build_dataset(tmp_path / "out", dup, CONFIG, resolver, progress=False)


def test_reserved_packages_can_never_feed_training(tmp_path, fake_packages):
    catalog, resolver, _ = fake_packages
    bad = replace(
        catalog,
        packages=catalog.packages + (D.SourcePackage(D.RESERVED_PACKAGES[0], ("x",)),),
        photos=catalog.photos + (D.Photo(D.RESERVED_PACKAGES[0], "x/a.jpg", D.Quality.CLEAN),),
    )
    with pytest.raises(ValueError, match="RESERVED"):
        D.build_dataset(tmp_path / "out", bad, CONFIG, resolver, progress=False)


def test_catalog_checks(fake_packages):
    catalog, _, _ = fake_packages
    with pytest.raises(ValueError, match="heavily compressed"):
        D.check_catalog(replace(catalog, validation_order=("fake-photos_train_heavy",)))
    with pytest.raises(KeyError):
        D.check_catalog(replace(catalog, validation_order=("no-such-key",)))
    with pytest.raises(ValueError, match="duplicate"):
        D.check_catalog(replace(catalog, photos=catalog.photos + catalog.photos[:1]))
    with pytest.raises(ValueError, match="val_count"):
        D.select_validation(catalog, 9, CONFIG)


def test_missing_package_is_reported_with_install_hint(tmp_path, fake_packages):
    catalog, _, roots = fake_packages
    only_a = D.DirectoryResolver({PKG_A: (roots["a"], "1.0-1")})
    with pytest.raises(D.SourceError, match="install_data_sources"):
        D.build_dataset(tmp_path / "out", catalog, CONFIG, only_a, progress=False)


def test_shipped_catalogs_are_consistent():
    D.check_catalog(D.TRAINING_CATALOG)
    D.check_catalog(D.RESERVED_CATALOG, allow_reserved=True)
    assert len(D.TRAINING_CATALOG.validation_order) >= D.BuildConfig().val_count >= D.BuildConfig().min_val_count
    assert not {p.package for p in D.TRAINING_CATALOG.photos} & set(D.RESERVED_PACKAGES)
    assert {p.package for p in D.RESERVED_CATALOG.photos} <= set(D.RESERVED_PACKAGES)


def test_reserved_build_is_separate_and_skips_missing_packages(tmp_path, capsys):
    root = tmp_path / "reserved_pkg"
    write(root, "bg/photo.jpg", synthetic_photo(200, 120, 9), quality=95)
    pkg = D.RESERVED_PACKAGES[0]
    catalog = D.Catalog(
        packages=(D.SourcePackage(pkg, ("bg",)), D.SourcePackage(D.RESERVED_PACKAGES[1], ("bg",))),
        photos=(D.Photo(pkg, "bg/photo.jpg", D.Quality.CLEAN),),
    )
    out = tmp_path / "out"
    nothing = D.build_reserved(out, catalog, CONFIG, D.DirectoryResolver({}), progress=False)
    assert nothing is None and "nothing built" in capsys.readouterr().out
    manifest = D.build_reserved(out, catalog, CONFIG, D.DirectoryResolver({pkg: (root, "9")}), progress=False)
    assert "skipping" in capsys.readouterr().out  # the second reserved package is absent
    assert manifest["outputs"]["lomiri-wallpapers-16.04_photo.png"]["size"] == [48, 32]
    assert (out / "reserved" / D.NO_TRAIN_MARKER).is_file()
    assert not (out / "train").exists() and not (out / "val").exists()
    assert D.verify_dataset(out / "reserved") == []


def test_audit_reports_only_undecided_usable_images(fake_packages):
    catalog, resolver, roots = fake_packages
    assert D.audit_catalog(catalog, resolver, min_short_side=40) == []
    write(roots["a"], "photos/new_photo.png", synthetic_photo(90, 60, 11))
    write(roots["a"], "photos/icon.png", synthetic_photo(16, 16, 12))
    assert D.audit_catalog(catalog, resolver, min_short_side=40) == [f"{PKG_A}: photos/new_photo.png (90x60 RGB)"]


def test_a_source_floor_raises_the_downscale_factor():
    cfg = D.BuildConfig()
    assert D.training_scale((1024, 768), D.Quality.COMPRESSED, cfg) == pytest.approx(2.0)
    assert D.training_scale((900, 600), D.Quality.CLEAN, cfg, floor=2.0) == pytest.approx(2.0)
    assert D.training_scale((1024, 683), D.Quality.HEAVY, cfg, floor=2.0) == pytest.approx(683 / 256)
    with pytest.raises(D.SourceError):
        D.training_scale((1024, 451), D.Quality.COMPRESSED, cfg, floor=2.0)  # fits at 1.5x, not at the 2x floor


# ---------------------------------------------------------------------------------------------- embedded images


def jpeg_bytes(w: int, h: int, seed: int, quality: int = 90, **save_kw) -> bytes:
    buf = io.BytesIO()
    synthetic_photo(w, h, seed).save(buf, format="JPEG", quality=quality, **save_kw)
    return buf.getvalue()


def without_segment(jpeg: bytes, marker: int) -> bytes:
    """The JPEG with every segment of this marker (before the first scan) removed."""
    out, pos = bytearray(jpeg[:2]), 2
    while jpeg[pos + 1] != 0xDA:
        length = int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        if jpeg[pos + 1] != marker:
            out += jpeg[pos : pos + 2 + length]
        pos += 2 + length
    return bytes(out + jpeg[pos:])


def edj_like(*streams: bytes) -> bytes:
    """An Eet-like archive: a magic, then the streams between filler records, as Enlightenment stores them."""
    blob = bytearray(b"\x1e\xe7\x0f\x42" + bytes(12))
    for i, stream in enumerate(streams):
        blob += b"edje/images/%d\0" % i + bytes(range(7, 40)) + stream + b"\0\xff\xd8\x00pad"  # a stray SOI too
    return bytes(blob)


def rcc_bundle(files: Mapping[str, bytes], compressed: Iterable[str] = ()) -> bytes:
    """A Qt resource bundle (format version 3) holding ``files`` by path, written as Qt's rcc lays it out:
    header, payloads (32-bit size + bytes; zlib ones prefixed with their plain size), names (16-bit length,
    32-bit hash, UTF-16BE), then a breadth-first tree of 22-byte nodes whose directories index their children."""
    compressed = set(compressed)
    tree: Dict[str, object] = {}
    for path, payload in files.items():
        *dirs, leaf = path.split("/")
        node = tree
        for d in dirs:
            node = node.setdefault(d, {})  # type: ignore[assignment]
        node[leaf] = payload
    data, names, name_at = bytearray(), bytearray(), {}
    nodes: list = [None]
    queue = [(0, "", "", tree)]
    while queue:
        index, name, path, entry = queue.pop(0)
        if name and name not in name_at:
            name_at[name] = len(names)
            names += struct.pack(">HI", len(name), 0) + name.encode("utf-16-be")
        name_offset = name_at.get(name, 0)
        if isinstance(entry, dict):
            first = len(nodes)
            nodes.extend([None] * len(entry))
            nodes[index] = struct.pack(">IHII", name_offset, 0x02, len(entry), first) + bytes(8)
            for i, (child, sub) in enumerate(sorted(entry.items())):
                queue.append((first + i, child, f"{path}/{child}".lstrip("/"), sub))
        else:
            flags, payload = 0, entry
            if path in compressed:
                flags, payload = 0x01, struct.pack(">I", len(entry)) + zlib.compress(entry)
            nodes[index] = struct.pack(">IHHHI", name_offset, flags, 0, 0, len(data)) + bytes(8)
            data += struct.pack(">I", len(payload)) + payload
    data_offset = 24
    names_offset = data_offset + len(data)
    tree_offset = names_offset + len(names)
    header = b"qres" + struct.pack(">IIIII", 3, tree_offset, data_offset, names_offset, 0)
    return header + bytes(data) + bytes(names) + b"".join(nodes)


def webp_bytes(w: int, h: int, seed: int) -> bytes:
    buf = io.BytesIO()
    synthetic_photo(w, h, seed).save(buf, format="WEBP", quality=60)
    return buf.getvalue()


def test_largest_decodable_jpeg_is_cut_out_of_an_edj_like_blob():
    small, big = jpeg_bytes(40, 30, 1), jpeg_bytes(120, 80, 2)
    bigger_but_broken = without_segment(jpeg_bytes(160, 100, 3), 0xDB)  # no quantisation table: cannot decode
    blob = edj_like(small, big, bigger_but_broken)
    assert [blob[s:e] for s, e in E.jpeg_streams(blob)] == [small, big, bigger_but_broken]
    assert E.decodes_fully(big) and not E.decodes_fully(bigger_but_broken)
    assert E.largest_jpeg(blob) == big
    assert E.extract_member(blob, E.LARGEST_JPEG) == big
    assert E.largest_jpeg(edj_like(big, small)) == big  # file order does not matter
    with pytest.raises(E.EmbeddedImageError):
        E.largest_jpeg(edj_like(small[: len(small) // 2], bigger_but_broken))  # truncated + undecodable


def test_jpeg_end_is_found_past_an_embedded_thumbnail():
    """FF D9 inside an APP segment (an EXIF thumbnail) must not end the host stream."""
    main, thumb = jpeg_bytes(96, 64, 4), jpeg_bytes(16, 16, 5)
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(thumb)) + b"Exif\0\0" + thumb
    host = main[:2] + app1 + main[2:]
    blob = b"junk" + host + b"more junk \xff\xd9"
    assert E.jpeg_stream_end(blob, 4) == 4 + len(host)
    assert E.largest_jpeg(blob) == host
    with Image.open(io.BytesIO(E.largest_jpeg(blob))) as im:
        assert im.size == (96, 64)
    assert E.jpeg_stream_end(b"\xff\xd8\xff\xd9", 0) is None  # SOI + EOI in raw data: no scan, no image


def test_rcc_bundle_yields_its_webp_by_resource_path():
    photo, other = webp_bytes(96, 72, 6), webp_bytes(50, 40, 7)
    files = {
        "gcompris/src/activities/erase/resource/photo.webp": photo,
        "gcompris/src/activities/erase/resource/other.webp": other,
        "gcompris/src/activities/erase/Erase.qml": b"import QtQuick 2.12\n" * 20,
    }
    blob = rcc_bundle(files, compressed={"gcompris/src/activities/erase/Erase.qml"})
    assert sorted(E.rcc_files(blob)) == sorted(files)
    assert E.extract_member(blob, ":/gcompris/src/activities/erase/resource/photo.webp") == photo
    assert (
        E.rcc_file(blob, "gcompris/src/activities/erase/Erase.qml") == files["gcompris/src/activities/erase/Erase.qml"]
    )
    # the same bytes as the scan shared/DATA.md describes: RIFF<len32>WEBP, cut len + 8 bytes
    scanned = [
        blob[m.start() : m.start() + 8 + int.from_bytes(m.group(1), "little")]
        for m in re.finditer(rb"RIFF(....)WEBP", blob, re.S)
    ]
    assert sorted(scanned) == sorted([photo, other])
    assert E.embedded_image_members(".rcc", blob, D.IMAGE_SUFFIXES) == [
        ":/gcompris/src/activities/erase/resource/other.webp",
        ":/gcompris/src/activities/erase/resource/photo.webp",
    ]
    with pytest.raises(E.EmbeddedImageError, match="no file"):
        E.extract_member(blob, ":/gcompris/missing.webp")
    with pytest.raises(E.EmbeddedImageError, match="qres"):
        E.rcc_files(b"not a bundle at all")
    with pytest.raises(E.EmbeddedImageError, match="unknown member"):
        E.extract_member(blob, "photo.webp")


@pytest.fixture()
def container_packages(fake_packages):
    """The fake packages plus an .edj-like theme and a Qt bundle holding photos, with their catalog entries."""
    catalog, resolver, roots = fake_packages
    big = jpeg_bytes(120, 80, 2)
    (roots["a"] / "themes").mkdir()
    (roots["a"] / "themes/Scene.edj").write_bytes(edj_like(jpeg_bytes(40, 30, 1), big))
    resource = "gcompris/src/activities/zoo/resource/"
    bundle = {resource + "lion.webp": webp_bytes(96, 72, 8), resource + "cub.webp": webp_bytes(90, 60, 9)}
    (roots["a"] / "rcc").mkdir()
    (roots["a"] / "rcc/zoo.rcc").write_bytes(rcc_bundle(bundle))
    catalog = replace(
        catalog,
        packages=(D.SourcePackage(PKG_A, ("photos", "art", "themes", "rcc")),) + catalog.packages[1:],
        photos=catalog.photos
        + (
            D.Photo(PKG_A, "themes/Scene.edj", D.Quality.CLEAN, "theme photo", member=E.LARGEST_JPEG),
            D.Photo(
                PKG_A, "rcc/zoo.rcc", D.Quality.CLEAN, "lion", member=":/" + resource + "lion.webp", min_downscale=2.0
            ),
        ),
        excluded=catalog.excluded + (D.Excluded(PKG_A, "rcc/zoo.rcc:/*/cub.webp", "too small"),),
    )
    return catalog, resolver, roots, {"big": big, "lion": bundle[resource + "lion.webp"]}


def test_embedded_photos_are_built_with_container_and_stream_hashes(tmp_path, container_packages):
    catalog, resolver, roots, streams = container_packages
    manifest = D.build_dataset(tmp_path / "out", catalog, CONFIG, resolver, progress=False)
    edj = manifest["sources"]["fake-photos_scene"]
    assert edj["member"] == E.LARGEST_JPEG and edj["sha256"] == hashlib.sha256(streams["big"]).hexdigest()
    assert edj["container_sha256"] == D.sha256_file(roots["a"] / "themes/Scene.edj")
    lion = manifest["sources"]["fake-photos_zoo-lion"]  # key: bundle stem + resource stem
    assert lion["sha256"] == hashlib.sha256(streams["lion"]).hexdigest()
    assert lion["container_sha256"] == D.sha256_file(roots["a"] / "rcc/zoo.rcc")
    assert lion["min_downscale"] == 2.0
    assert "member" not in manifest["sources"]["fake-photos_train_clean"]  # plain files keep their record shape
    assert manifest["outputs"]["train/fake-photos_scene.png"]["size"] == [64, 43]  # the 120x80 stream, capped
    assert manifest["outputs"]["train/fake-photos_zoo-lion.png"]["size"] == [48, 36]  # 2x floor, not 1.5x
    assert manifest["totals"]["train"]["images"] == 7
    assert D.verify_dataset(tmp_path / "out") == []


def test_embedded_photos_build_deterministically(tmp_path, container_packages):
    catalog, resolver, _, _ = container_packages
    one = D.build_dataset(tmp_path / "one", catalog, CONFIG, resolver, progress=False)
    two = D.build_dataset(tmp_path / "two", catalog, CONFIG, resolver, progress=False)
    assert one == two
    assert (tmp_path / "one/train/fake-photos_zoo-lion.png").read_bytes() == (
        tmp_path / "two/train/fake-photos_zoo-lion.png"
    ).read_bytes()


def test_a_missing_member_names_the_photo(tmp_path, container_packages):
    catalog, resolver, _, _ = container_packages
    bad = replace(
        catalog, photos=catalog.photos + (D.Photo(PKG_A, "rcc/zoo.rcc", D.Quality.CLEAN, member=":/nope.webp"),)
    )
    with pytest.raises(D.SourceError, match="fake-photos_zoo-nope"):
        D.build_dataset(tmp_path / "out", bad, CONFIG, resolver, progress=False)


def test_audit_looks_inside_containers(container_packages):
    catalog, resolver, roots, _ = container_packages
    assert D.audit_catalog(catalog, resolver, min_short_side=40) == []
    undecided = replace(catalog, excluded=catalog.excluded[:-1])
    assert D.audit_catalog(undecided, resolver, min_short_side=40) == [
        f"{PKG_A}: rcc/zoo.rcc :/gcompris/src/activities/zoo/resource/cub.webp (90x60 RGB)"
    ]
    (roots["a"] / "themes/Other.edj").write_bytes(edj_like(jpeg_bytes(100, 70, 10)))
    assert D.audit_catalog(catalog, resolver, min_short_side=40) == [
        f"{PKG_A}: themes/Other.edj largest-jpeg (100x70 RGB)"
    ]


def test_system_resolver_reads_an_unpacked_deb(tmp_path, monkeypatch):
    pkg = "lic-test-unpacked-photos"
    root = tmp_path / pkg
    write(root, "usr/share/demo/a.png", synthetic_photo(40, 30, 1))
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text(f"Package: {pkg}\nVersion: 1:2.0-3\nDescription: demo\n more: text\n")
    resolver = D.SystemResolver(unpacked_root=tmp_path)
    assert resolver.version(f"deb:{pkg}") == "1:2.0-3"
    assert resolver.root(f"deb:{pkg}") == root
    assert resolver.files(f"deb:{pkg}") == ["usr/share/demo/a.png"]
    assert D.SystemResolver(unpacked_root=tmp_path / "elsewhere").version(f"deb:{pkg}") is None
    monkeypatch.setenv(D.UNPACKED_DEBS_ENV, str(tmp_path))
    assert D.SystemResolver().version(f"deb:{pkg}") == "1:2.0-3"


# ---------------------------------------------------------------------------------------------- datasets


@pytest.fixture()
def train_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "train"
    for i, (w, h) in enumerate([(96, 64), (64, 80), (128, 100)]):
        write(folder, f"img{i}.png", synthetic_photo(w, h, 20 + i))
    return folder


def test_random_crop_dataset_shapes_and_range(train_folder):
    ds = RandomCropDataset(train_folder, crop=32, scales=(1.0, 4.0), length=50, seed=3)
    assert len(ds) == 50
    for i in range(0, 50, 7):
        x = ds[i]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    with pytest.raises(IndexError):
        ds[50]


def test_random_crop_dataset_is_deterministic_per_seed_and_index(train_folder):
    a = RandomCropDataset(train_folder, crop=32, length=20, seed=7)
    b = RandomCropDataset(train_folder, crop=32, length=20, seed=7)
    c = RandomCropDataset(train_folder, crop=32, length=20, seed=8)
    assert all(torch.equal(a[i], b[i]) for i in (0, 5, 19))
    assert torch.equal(a[5], a[5])  # order of access does not matter
    assert not torch.equal(a[0], a[1])
    assert not all(torch.equal(a[i], c[i]) for i in range(5))


def test_random_crop_dataset_without_augmentation_is_an_exact_crop(tmp_path):
    img = synthetic_photo(40, 40, 30)
    write(tmp_path / "t", "only.png", img)
    ds = RandomCropDataset(
        tmp_path / "t", crop=40, scales=(1, 1), length=3, brightness=0, saturation=0, flips=False, rotations=False
    )
    expected = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    assert torch.allclose(ds[0], expected, atol=1e-6)


def test_random_crop_dataset_refuses_marked_and_too_small_folders(tmp_path, train_folder):
    (train_folder / D.NO_TRAIN_MARKER).write_text("no")
    with pytest.raises(ValueError, match="never be trained"):
        RandomCropDataset(train_folder, crop=32)
    (train_folder / D.NO_TRAIN_MARKER).unlink()
    with pytest.raises(ValueError, match="smaller than"):
        RandomCropDataset(train_folder, crop=70)
    with pytest.raises(FileNotFoundError):
        RandomCropDataset(tmp_path / "nowhere")


def test_image_folder_dataset(train_folder):
    ds = ImageFolderDataset(train_folder)
    assert ds.names == ["img0", "img1", "img2"]
    assert [tuple(ds[i].shape) for i in range(len(ds))] == [(3, 64, 96), (3, 80, 64), (3, 100, 128)]
    assert ds[0].dtype == torch.float32 and 0 <= float(ds[0].min()) <= float(ds[0].max()) <= 1


def test_datasets_are_reexported_from_data_module():
    assert D.RandomCropDataset is RandomCropDataset and D.ImageFolderDataset is ImageFolderDataset


# ---------------------------------------------------------------------------------------------- real packages


def _installed(catalog: D.Catalog) -> bool:
    resolver = D.SystemResolver()
    try:
        return all(resolver.version(p.name) is not None for p in catalog.packages)
    except Exception:
        return False


needs_packages = pytest.mark.skipif(not _installed(D.TRAINING_CATALOG), reason="photo packages not installed")


@pytest.mark.data
@needs_packages
def test_real_catalog_resolves_and_every_photo_fits():
    """Every reviewed photo exists, opens, and fits its role (header reads, plus cutting out embedded ones)."""
    resolver = D.SystemResolver()
    cfg = D.BuildConfig()
    val = set(D.TRAINING_CATALOG.validation_order)
    for photo in D.TRAINING_CATALOG.photos:
        path = resolver.root(photo.package) / photo.path
        source = io.BytesIO(E.extract_member(path.read_bytes(), photo.member)) if photo.member else path
        with Image.open(source) as im:
            size, mode = im.size, im.mode
        if photo.member:
            assert mode == "RGB", photo.key  # not an alpha-mask JPEG or a cut-out WebP
        if photo.key in val:
            target = D.validation_size(size, cfg)
            box = D.center_box(size, target)
            assert (box[2] - box[0]) / target[0] >= cfg.min_downscale, photo.key
        D.training_scale(size, photo.quality, cfg, photo.min_downscale)  # raises if too small


@pytest.mark.data
@needs_packages
def test_real_packages_have_no_unreviewed_images():
    assert D.audit_catalog(D.TRAINING_CATALOG) == []
