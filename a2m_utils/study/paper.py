"""The paper's reported numbers (Tables 1-6 of Yoshihashi et al.), for the tables placed beside ours."""

VOC_CLASSES = ("bg", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "table",
               "dog", "horse", "motorbike", "person", "plant", "sheep", "sofa", "train", "tv")
TABLE1 = {  # PASCAL VOC 2012 val, per-class IoU and mean
    "real-supervised": (93.6, 88.0, 40.0, 84.5, 66.2, 63.2, 89.3, 84.5, 87.6, 32.4, 74.3, 37.6,
                        83.0, 73.8, 78.1, 86.1, 56.5, 76.4, 45.0, 82.8, 71.5, 71.2),
    "attn2mask": (83.0, 79.5, 33.2, 55.7, 56.6, 56.5, 76.3, 58.3, 70.1, 22.2, 57.0, 34.6,
                  64.7, 64.2, 55.3, 9.0, 17.2, 57.7, 18.7, 63.2, 38.9, 51.1),
    "attn2mask+BECO": (86.6, 77.2, 29.0, 79.0, 72.0, 56.2, 84.8, 68.0, 80.9, 24.9, 76.3, 46.0,
                       73.6, 71.3, 65.9, 19.8, 22.5, 67.8, 7.4, 68.7, 46.1, 58.3),
}
TABLE2 = {  # synthetic images -> VOC val mIoU
    "attn2mask": {2000: 41.2, 10000: 46.5, 50000: 49.7, 168679: 51.1},
    "attn2mask+BECO": {10000: 51.7, 168679: 58.3},
}
TABLE3 = {  # ImageNet-S FG/BG mIoU at 10k and 100k images
    "real-supervised": {10000: 82.1},
    "BigDatasetGAN": {10000: 74.1, 100000: 74.4},
    "attn2mask": {10000: 63.7, 100000: 66.0},
}
TABLE4 = {"attn2mask": {"acc": 63.7, "miou": 13.2}, "attn2mask-LoRA": {"acc": 69.7, "miou": 17.1}}  # Cityscapes
TABLE5 = {"threshold 64": 43.5, "threshold 128": 44.6, "otsu": 41.2, "dcrf beta 0": 44.3, "dcrf beta 0.2": 46.5}
TABLE6 = {"attn2mask": 51.1, "NTI on the train set and retraining": 50.6, "NTI on the val set": 47.3}
