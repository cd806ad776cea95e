"""Data side: dataset layouts, the manifest table, images, cropping, splits, augmentation."""
