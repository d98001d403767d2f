"""The model zoo: well-known published models we can run, as data.

One row per file: the name users type (``--model RealESRGAN_x4plus``, ``img2img weights get NAME``),
the publisher's file name (kept as is in the cache, so its hash stays checkable), the
architecture it loads as, scale, licence, where it is downloaded from, and its SHA-256.

Hashes are the ones published by the model's publisher or by a model database that lists them
(OpenModelDB's ``data/models/*.json`` ``resources``: size and sha256 per file). Where nobody
publishes one, ``sha256`` is None, ``hash_source`` says so, and the hash of the first download is
recorded in the cache and required from then on (trust on first use; see
:mod:`img2img.checkpoints.download`). BasicSR names its files with the first 8 hex digits of
their SHA-256 (``...-ff704c30.pth``, its ``scripts/publish_models.py``): that prefix is checked.

Files that the publisher offers only behind a web page (Google Drive folders) have ``url`` None:
``img2img weights get NAME`` then says where to download it by hand and how to hand it over
(``--from FILE``), still verified.
"""

from __future__ import annotations

from dataclasses import dataclass

from img2img.checkpoints.errors import CheckpointError


@dataclass(frozen=True)
class ZooModel:
    """One published model file.

    name: what users type; unique, case-sensitive, no path separators.
    file: the publisher's file name (the name in the cache).
    arch: registry architecture it loads as (``rrdbnet``, ``srvgg_compact``, ``msrresnet``,
        ``resnet_9blocks``, ``unet_256``).
    scale: output side / input side (1 for pix2pix / CycleGAN generators).
    licence: SPDX id or the publisher's words.
    url: direct download, or None when only ``page`` offers it.
    page: where a person finds the file (release page, model zoo, repository).
    sha256: the published hash (64 hex digits), or None (recorded at first download).
    hash_source: who publishes ``sha256``, or why there is none.
    size: bytes, when published.
    sha256_prefix: leading hex digits the publisher put in the file name (BasicSR), checked when
        no full hash is published.
    companion: the model a denoise strength blends with (Real-ESRGAN's ``-dn``), if any.
    notes: one line for users.
    """

    name: str
    file: str
    arch: str
    scale: int
    licence: str
    url: str | None
    page: str
    sha256: str | None
    hash_source: str
    size: int | None = None
    sha256_prefix: str | None = None
    companion: str | None = None
    notes: str = ""


REAL_ESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download"
REAL_ESRGAN_PAGE = "https://github.com/xinntao/Real-ESRGAN/blob/master/docs/model_zoo.md"
OPENMODELDB = "OpenModelDB (open-model-database, data/models/{})"
BASICSR_ZOO = "https://github.com/XPixelGroup/BasicSR/blob/master/docs/ModelZoo.md"
BASICSR_REPRODUCED = "https://drive.google.com/drive/folders/1XN4WXKJ53KQ0Cu0Yv-uCt8DZWq6uufaP"
JUNYANZ = "http://efrosgans.eecs.berkeley.edu"
JUNYANZ_PAGE = "https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix (scripts/download_{}_model.sh)"
JUNYANZ_LICENCE = "BSD-2-Clause"
NO_HASH = "none published; recorded at first download"

# The pretrained generators junyanz/pytorch-CycleGAN-and-pix2pix's download scripts offer.
CYCLEGAN_NAMES = (
    "apple2orange", "orange2apple", "summer2winter_yosemite", "winter2summer_yosemite", "horse2zebra",
    "zebra2horse", "monet2photo", "style_monet", "style_cezanne", "style_ukiyoe", "style_vangogh",
    "sat2map", "map2sat", "cityscapes_photo2label", "cityscapes_label2photo", "facades_photo2label",
    "facades_label2photo", "iphone2dslr_flower",
)  # fmt: skip
PIX2PIX_NAMES = ("edges2shoes", "sat2map", "map2sat", "facades_label2photo", "day2night")


def _cyclegan(name: str) -> ZooModel:
    return ZooModel(
        f"cyclegan-{name}", f"{name}.pth", "resnet_9blocks", 1, JUNYANZ_LICENCE,
        f"{JUNYANZ}/cyclegan/pretrained_models/{name}.pth", JUNYANZ_PAGE.format("cyclegan"), None, NO_HASH,
        notes="CycleGAN generator, instance norm, [-1, 1]; use with translate",
    )  # fmt: skip


