"""The published anchor our evaluation is read against, and how our numbers differ from it."""

from __future__ import annotations

# Text2Earth (Liu et al., IEEE GRSM 2025, arXiv 2501.00895), Table on RSICD, under the
# protocol of Txt2Img-MHN (Xu et al., 2023).
RSICD_ANCHOR = {"fid": 24.49, "zero_shot_oa_percent": 90.26, "clip_score": 25.62}
RSICD_OTHERS = {
    "CRS-Diff": {"fid": 50.72, "zero_shot_oa_percent": 69.31, "clip_score": 20.33},
    "RSDiff": {"fid": 66.49},
    "Txt2Img-MHN (VQGAN)": {"fid": 102.44, "zero_shot_oa_percent": 65.72, "clip_score": 20.27},
}
PROTOCOL = ("Txt2Img-MHN's: images at 256 px; FID with an Inception-v3 fine-tuned on RSICD's 30 "
            "scene classes; zero-shot OA = a ResNet-18 trained only on generated images and "
            "tested on the real RSICD test set; CLIP score with an RSICD-tuned CLIP")
DIFFERENCES = [
    "FID/KID here use the standard ImageNet Inception-v3 (pt_inception-2015-12-05), not one "
    "fine-tuned on RSICD: the feature space differs, so our FID is not on the paper's scale "
    "(it is the scale every other FID uses, and it can be reproduced without their network)",
    "CLIP score here uses Git-RSCLIP (trained on Git-10M, Text2Earth's own training captions: "
    "expect it to favour Text2Earth) and a general CLIP, not the paper's RSICD-tuned CLIP; the "
    "definition (100 * max(cos, 0)) is the same, the embedding spaces are not",
    "zero-shot OA (train a ResNet-18 on generated images, test on real RSICD) is not computed: "
    "it is a training run, not a metric; the generated folder this command writes is its input",
    "generation settings (steps, guidance, sampler, seeds, the level given to RSICD captions, "
    "which of RSICD's five captions per image) are not all published; ours are in the report",
]


def published_anchor() -> dict:
    return {"dataset": "RSICD", "text2earth": RSICD_ANCHOR, "others": RSICD_OTHERS,
            "protocol": PROTOCOL, "comparable": False, "differences": DIFFERENCES}
