"""Constants of the study shared by data, models and evaluations (PROTOCOL.md sections 1 and 5)."""

# Input normalisation of every task (the paper used ImageNet's for every encoder, BEiT included).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Segmentation labels: 255 is "ignore"; mmseg's reduce_zero_label maps background 0 to it.
IGNORE_INDEX = 255