def _pix2pix(name: str) -> ZooModel:
    return ZooModel(
        f"pix2pix-{name}", f"{name}.pth", "unet_256", 1, JUNYANZ_LICENCE,
        f"{JUNYANZ}/pix2pix/models-pytorch/{name}.pth", JUNYANZ_PAGE.format("pix2pix"), None, NO_HASH,
        notes="pix2pix generator, batch norm, [-1, 1]; use with translate",
    )  # fmt: skip


ZOO: tuple[ZooModel, ...] = (
    # Real-ESRGAN (xinntao/Real-ESRGAN releases); sizes and hashes as OpenModelDB lists them.
    ZooModel(
        "RealESRGAN_x4plus", "RealESRGAN_x4plus.pth", "rrdbnet", 4, "BSD-3-Clause",
        f"{REAL_ESRGAN}/v0.1.0/RealESRGAN_x4plus.pth", REAL_ESRGAN_PAGE,
        "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
        OPENMODELDB.format("4x-realesrgan-x4plus.json"), 67_040_989,
        notes="general photos, real-world degradations",
    ),
    ZooModel(
        "RealESRGAN_x2plus", "RealESRGAN_x2plus.pth", "rrdbnet", 2, "BSD-3-Clause",
        f"{REAL_ESRGAN}/v0.2.1/RealESRGAN_x2plus.pth", REAL_ESRGAN_PAGE,
        "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
        OPENMODELDB.format("2x-realesrgan-x2plus.json"), 67_061_725,
        notes="x2 via pixel-unshuffle",
    ),
    ZooModel(
        "RealESRNet_x4plus", "RealESRNet_x4plus.pth", "rrdbnet", 4, "BSD-3-Clause",
        f"{REAL_ESRGAN}/v0.1.1/RealESRNet_x4plus.pth", REAL_ESRGAN_PAGE, None,
        "none published (not in OpenModelDB); recorded at first download",
        notes="the PSNR-oriented stage of RealESRGAN_x4plus: smoother, fewer artefacts",
    ),
    ZooModel(
        "RealESRGAN_x4plus_anime_6B", "RealESRGAN_x4plus_anime_6B.pth", "rrdbnet", 4, "BSD-3-Clause",
        f"{REAL_ESRGAN}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth", REAL_ESRGAN_PAGE,
        "f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da",
        OPENMODELDB.format("4x-realesrgan-x4plus-anime-6b.json"), 17_938_799,
        notes="anime illustrations, 6 RRDB blocks",
    ),
    ZooModel(
        "realesr-general-x4v3", "realesr-general-x4v3.pth", "srvgg_compact", 4, "BSD-3-Clause",
        f"{REAL_ESRGAN}/v0.2.5.0/realesr-general-x4v3.pth", REAL_ESRGAN_PAGE,
        "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
        OPENMODELDB.format("4x-realesr-general-x4v3.json"), 4_885_111,
        companion="realesr-general-wdn-x4v3",
        notes="small general model (SRVGGNetCompact, 32 convs); denoise strength blends with its wdn companion",
    ),
    ZooModel(
        "realesr-general-wdn-x4v3", "realesr-general-wdn-x4v3.pth", "srvgg_compact", 4, "BSD-3-Clause",
        f"{REAL_ESRGAN}/v0.2.5.0/realesr-general-wdn-x4v3.pth", REAL_ESRGAN_PAGE,
        "1641f8c4464b9f097c9fdda5589273713f67cf59f3d909e0bd688f0cee269dca",
        OPENMODELDB.format("4x-realesr-general-wdn-x4v3.json"), 4_885_111,
        notes="denoising companion of realesr-general-x4v3 (Real-ESRGAN's -dn blends the two)",
    ),
    ZooModel(
        "realesr-animevideov3", "realesr-animevideov3.pth", "srvgg_compact", 4, "BSD-3-Clause",
        f"{REAL_ESRGAN}/v0.2.5.0/realesr-animevideov3.pth", REAL_ESRGAN_PAGE,
        "b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d",
        OPENMODELDB.format("4x-realesr-animevideo-v3.json"), 2_504_012,
        notes="anime video frames (SRVGGNetCompact, 16 convs)",
    ),
    # Original ESRGAN (xinntao/ESRGAN): the authors publish it on Google Drive only; OpenModelDB
    # hosts a copy and lists its hash.
    ZooModel(
        "ESRGAN_x4", "RRDB_ESRGAN_x4.pth", "rrdbnet", 4, "Apache-2.0",
        "https://objectstorage.us-phoenix-1.oraclecloud.com/n/ax6ygfvpvzka/b/open-modeldb-files/o/4x-ESRGAN.pth",
        "https://github.com/xinntao/ESRGAN",
        "545805ce2d861ee90972b5fa50b851f19ee4bb35dedd2eb090be1f7c935b6b00",
        OPENMODELDB.format("4x-ESRGAN.json"), 66_952_991,
        notes="the 2018 ESRGAN (old model.N key layout); downloaded from OpenModelDB's copy",
    ),
    # BasicSR's conversions and reproductions (XPixelGroup/BasicSR model zoo).
    ZooModel(
        "ESRGAN_SRx4_DF2KOST", "ESRGAN_SRx4_DF2KOST_official-ff704c30.pth", "rrdbnet", 4, "Apache-2.0",
        f"{REAL_ESRGAN}/v0.1.1/ESRGAN_SRx4_DF2KOST_official-ff704c30.pth", BASICSR_ZOO, None,
        "only the first 8 hex digits, in the file name (BasicSR convention); full hash recorded at first download",
        sha256_prefix="ff704c30",
        notes="ESRGAN in BasicSR's key layout (params_ema); attached to Real-ESRGAN's v0.1.1 release",
    ),
    ZooModel(
        "MSRResNet_x4", "001_MSRResNet_x4_f64b16_DIV2K_1000k_B16G1_wandb.pth", "msrresnet", 4, "Apache-2.0",
        None, f"{BASICSR_REPRODUCED} (BasicSR 'reproduced models': models/net_g_1000000.pth)", None, NO_HASH,
        notes="BasicSR MSRResNet (SRResNet without BN) 64/16; Google Drive only: download by hand, then --from",
    ),
    ZooModel(
        "MSRResNet_x2", "002_MSRResNet_x2_f64b16_DIV2K_1000k_B16G1_001pretrain_wandb.pth", "msrresnet", 2,
        "Apache-2.0", None, f"{BASICSR_REPRODUCED} (BasicSR 'reproduced models': models/net_g_1000000.pth)",
        None, NO_HASH, notes="BasicSR MSRResNet x2; Google Drive only: download by hand, then --from",
    ),
    ZooModel(
        "MSRResNet_x3", "003_MSRResNet_x3_f64b16_DIV2K_1000k_B16G1_001pretrain_wandb.pth", "msrresnet", 3,
        "Apache-2.0", None, f"{BASICSR_REPRODUCED} (BasicSR 'reproduced models': models/net_g_1000000.pth)",
        None, NO_HASH, notes="BasicSR MSRResNet x3; Google Drive only: download by hand, then --from",
    ),
    # junyanz/pytorch-CycleGAN-and-pix2pix pretrained generators.
    *(_cyclegan(n) for n in CYCLEGAN_NAMES),
    *(_pix2pix(n) for n in PIX2PIX_NAMES),
)


def zoo_names() -> list[str]:
    return [m.name for m in ZOO]


def find_zoo(name: str) -> ZooModel | None:
    """The zoo entry called ``name`` (``.pth`` suffix allowed), or None."""
    stem = name[:-4] if name.endswith(".pth") else name
    return next((m for m in ZOO if m.name == stem), None)


def find_zoo_by_file(file_name: str) -> ZooModel | None:
    """The zoo entry whose publisher file is ``file_name`` (``RealESRGAN_x2plus.pth``), or None.

    CycleGAN and pix2pix publish some files under the same name (``sat2map.pth``); those are
    ambiguous and give None.
    """
    found = [m for m in ZOO if m.file == file_name]
    return found[0] if len(found) == 1 else None


def get_zoo(name: str) -> ZooModel:
    """The zoo entry ``name``; CheckpointError listing a few close names when there is none."""
    model = find_zoo(name)
    if model is None:
        close = [n for n in zoo_names() if name.lower() in n.lower() or n.lower() in name.lower()]
        hint = f"; did you mean {', '.join(close[:4])}?" if close else ""
        raise CheckpointError(
            f"{name}: not a model in the zoo (img2img weights list --available shows them){hint}"
        )
    return model
